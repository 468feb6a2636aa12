"""The package's public face: `__all__` resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import amygdala_daemon
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    import amygdala_daemon.engine.writer as writer
    import amygdala_daemon.reader as reader
    import amygdala_daemon.store.config_file as config_file

    assert "Engine" in amygdala_daemon.__all__
    assert set(amygdala_daemon.__all__) == {"__version__", *amygdala_daemon._EXPORTS}
    for name in amygdala_daemon.__all__:
        assert getattr(amygdala_daemon, name) is not None, name
    assert amygdala_daemon.Engine is writer.Engine
    assert amygdala_daemon.ReadoutWatcher is reader.ReadoutWatcher
    assert amygdala_daemon.load_config is config_file.load
    assert sorted(dir(amygdala_daemon)) == sorted(amygdala_daemon.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        amygdala_daemon.Enigne  # noqa: B018
    except AttributeError as exc:
        assert "Enigne" in str(exc)
    else:
        raise AssertionError("a misspelt name must not resolve")


def test_importing_the_package_or_the_reader_does_not_import_torch() -> None:
    code = (
        "import sys, amygdala_daemon, amygdala_daemon.reader; "
        "print('torch' in sys.modules, 'sqlite3' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_user_can_ingest_publish_and_read_through_the_public_names(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:80])
    config = make_config(tmp_path / "state", graph, tiny_model_dir)
    assert isinstance(config, amygdala_daemon.Config)
    engine = amygdala_daemon.Engine(config)
    try:
        report = engine.sync(amygdala_daemon.open_source(config.source))
        assert isinstance(report, amygdala_daemon.SyncReport) and report.applied
        written = engine.publish()
    finally:
        engine.close()
    assert written is not None
    readout = amygdala_daemon.ReadoutWatcher(amygdala_daemon.StatePaths(config.state_path).current)
    assert readout.current is not None and readout.current.generation == 1
    status = amygdala_daemon.status_report(config)
    assert status["generation"] == 1
    published = [c["name"] for c in status["concepts"] if c["published"]]
    assert sorted(published) == sorted(readout.current.concepts)
