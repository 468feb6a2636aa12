"""`probe --tokens` on the tiny model, against a plain transformers forward pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from amygdala_daemon.cli.main import main as cli_main
from amygdala_daemon.core.config import Config
from amygdala_daemon.model.extractor import pool
from amygdala_daemon.store.generations import current_manifest
from amygdala_daemon.views.tokens import sink_tokens
from tests.helpers.published import published_state

TEXT = "We laughed all evening, then the deadline email arrived."


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Config]:
    return published_state(tmp_path_factory.mktemp("tokens"), tiny_model_dir)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert cli_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_per_token_raw_equals_a_plain_forward_with_hidden_states(
    state: tuple[Path, Config], tiny_model: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, config = state
    model, tokenizer = tiny_model
    [result] = run_json(
        capsys, "--config", str(config_path), "probe", "--tokens", "--json", "--top", "4", TEXT
    )
    ids = tokenizer(TEXT)["input_ids"]
    assert [token["token_id"] for token in result["tokens"]] == ids
    assert [token["token"] for token in result["tokens"]] == [tokenizer.decode([i]) for i in ids]
    assert len(result["top"]) == 4 and result["layers"] == [1, 2]
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    published = config.state_path / "published"
    manifest = current_manifest(published)
    assert manifest is not None
    from safetensors.numpy import load_file

    vectors = load_file(str(published / "current" / "vectors.safetensors"))
    for layer in (1, 2):
        # Layer i is the output of block i: hidden_states[i + 1].
        states = hidden[layer + 1][0].double().numpy()
        for concept in result["top"]:
            unit = vectors[f"layer_{layer}.vectors"][manifest["concepts"].index(concept)]
            expected = states @ unit
            raw = np.array([token["raw"][concept][str(layer)] for token in result["tokens"]])
            np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)
            calibration = manifest["calibration"][concept][str(layer)]
            z = np.array([token["z"][concept][str(layer)] for token in result["tokens"]])
            np.testing.assert_allclose(
                z,
                (expected - calibration["neg_mean"]) / calibration["neg_std"],
                rtol=1e-5,
                atol=1e-5,
            )
    # Every token is shown; position 0 is flagged as a sink at every layer.
    assert result["tokens"][0]["sink"] == [1, 2]


def test_mean_over_the_pooled_tokens_is_the_probe_projection(
    state: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, _ = state
    [tokens] = run_json(
        capsys, "--config", str(config_path), "probe", "--tokens", "--json", "--top", "14", TEXT
    )
    [pooled] = run_json(capsys, "--config", str(config_path), "probe", "--json", TEXT)
    assert len(tokens["top"]) == 14
    for concept in tokens["top"]:
        for layer in ("1", "2"):
            kept = [
                t["raw"][concept][layer] for t in tokens["tokens"] if int(layer) not in t["sink"]
            ]
            assert np.mean(kept) == pytest.approx(pooled["projections"][concept][layer], abs=1e-5)
    # Ranked by that mean z: the order probe's own ranking would give.
    mean_z = {c: np.mean(list(pooled["z"][c].values())) for c in pooled["z"]}
    assert tokens["top"] == sorted(mean_z, key=lambda c: -mean_z[c])


def test_sink_rule_is_the_pooling_rule() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(2, 9, 16)).astype(np.float32)
    block[1, 4] *= 50.0  # an outlier norm at one layer only
    sinks = sink_tokens(block, 10.0)
    assert sinks[:, 0].all() and sinks[1, 4] and not sinks[0, 4]
    assert sinks.sum() == 3
    for layer in range(2):
        hidden = torch.from_numpy(block[layer : layer + 1])
        pooled = pool(hidden, torch.ones(1, 9, dtype=torch.bool), "mean", 10.0)[0].numpy()
        np.testing.assert_allclose(block[layer][~sinks[layer]].mean(axis=0), pooled, rtol=1e-6)
    # One token: nothing would be left, so nothing is left out.
    assert not sink_tokens(block[:, :1], 10.0).any()


def test_text_output_marks_tokens_and_layer_chooses(
    state: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, _ = state
    [result] = run_json(
        capsys, "--config", str(config_path), "probe", "--tokens", "--json", "--layer", "2", TEXT
    )
    assert set(result["layer"].values()) == {2}
    assert cli_main(["--config", str(config_path), "probe", "--tokens", "--top", "3", TEXT]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == TEXT
    for concept in result["top"][:3]:
        marked = next(line for line in lines if line.startswith(f"  {concept} "))
        # The marked text is the text itself, brackets aside.
        assert marked.split("  ")[-1].replace("[", "").replace("]", "") == TEXT
    table = [line for line in lines if line[:6].strip().isdigit()]
    assert len(table) == len(result["tokens"])
    assert table[0].endswith("s"), "position 0 is flagged as a sink in every column"
    # The tokens that fire for the top concept: starred in its column (a fixed-width table,
    # the mark after the first 10-wide value) as many as are bracketed in its text line.
    starred = sum(line[34] == "*" for line in table)
    assert starred == lines[2].count("[")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--tokens", "--layer", "9", TEXT],
            "--layer: 9 is not a published layer (published: 1, 2)",
        ),
        (["--layer", "1", TEXT], "probe: --layer and --plots go with --tokens"),
        (["--plots", "somewhere", TEXT], "probe: --layer and --plots go with --tokens"),
        (["--tokens", "--top", "0", TEXT], "--top: 0 is below 1"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    state: tuple[Path, Config], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    config_path, _ = state
    assert cli_main(["--config", str(config_path), "probe", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"amygdala-daemon: error: {message}"


def test_plots_write_a_token_map_per_text(
    state: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib (the plots extra)")
    config_path, _ = state
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{TEXT}\nA short one.\n")
    plots = tmp_path / "plots"
    argv = [
        "--config",
        str(config_path),
        "probe",
        "--tokens",
        "--file",
        str(texts),
        "--plots",
        str(plots),
    ]
    assert cli_main(argv) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["tokens_1.png", "tokens_2.png"]
    err = capsys.readouterr().err
    for png in plots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {png}" in err
