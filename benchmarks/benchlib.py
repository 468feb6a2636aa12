"""Shared helpers for the benchmark scripts: machine facts, timing, results, the daemon process.

The scripts run by hand (`.venv/bin/python benchmarks/NAME.py`), never in the test suite.
Each one prints its figures and writes `benchmarks/results/NAME.json` (git-ignored).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/amygdala-bench")
# Other processes' load when the script started: the machine is shared.
_LOAD_AT_START = os.getloadavg()


# -- machine and threads ------------------------------------------------------------------


def set_threads(threads: int) -> int:
    """Pin torch, numpy's BLAS and child processes to `threads` CPU threads.

    Call it before numpy is first imported: OpenBLAS reads its thread count once, at load.
    Returns the count torch reports.
    """
    if "numpy" in sys.modules:
        print("warning: numpy was imported before set_threads; its BLAS may use more threads")
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the figures came from."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": _lscpu_model(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": _LOAD_AT_START,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(name: str, payload: dict[str, Any], device: str = "cpu") -> Path:
    """Write `benchmarks/results/NAME.json` with the machine facts beside the figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"benchmark": name, "command": " ".join(sys.argv), **payload}
    body["machine"] = {**machine_info(device), "load_average_at_end": os.getloadavg()}
    path.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


# -- timing -------------------------------------------------------------------------------


@dataclass
class Stopwatch:
    """Wall and process CPU time of a block.

    CPU time is the contention check: on a shared machine, wall time well above CPU time
    (one thread) means another process held the core.
    """

    wall: float = 0.0
    cpu: float = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[Stopwatch]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield self
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def cuda_sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- the model ----------------------------------------------------------------------------


def smollm2_cache(work: Path) -> Path:
    """Convert the bundled GGUF once into `work/models/smollm2-135m` (untimed)."""
    from amygdala_daemon.model.loading import SMOLLM2_ALIAS, convert_smollm2

    return convert_smollm2(work / "models" / SMOLLM2_ALIAS)


def link_model_cache(state_dir: Path, cache: Path) -> None:
    """Let a fresh state directory reuse the converted model instead of converting again."""
    from amygdala_daemon.model.loading import SMOLLM2_ALIAS

    models = state_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / SMOLLM2_ALIAS
    if not link.exists():
        link.symlink_to(cache)


def daemon_workspace(work: Path, name: str) -> tuple[Path, Path, Path]:
    """A fresh `work/name` with a state directory that reuses the converted model, and a
    copy of the bundled graph: returns (directory, state dir, graph path)."""
    cache = smollm2_cache(work)
    directory = work / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    state = directory / "state"
    link_model_cache(state, cache)
    graph = directory / "graph.jsonl"
    graph.write_text("".join(json.dumps(node) + "\n" for node in bundled_nodes()))
    return directory, state, graph


def bundled_nodes() -> list[dict[str, Any]]:
    from amygdala_daemon.sources import bundled_sample_path

    lines = bundled_sample_path().read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def eligible_contents() -> list[str]:
    """The content (tag lines removed) of every eligible node of the bundled graph, in order."""
    from amygdala_daemon.core.config import LabelsConfig
    from amygdala_daemon.core.labels import is_eligible
    from amygdala_daemon.core.tags import parse_text

    contents = []
    for node in bundled_nodes():
        text = node.get("text")
        if not isinstance(text, str):
            continue
        parsed = parse_text(text)
        if is_eligible(parsed.tags, parsed.content, LabelsConfig()):
            contents.append(parsed.content)
    return contents


# -- config files and the daemon process --------------------------------------------------


def toml_text(table: dict[str, Any]) -> str:
    """A small nested dict as TOML: top-level scalars, then one level of tables."""
    top = [
        f"{key} = {json.dumps(value)}"
        for key, value in table.items()
        if not isinstance(value, dict)
    ]
    tables = []
    for key, value in table.items():
        if isinstance(value, dict):
            body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            tables.append(f"[{key}]\n{body}\n")
    return "\n".join(top) + "\n\n" + "\n".join(tables)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "amygdala_daemon", "--config", str(config), *args]


def read_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a live process, in KiB; empty once it is gone."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return found


@dataclass
class MemoryWatch:
    """Polls a process's VmRSS and VmHWM on a thread until stopped or the process exits."""

    pid: int
    interval: float = 0.05
    peak_hwm_kib: int = 0
    peak_rss_kib: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemoryWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            status = read_status_kib(self.pid)
            if not status:
                return
            self.peak_hwm_kib = max(self.peak_hwm_kib, status.get("VmHWM", 0))
            self.peak_rss_kib = max(self.peak_rss_kib, status.get("VmRSS", 0))
            self.samples.append((time.monotonic() - start, status.get("VmRSS", 0)))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def children_max_rss_kib() -> int:
    """Largest peak RSS among the children waited for so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


class Daemon:
    """`amygdala-daemon run` as a subprocess, with its config, graph and websocket address."""

    def __init__(self, work: Path, table: dict[str, Any], threads: int) -> None:
        self.work = work
        self.port = free_port()
        table = {**table, "server": {"port": self.port}}
        self.config = work / "config.toml"
        self.config.write_text(toml_text(table))
        self.state = Path(table["state_dir"])
        self.log = work / "daemon.log"
        self.threads = threads
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Daemon:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                cli(self.config, "run"),
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
            )
        return self

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def wait_connectable(self, timeout: float = 600.0) -> None:
        """Until the websocket accepts: the model is loaded and recovery is done."""
        from websockets.sync.client import connect

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text()[-2000:]}")
            try:
                with connect(self.url(), open_timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
            except Exception:  # an InvalidStatus or handshake race: try again
                time.sleep(0.2)
        raise TimeoutError("the daemon's websocket never came up")

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def receive_until(
    client: Any, accept: Callable[[dict[str, Any]], bool], timeout: float
) -> tuple[dict[str, Any], float]:
    """The first websocket message `accept` takes, and the monotonic time it arrived."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching websocket message in time")
        message = json.loads(client.recv(timeout=remaining))
        if accept(message):
            return message, time.monotonic()


def request(client: Any, payload: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send a request and skip events until its reply."""
    client.send(json.dumps(payload))
    reply, _ = receive_until(client, lambda m: "event" not in m, timeout)
    return reply
