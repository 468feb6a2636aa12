"""`report` and `layers` end to end on the tiny model: read-only, consistent, complete."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amygdala_daemon.cli.main import main as cli_main
from amygdala_daemon.core.config import Config
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.config_file import load
from amygdala_daemon.store.generations import current_manifest
from amygdala_daemon.views.report import build_report
from amygdala_daemon.views.status import status_report
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_config(directory: Path, graph: Path, model_dir: Path) -> tuple[Path, Config]:
    table: dict[str, Any] = {
        "state_dir": str(directory / "state"),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(model_dir), "layers": [1, 2], "device": "cpu"},
        # One tag kept out, so the report has something to explain.
        "concepts": {"exclude": ["awe"]},
    }
    path = directory / "config.toml"
    path.write_text(config_toml(table), encoding="utf-8")
    return path, load(path)


def build_state(config: Config) -> None:
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
    finally:
        engine.close()


@pytest.fixture(scope="module")
def published_state(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[Path, Config]:
    directory = tmp_path_factory.mktemp("report")
    graph = write_jsonl(directory / "graph.jsonl", sample_nodes())
    path, config = write_config(directory, graph, tiny_model_dir)
    build_state(config)
    return path, config


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert cli_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_report_json_is_complete_and_consistent(
    published_state: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = published_state
    data = run_json(capsys, "--config", str(path), "report", "--json")
    manifest = current_manifest(config.state_path / "published")
    assert manifest is not None
    names = [row["name"] for row in data["concepts"]]
    assert names == manifest["concepts"] and len(names) == 13 and "awe" not in names
    assert data["layers"] == [1, 2] and data["previous_generation"] is None
    status = {c["name"]: c for c in status_report(config)["concepts"]}
    for row in data["concepts"]:
        assert (row["n_pos"], row["n_neg"]) == (
            status[row["name"]]["n_pos"],
            status[row["name"]]["n_neg"],
        )
        # Every eligible node is scored once, in its own bucket.
        assert (row["scored_pos"], row["scored_neg"]) == (row["n_pos"], row["n_neg"])
        for layer in ("1", "2"):
            cell = row["layers"][layer]
            assert 0.0 <= cell["auroc"] <= 1.0
            assert np.isfinite(cell["cohens_d"])
            assert cell["drift"] is None
            assert cell["calibration"] == manifest["calibration"][row["name"]][layer]
            # The manifest's quality key and the report come from the same computation.
            assert manifest["quality"]["auroc"][row["name"]][layer] == pytest.approx(
                cell["auroc"], abs=1e-12
            )
    for layer in ("1", "2"):
        matrix = np.array(data["crosstalk"]["cosine"][layer], dtype=float)
        assert matrix.shape == (13, 13)
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
        np.testing.assert_array_equal(np.diag(matrix), 1.0)
    for flag in data["crosstalk"]["flagged"]:
        assert flag["cosine"] > 0.5
    both = np.array(data["cooccurrence"]["both_positive"])
    assert [both[i, i] for i in range(13)] == [row["n_pos"] for row in data["concepts"]]
    assert data["unpublished"] == {"awe": "excluded by concepts.exclude"}
    assert len(data["weakest"]) == 4
    means = [row["mean_auroc"] for row in data["concepts"]]
    assert (
        data["weakest"]
        == [row["name"] for row in sorted(data["concepts"], key=lambda r: r["mean_auroc"])][:4]
    )
    assert min(means) <= data["mean_auroc"] <= max(means)


def test_report_table_reads_while_the_daemon_holds_the_lock(
    published_state: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = published_state
    writer = Engine(config)  # holds the writer lock, as the running daemon would
    try:
        assert cli_main(["--config", str(path), "report"]) == 0
        table = capsys.readouterr().out
    finally:
        writer.close()
    assert "layer 1" in table and "layer 2" in table and "AUROC" in table
    manifest = current_manifest(config.state_path / "published")
    assert manifest is not None
    for name in manifest["concepts"]:
        assert f"\n{name} " in table
    assert "tags seen but not published:" in table
    assert "awe  excluded by concepts.exclude" in table


def test_drift_after_a_second_publish(tmp_path: Path, tiny_model_dir: Path) -> None:
    nodes = sample_nodes()
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    _, config = write_config(tmp_path, graph, tiny_model_dir)
    build_state(config)
    # Drop every fourth node: the vectors move a little, the concepts stay.
    write_jsonl(graph, [n for i, n in enumerate(nodes) if i % 4])
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        assert engine.publish() is not None
    finally:
        engine.close()
    data = build_report(config).data
    assert data["generation"] == 2 and data["previous_generation"] == 1
    drifts = [cell["drift"] for row in data["concepts"] for cell in row["layers"].values()]
    assert all(d is not None and 0.0 < d <= 1.0 + 1e-12 for d in drifts)
    assert min(drifts) < 0.9999, "a quarter of the graph gone must move some vector"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plots_are_written(
    published_state: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path, _ = published_state
    plots = tmp_path / "plots"
    data = run_json(capsys, "--config", str(path), "report", "--json", "--plots", str(plots))
    assert data["generation"] == 1, "stdout stays clean JSON with --plots"
    for name in ("crosstalk.png", "auroc_by_layer.png", "projections_weakest.png"):
        width, height = png_size(plots / name)
        # Big enough for 13 readable names: tiny figures mean squeezed labels.
        assert width > 500 and height > 400, (name, width, height)


def test_plots_without_matplotlib_say_how_to_get_it(
    published_state: tuple[Path, Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = published_state
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    code = cli_main(["--config", str(path), "report", "--plots", str(tmp_path / "p")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "amygdala-daemon: error: --plots needs matplotlib: pip install 'amygdala-daemon[plots]'"
    )


def test_report_errors_are_one_line(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:5])
    path, _ = write_config(tmp_path, graph, tiny_model_dir)
    assert cli_main(["--config", str(path), "report"]) == 1
    assert "no published generation" in capsys.readouterr().err
    assert cli_main(["--config", str(path), "report", "--crosstalk-threshold", "2"]) == 2
    assert "--crosstalk-threshold" in capsys.readouterr().err


def test_layers_sweeps_every_block(
    published_state: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = published_state
    data = run_json(capsys, "--config", str(path), "layers", "--sample", "150", "--json")
    assert data["n_layers"] == 4 and data["layers"] == [0, 1, 2, 3]
    assert data["sample"] == 150 and data["eligible"] > 150
    assert data["configured"] == [1, 2] and data["rule_of_thumb"] == [2]
    assert data["recommended"], "something is recommended"
    assert all(abs(a - b) >= 3 for a in data["recommended"] for b in data["recommended"] if a != b)
    for concept in data["concepts"]:
        assert all(0.0 <= v <= 1.0 for v in concept["auroc"].values())
    best = max(data["mean_auroc"].values())
    assert data["mean_auroc"][str(data["recommended"][0])] == best
    assert cli_main(["--config", str(path), "layers", "--sample", "100"]) == 0
    text = capsys.readouterr().out
    assert "recommended layers:" in text and "60-80% of depth" in text


@pytest.mark.parametrize("method", ["shrinkage_lda", "score_ridge", "mean_diff"])
def test_report_method_scores_what_publishing_that_method_would(
    tmp_path: Path, published_state: tuple[Path, Config], method: str
) -> None:
    """`report --method M` on a state equals the plain report of that state published with M."""
    import shutil
    from dataclasses import replace

    from amygdala_daemon.core.vectors import as_method

    _, config = published_state
    chosen = as_method(method)
    asked = build_report(config, method=chosen).data
    assert asked["method"] == chosen
    # The same ledger, refolded and published with the method (no model needed).
    copy = replace(config, state_dir=str(tmp_path / "copy"))
    shutil.copytree(config.state_path, copy.state_path, symlinks=True)
    switched = replace(copy, vectors=replace(copy.vectors, method=chosen))
    engine = Engine(switched)
    try:
        engine.rebuild(open_source(switched.source), from_cache=True)
        assert not engine.model_loaded
    finally:
        engine.close()
    published = build_report(switched).data
    assert published["method"] == chosen
    for ours, theirs in zip(asked["concepts"], published["concepts"], strict=True):
        assert ours["name"] == theirs["name"]
        for layer, cell in ours["layers"].items():
            assert cell["auroc"] == pytest.approx(theirs["layers"][layer]["auroc"], abs=1e-9)
    for layer, matrix in asked["crosstalk"]["cosine"].items():
        np.testing.assert_allclose(
            np.array(matrix, dtype=float),
            np.array(published["crosstalk"]["cosine"][layer], dtype=float),
            atol=1e-6,
        )
    # And it is not the published method's figures when the methods differ.
    default = build_report(config).data
    if chosen != default["method"]:
        assert asked["crosstalk"]["cosine"] != default["crosstalk"]["cosine"]
