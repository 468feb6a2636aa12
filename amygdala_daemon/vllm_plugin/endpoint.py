"""`GET /v1/readouts/{id}` on vLLM's OpenAI-compatible server (a `vllm.endpoint_plugins` entry).

The projections live in the worker processes; the route asks them through the engine's
`collective_rpc` (the worker method the model class adds), and answers rank 0's record.
"""

from __future__ import annotations

import importlib
from argparse import Namespace
from typing import Any

from amygdala_daemon.vllm_plugin.recorder import WORKER_METHOD

NAME = "amygdala_readout"
ROUTE = "/v1/readouts/{response_id}"


def first_readout(results: list[Any]) -> dict[str, Any] | None:
    """The one worker answer that holds a record (the recording rank's)."""
    return next((result for result in results if result is not None), None)


class ReadoutEndpoint:
    """The endpoint plugin object vLLM's server builds and wires in."""

    name = NAME
    required_tasks: tuple[str, ...] | None = ("generate",)

    def attach_router(self, app: Any) -> None:
        fastapi: Any = importlib.import_module("fastapi")
        router = fastapi.APIRouter()

        async def readout(response_id: str, request: Any) -> Any:
            engine = request.app.state.readout_engine
            if engine is None:
                return fastapi.responses.JSONResponse({"error": "no engine"}, status_code=503)
            found = first_readout(await engine.collective_rpc(WORKER_METHOD, args=(response_id,)))
            if found is None:
                return fastapi.responses.JSONResponse(
                    {"error": f"no readout for {response_id!r} (unknown, or expired)"},
                    status_code=404,
                )
            return found

        # Real types for FastAPI's signature reading (string annotations would be looked up
        # in this module's globals, where fastapi is not imported).
        readout.__annotations__ = {"response_id": str, "request": fastapi.Request}
        router.add_api_route(ROUTE, readout, methods=["GET"])
        app.include_router(router)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        state.readout_engine = engine_client
