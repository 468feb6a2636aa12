"""A pool of Ray actors that extract chunks for a rebuild, with retries for workers that die.

Each actor loads the model once (`worker.ExtractWorker`). Chunks go to whichever worker has
room, two in flight each so none waits on the driver. A chunk whose worker dies goes back to
the queue and a replacement worker is started: a chunk is handed back to the writer only from
a result, and only once, so no node is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.core.scale_config import DistributedConfig
from amygdala_daemon.distributed.worker import ExtractWorker
from amygdala_daemon.model.extractor import Extraction

log = logging.getLogger(__name__)

# Chunks in flight per worker: one computing, one queued behind it.
IN_FLIGHT = 2
# Actor names start with this, in the pool's namespace: `ray.get_actor` finds them.
WORKER_NAME = "amygdala-extract"
NAMESPACE = "amygdala-daemon"


@dataclass
class WorkerStats:
    nodes: int = 0
    seconds: float = 0.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            "distributed.engine = 'ray' needs Ray: pip install 'amygdala-daemon[ray]'"
        ) from None
    return ray


def portable(config: Config) -> Config:
    """The config with local paths made absolute: a worker's directory is not the driver's."""
    model = config.model
    name = model.name
    if Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())
    state_dir = str(config.state_path.resolve())
    return replace(config, state_dir=state_dir, model=replace(model, name=name))


def worker_count(settings: DistributedConfig, resources: dict[str, float]) -> tuple[int, float]:
    """How many workers, and the GPUs each reserves, on a cluster with `resources`."""
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_worker = settings.gpus_per_worker if gpus else 0.0
    wanted = settings.workers
    if not wanted:
        wanted = int(gpus // per_worker) if per_worker else int(cpus)
    wanted = max(wanted, 1)
    if wanted > cpus or wanted * per_worker > gpus:
        raise InputError(
            f"distributed.workers: {wanted} workers need {wanted} CPUs and "
            f"{wanted * per_worker:g} GPUs; the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
        )
    return wanted, per_worker


class RayRunner:
    """`ChunkRunner` on Ray actors; `close` stops them (and a Ray it started itself)."""

    def __init__(self, config: Config, settings: DistributedConfig) -> None:
        self.ray = _import_ray()
        self.chunk_nodes = settings.chunk_nodes
        self._started_ray = False
        if not self.ray.is_initialized():
            self._init_ray(settings.address)
        try:
            resources = self.ray.cluster_resources()
            count, gpus = worker_count(settings, resources)
            self._actor_class = self.ray.remote(num_cpus=1, num_gpus=gpus)(ExtractWorker)
            self._config = portable(config)
            self._spawned = 0
            self._restarts_left = count
            # The first worker loads alone: it may convert the bundled model into the cache
            # the others then read.
            self.actors: list[Any] = [self._spawn()]
            self.model_info = self._model_info(self.actors[0])
            self.actors += [self._spawn() for _ in range(count - 1)]
            for actor in self.actors[1:]:
                self._check_same_model(actor)
            log.info("rebuild on %d Ray workers (%g GPUs each)", count, gpus)
        except BaseException:
            self.close()
            raise
        self.stats = [WorkerStats() for _ in self.actors]

    def _init_ray(self, address: str) -> None:
        # A local cluster of our own: no dashboard, and workers keep this environment.
        options: dict[str, Any] = {"address": address or "local", "logging_level": logging.WARNING}
        if not address:
            options["include_dashboard"] = False
            options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": "1"}}
        try:
            self.ray.init(namespace=NAMESPACE, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"distributed.address: cannot join {address!r}: {first}") from None
        self._started_ray = True

    def _spawn(self) -> Any:
        name = f"{WORKER_NAME}-{os.getpid()}-{self._spawned}"
        self._spawned += 1
        return self._actor_class.options(name=name, namespace=NAMESPACE).remote(self._config)

    def _model_info(self, actor: Any) -> ModelInfo:
        try:
            info: ModelInfo = self.ray.get(actor.model_info.remote())
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AmygdalaError):
                raise exc.cause from None
            raise
        except self.ray.exceptions.RayActorError as exc:
            raise AmygdalaError(f"a Ray worker died loading the model: {_first(exc)}") from None
        return info

    def _check_same_model(self, actor: Any) -> None:
        info = self._model_info(actor)
        if info != self.model_info:
            raise AmygdalaError(
                f"Ray workers load different models: {info.model_id} layers {info.layers} "
                f"and {self.model_info.model_id} layers {self.model_info.layers}; give "
                "model.name as a path that holds the same model on every node"
            )

    def run(
        self, chunks: Sequence[list[str]], progress: Callable[[int], Any] | None
    ) -> Iterator[tuple[int, list[Extraction]]]:
        pending = deque(range(len(chunks)))
        in_flight: dict[Any, tuple[int, Any, int]] = {}
        done: set[int] = set()
        try:
            while pending or in_flight:
                self._submit(chunks, pending, in_flight)
                (ref,), _ = self.ray.wait(list(in_flight), num_returns=1)
                slot, actor, index = in_flight.pop(ref)
                try:
                    _, results, seconds = self.ray.get(ref)
                except self.ray.exceptions.RayActorError as exc:
                    pending.appendleft(index)
                    self._replace(slot, actor, exc)
                    continue
                if index in done:
                    continue
                done.add(index)
                self.stats[slot].nodes += len(results)
                self.stats[slot].seconds += seconds
                if progress is not None:
                    progress(len(results))
                yield index, results
        finally:
            for ref in in_flight:
                self.ray.cancel(ref, force=False)
            self._log_throughput()

    def _submit(
        self,
        chunks: Sequence[list[str]],
        pending: deque[int],
        in_flight: dict[Any, tuple[int, Any, int]],
    ) -> None:
        """Top every live worker up to `IN_FLIGHT` chunks."""
        load = [0] * len(self.actors)
        for slot, _, _ in in_flight.values():
            load[slot] += 1
        for slot, actor in enumerate(self.actors):
            while actor is not None and pending and load[slot] < IN_FLIGHT:
                index = pending.popleft()
                in_flight[actor.extract.remote(index, chunks[index])] = (slot, actor, index)
                load[slot] += 1
        if not in_flight:
            raise AmygdalaError("every Ray worker died and no replacement could start")

    def _replace(self, slot: int, actor: Any, exc: Exception) -> None:
        """A worker died: start another in its slot (once per death), while restarts last."""
        if self.actors[slot] is not actor:
            return  # another of its chunks already reported the death
        log.warning("Ray worker %d died (%s); its chunks go to the others", slot, _first(exc))
        if self._restarts_left > 0:
            self._restarts_left -= 1
            self.actors[slot] = self._spawn()
        else:
            self.actors[slot] = None

    def _log_throughput(self) -> None:
        for slot, stats in enumerate(self.stats):
            rate = stats.nodes / stats.seconds if stats.seconds else 0.0
            log.info(
                "Ray worker %d: %d nodes in %.1f s of model time (%.1f nodes/s)",
                slot,
                stats.nodes,
                stats.seconds,
                rate,
            )

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            if actor is not None:
                self.ray.kill(actor)
        self.actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
