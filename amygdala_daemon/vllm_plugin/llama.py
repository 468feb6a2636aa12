"""The Llama model class the plugin registers: stock vLLM Llama plus a readout recorder.

The hooks go on in `__init__`, before vLLM compiles the model: hooks added after the first
compile never run. The class is built on first attribute access (PEP 562), so this module
imports without vLLM, and vLLM imports it only inside the processes that build the model.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch

from amygdala_daemon.vllm_plugin.recorder import WORKER_METHOD, Recorder, fetch_readout

ARCHITECTURE = "LlamaForCausalLM"
CLASS_NAME = "ReadoutLlamaForCausalLM"


@functools.cache
def _model_class() -> type[Any]:
    llama: Any = importlib.import_module("vllm.model_executor.models.llama")
    parallel: Any = importlib.import_module("vllm.distributed.parallel_state")

    class ReadoutLlamaForCausalLM(llama.LlamaForCausalLM):  # type: ignore[misc]
        def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            install_runner_patch()
            text = vllm_config.model_config.hf_config
            self.readout_recorder = Recorder.from_env(
                self.model.layers,
                hidden_size=int(text.hidden_size),
                max_tokens=int(vllm_config.scheduler_config.max_num_batched_tokens),
                device=torch.device(vllm_config.device_config.device),
                rank=int(parallel.get_tensor_model_parallel_rank()),
            )

    ReadoutLlamaForCausalLM.__qualname__ = CLASS_NAME
    ReadoutLlamaForCausalLM.__module__ = __name__
    return ReadoutLlamaForCausalLM


@functools.cache
def install_runner_patch() -> None:
    """Wrap the model runner's forward call with the recorder's steps; add the fetch method.

    `_model_forward` is the runner's documented override point around `model(...)`; the
    CPU runner inherits it from the GPU runner.
    """
    runner_module: Any = importlib.import_module("vllm.v1.worker.gpu_model_runner")
    runner_class = runner_module.GPUModelRunner
    original = runner_class._model_forward

    def _model_forward(self: Any, input_ids: Any = None, positions: Any = None, **kw: Any) -> Any:
        recorder = getattr(self.get_model(), "readout_recorder", None)
        if recorder is None:
            return original(self, input_ids=input_ids, positions=positions, **kw)
        recorder.before_forward(0 if positions is None else int(positions.shape[-1]))
        output = original(self, input_ids=input_ids, positions=positions, **kw)
        recorder.after_forward(self, input_ids, positions)
        return output

    runner_class._model_forward = _model_forward
    # `collective_rpc(WORKER_METHOD, ...)` reaches this on every worker; a method name, not a
    # pickled function, because vLLM refuses to pickle functions unless told it may.
    worker_module: Any = importlib.import_module("vllm.v1.worker.worker_base")
    setattr(worker_module.WorkerBase, WORKER_METHOD, fetch_readout)


def __getattr__(name: str) -> Any:
    if name == CLASS_NAME:
        return _model_class()
    raise AttributeError(name)
