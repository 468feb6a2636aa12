"""vLLM plugin: per-token projections of the residual stream onto the published readout vectors.

Install with the `vllm` extra. With `VLLM_READOUT_VECTORS` pointing at a published vectors file
(the `current` generation's, or the flat copy), every vLLM process loads the plugin through the
`vllm.general_plugins` entry point, and the Llama model vLLM builds records, for every token it
runs, the projection at each published layer onto each concept's unit vector.

Offline:

    llm = LLM(model=..., enforce_eager=True)
    out = llm.generate(prompts, params)
    readout = readouts(llm, out[0].request_id)   # same JSON as GET /v1/readouts/{id}

On the server, `VLLM_PLUGINS=amygdala_readout` also turns on the HTTP route (vLLM loads
endpoint plugins only when they are named there).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from amygdala_daemon.vllm_plugin.recorder import VECTORS_ENV, WORKER_METHOD

log = logging.getLogger(__name__)

__all__ = ["readouts", "register"]


def register() -> None:
    """The `vllm.general_plugins` entry point: runs in every vLLM process, maybe more than once."""
    if not os.environ.get(VECTORS_ENV):
        return
    from vllm import ModelRegistry  # type: ignore[import-not-found, unused-ignore]

    from amygdala_daemon.vllm_plugin.llama import ARCHITECTURE, CLASS_NAME

    ModelRegistry.register_model(ARCHITECTURE, f"amygdala_daemon.vllm_plugin.llama:{CLASS_NAME}")


def readouts(llm: Any, request_id: str) -> dict[str, Any] | None:
    """The readout of one finished request of an offline `vllm.LLM` (its `request_id`)."""
    from amygdala_daemon.vllm_plugin.endpoint import first_readout

    return first_readout(llm.collective_rpc(WORKER_METHOD, args=(request_id,)))
