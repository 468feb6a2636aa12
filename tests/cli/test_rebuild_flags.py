"""`rebuild --ray [ADDRESS] --workers N` over [distributed]: flags win, bad values exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.reader import load_readout
from tests.helpers.cli import one_error_line
from tests.helpers.graphs import config_toml


def write_config(tmp_path: Path, graph: Path, model: Path, **distributed: object) -> Path:
    table: dict[str, object] = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(model), "layers": [1, 2], "device": "cpu"},
    }
    if distributed:
        table["distributed"] = distributed
    path = tmp_path / "config.toml"
    path.write_text(config_toml(table), encoding="utf-8")
    return path


def rebuild(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(config), "rebuild", *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def parsed(*flags: str, config: Config | None = None) -> Config:
    from amygdala_daemon.cli.main import build_parser
    from amygdala_daemon.cli.rebuild_flags import rebuild_config

    args = build_parser().parse_args(["rebuild", *flags])
    return rebuild_config(config or Config(), args)


def test_flags_override_the_config_table() -> None:
    assert parsed().distributed.engine == "local"
    alone = parsed("--ray").distributed
    assert (alone.engine, alone.address) == ("ray", "")
    joined = parsed("--ray", "auto", "--workers", "3").distributed
    assert (joined.engine, joined.address, joined.workers) == ("ray", "auto", 3)


@pytest.mark.parametrize(
    ("flags", "table", "message"),
    [
        (["--ray", "--workers", "0"], {}, "--workers must be at least 1, got 0"),
        (["--workers", "2"], {}, "--workers goes with --ray"),
        (["--from-cache", "--ray"], {}, "--from-cache runs no model"),
        ([], {"engine": "spark"}, "distributed.engine: 'spark' is not one of 'local', 'ray'"),
        ([], {"workers": -1}, "distributed.workers"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(
    tmp_path: Path,
    graph_path: Path,
    tiny_model_dir: Path,
    flags: list[str],
    table: dict[str, object],
    message: str,
) -> None:
    result = rebuild(write_config(tmp_path, graph_path, tiny_model_dir, **table), *flags)
    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)
    assert not (tmp_path / "state" / "published").exists()


@pytest.mark.slow
def test_rebuild_on_a_local_ray_it_starts_itself(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[dev]')")
    config = write_config(tmp_path, graph_path, tiny_model_dir, chunk_nodes=64)
    result = rebuild(config, "--ray", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "rebuild on 1 Ray workers" in result.stderr
    assert "Ray worker 0:" in result.stderr and "nodes/s" in result.stderr
    readout = load_readout(StatePaths(tmp_path / "state").current)
    assert readout.concepts
    status = json.loads((StatePaths(tmp_path / "state").current / "manifest.json").read_text())
    assert status["generation"] == readout.generation
