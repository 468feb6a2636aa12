"""Bad input is one line on the real CLI, found before the slow parts start.

A config mistake is reported before torch loads; a mistyped model name never reaches the
hub; a layer past the model's depth is a bad value, not advice to rebuild; a missing source
is one line; `report --plots` without matplotlib prints nothing else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import one_error_line
from tests.helpers.graphs import config_toml

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )


def write_config(path: Path, table: dict[str, object]) -> Path:
    path.write_text(config_toml(table))
    return path


class Listener:
    """A real TCP port that counts who connects: a hub endpoint nothing should reach."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.socket.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment where the hub is reachable in principle (not forced offline)."""
    listener = Listener()
    env = {
        "HF_ENDPOINT": listener.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
    yield env
    listener.close()
    assert listener.connections == 0, "the hub endpoint was contacted"


def hub_cli(hub: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing inherited may force the hub offline: the fast path must not rely on it.
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *args],
        capture_output=True,
        text=True,
        env={**environment, "OMP_NUM_THREADS": "1", **hub},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", [["run", "--once"], ["rebuild"], ["publish"]])
def test_a_mistyped_alias_is_refused_with_the_known_aliases(
    tmp_path: Path, graph_path: Path, hub: dict[str, str], command: list[str]
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {
            "state_dir": str(tmp_path / "state"),
            "source": {"kind": "jsonl", "path": str(graph_path)},
            "model": {"name": "smollm3-135m"},
        },
    )
    result = hub_cli(hub, "--config", str(config), *command)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "model.name" in line and "'smollm3-135m'" in line
    assert "did you mean 'smollm2-135m'" in line and "known: 'smollm2-135m'" in line
    assert not (tmp_path / "state" / "ledger.sqlite").exists(), "nothing was opened"


def test_a_hub_id_not_in_the_local_cache_is_one_line_without_the_network(
    tmp_path: Path, graph_path: Path, hub: dict[str, str]
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {
            "state_dir": str(tmp_path / "state"),
            "source": {"kind": "jsonl", "path": str(graph_path)},
            "model": {"name": "nobody-here/no-such-model", "device": "cpu"},
        },
    )
    result = hub_cli(hub, "--config", str(config), "run", "--once")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "'nobody-here/no-such-model' is not in the local Hugging Face cache" in line
    assert "model.allow_download is false" in line
    assert "retry" not in result.stderr.lower() and "Traceback" not in result.stderr


def test_allow_download_must_be_true_or_false(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"model": {"allow_download": "yes"}})
    result = cli("--config", str(config), "status")
    assert result.returncode == 2
    assert "model.allow_download: expected true or false, got 'yes'" in one_error_line(result)


# After main() returns on a bad config, which heavy modules did the command import?
IMPORTS_AFTER_ERROR = """
import sys
from amygdala_daemon.cli.main import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "numpy.linalg") if m in sys.modules)
print(code, ",".join(heavy) or "-")
"""


@pytest.mark.parametrize(
    "command",
    [["run", "--once"], ["run"], ["rebuild"], ["publish", "--force"], ["probe", "a text"]],
)
def test_a_config_typo_is_reported_before_torch_loads(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[model]\nnmae = 'smollm2-135m'\n")
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER_ERROR, "--config", str(config), *command],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert "model.nmae: unknown key" in one_error_line(result)
    code, heavy = result.stdout.split()
    assert code == "2"
    assert "torch" not in heavy and "transformers" not in heavy, heavy


def test_a_layer_past_the_depth_is_a_bad_value_not_a_rebuild(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    table: dict[str, object] = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "jsonl", "path": str(graph_path)},
        "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
    }
    config = write_config(tmp_path / "config.toml", table)
    assert cli("--config", str(config), "run", "--once").returncode == 0
    table["model"] = {"name": str(tiny_model_dir), "layers": [1, 99], "device": "cpu"}
    write_config(config, table)
    for command in (["run", "--once"], ["rebuild"]):
        result = cli("--config", str(config), *command)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert "model.layers: layer 99 is out of range for a model with 4 decoder blocks" in line
        assert "rebuild" not in line, "no advice that the next command refuses"


def test_a_missing_source_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    config = write_config(
        tmp_path / "config.toml",
        {
            "state_dir": str(tmp_path / "state"),
            "source": {"kind": "jsonl", "path": str(missing)},
            "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
        },
    )
    result = cli("--config", str(config), "run", "--once")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"amygdala-daemon: error: cannot read jsonl source {missing}: No such file or directory"
    ]


def without_matplotlib(directory: Path) -> dict[str, str]:
    """An environment whose import path holds every installed package except matplotlib.

    A real absence, not a stand-in that raises: site-packages is mirrored entry by entry
    with links, matplotlib left out, and Python started without `site` (-S) on that mirror.
    """
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    directory.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("matplotlib", "mpl_toolkits")):
            (directory / entry.name).symlink_to(entry)
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(directory)])}


def test_report_plots_without_matplotlib_fails_before_any_work(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {
            "state_dir": str(tmp_path / "state"),
            "source": {"kind": "jsonl", "path": str(graph_path)},
            "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
        },
    )
    assert cli("--config", str(config), "run", "--once").returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", **without_matplotlib(tmp_path / "site")}
    flags = ["--config", str(config), "report", "--plots", str(tmp_path / "plots")]
    probe = [sys.executable, "-S", "-c", "import matplotlib"]
    absent = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=60)
    assert "No module named 'matplotlib'" in absent.stderr, "the mirror really lacks it"
    result = subprocess.run(
        [sys.executable, "-S", "-m", "amygdala_daemon", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert "--plots needs matplotlib" in one_error_line(result)
    assert result.stdout == "", "no report before the error"
    assert not (tmp_path / "plots").exists()
