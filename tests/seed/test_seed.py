"""The seed's two steps, `extract-pairs` and `train`, on the daemon's engine and the tiny model."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from amygdala_daemon.core.config import Config, LabelsConfig, SourceConfig
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.seed.pairs import extract_pairs, read_training_dir
from amygdala_daemon.seed.train import train
from amygdala_daemon.sources import open_source
from tests.helpers.cli import one_error_line
from tests.helpers.generations import check_generation
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl
from tests.helpers.mcp import MemoryServer


def seed_cli(*args: str) -> subprocess.CompletedProcess[str]:
    entry = ["-m", "amygdala_daemon"]
    env = {k: v for k, v in os.environ.items() if k != "AMYGDALA_CONFIG"}
    return subprocess.run(
        [sys.executable, *entry, *args],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def load_vectors(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with safe_open(str(path), framework="numpy") as handle:
        manifest = json.loads(handle.metadata()["manifest"])
        return manifest, {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def row(manifest: dict[str, Any], tensors: dict[str, np.ndarray], concept: str, layer: int) -> Any:
    return tensors[f"layer_{layer}.vectors"][manifest["concepts"].index(concept)]


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line]


def write_examples(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


@pytest.fixture
def config(tmp_path: Path, graph_path: Path, tiny_model_dir: Path) -> Config:
    return make_config(tmp_path / "state", graph_path, tiny_model_dir)


def test_extract_then_train_equals_rebuild(tmp_path: Path, config: Config) -> None:
    # `train` keeps the seed's mean difference, whatever the daemon's default.
    config = replace(config, vectors=replace(config.vectors, method="mean_diff"))
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
    finally:
        engine.close()
    daemon_manifest, daemon_vectors = load_vectors(
        config.state_path / "published/current/vectors.safetensors"
    )

    pairs = extract_pairs(open_source(config.source), tmp_path / "pairs", config.labels)
    assert not pairs.skipped
    result = train(config, tmp_path / "pairs", tmp_path / "out" / "vectors.safetensors")
    manifest = check_generation(tmp_path / "out")
    _, vectors = load_vectors(tmp_path / "out" / "vectors.safetensors")

    assert manifest["source"] == "train" and manifest["generation"] == 0
    assert manifest["layers"] == daemon_manifest["layers"] == [1, 2]
    shared = set(manifest["concepts"]) & set(daemon_manifest["concepts"])
    assert len(shared) == 14, "every emotion of the sample graph is compared"
    for key in ("model_id", "hidden_size", "dtype", "layer_convention", "method", "pooling"):
        assert manifest[key] == daemon_manifest[key], key
    for concept in sorted(shared):
        assert manifest["counts"][concept] == daemon_manifest["counts"][concept], concept
        for layer in manifest["layers"]:
            # Batches are composed differently; float32 activations move by ~1e-7 relative.
            np.testing.assert_allclose(
                row(manifest, vectors, concept, layer),
                row(daemon_manifest, daemon_vectors, concept, layer),
                rtol=0,
                atol=1e-6,
                err_msg=f"{concept} layer {layer}",
            )
            ours = manifest["calibration"][concept][str(layer)]
            theirs = daemon_manifest["calibration"][concept][str(layer)]
            for key in ours:
                assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    assert result.forward_sequences == result.distinct_texts == pairs.eligible


def test_cap_is_respected_and_two_runs_are_identical(tmp_path: Path, config: Config) -> None:
    uncapped = tmp_path / "all"
    extract_pairs(open_source(config.source), uncapped, config.labels)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        extract_pairs(open_source(config.source), run, config.labels, max_examples=5)
    files = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 14
    assert files == sorted(p.relative_to(runs[1]) for p in runs[1].rglob("*") if p.is_file())
    for relative in files:
        assert (runs[0] / relative).read_bytes() == (runs[1] / relative).read_bytes(), relative

    index = json.loads((runs[0] / "index.json").read_text())
    assert index["settings"]["max_examples_per_emotion"] == 5
    for emotion, counts in index["emotions"].items():
        for polarity in ("positive", "negative"):
            every = read_lines(uncapped / emotion / f"{polarity}.jsonl")
            kept = read_lines(runs[0] / emotion / f"{polarity}.jsonl")
            assert counts[polarity] == len(kept) == min(5, len(every))
            assert counts[f"{polarity}_available"] == len(every)
            by_hash = sorted(e["id"] for e in every)
            by_hash.sort(key=lambda i: hashlib.sha256(i.encode()).hexdigest())
            assert [e["id"] for e in kept] == by_hash[:5], (emotion, polarity)

    # Running again into the same directory replaces it and leaves nothing beside it.
    extract_pairs(open_source(config.source), runs[0], config.labels, max_examples=5)
    assert (runs[0] / "index.json").read_bytes() == (runs[1] / "index.json").read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_examples_are_content_without_tag_lines(tmp_path: Path, config: Config) -> None:
    contents = {n["id"]: parse_text(n["text"]).content for n in sample_nodes()}
    stricter = LabelsConfig(min_positive_score=9, max_negative_score=2)
    extract_pairs(open_source(config.source), tmp_path / "pairs", stricter)
    index = json.loads((tmp_path / "pairs" / "index.json").read_text())
    assert index["settings"]["min_positive_score"] == 9
    for path in (tmp_path / "pairs").rglob("*.jsonl"):
        for example in read_lines(path):
            assert example["text"] == contents[example["id"]]
            assert not parse_text(example["text"]).tags
            if path.name == "positive.jsonl":
                assert example["score"] >= 9
            else:
                assert example["score"] is None or example["score"] <= 2


def test_text_round_trips_exactly(tmp_path: Path) -> None:
    # U+2028 is a line break to str.splitlines() but not to JSON Lines.
    content = 'Über den Fluss\u2028und "zurück", am Abend \u2014 ein langer Tag.\nZweite Zeile.'
    graph = write_jsonl(tmp_path / "graph.jsonl", [{"id": "n1", "text": f"{content}\njoy:9"}])
    extract_pairs(open_source(SourceConfig(path=str(graph))), tmp_path / "pairs", LabelsConfig())
    assert read_lines(tmp_path / "pairs" / "joy" / "positive.jsonl")[0]["text"] == content
    assert read_training_dir(tmp_path / "pairs").texts == {
        "joy": {"positive": [content], "negative": []}
    }


def test_each_distinct_text_runs_through_the_model_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:80]
    # Copies of twenty nodes under new ids and other tags: same content, more examples.
    copies = [
        {"id": f"copy-{n['id']}", "text": parse_text(n["text"]).content + "\njoy:9 awe:9"}
        for n in nodes[:20]
    ]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes + copies)
    config = make_config(tmp_path / "state", graph, tiny_model_dir)
    extract_pairs(open_source(config.source), tmp_path / "pairs", config.labels)
    written = [
        example["text"]
        for path in (tmp_path / "pairs").rglob("*.jsonl")
        for example in read_lines(path)
    ]
    result = train(config, tmp_path / "pairs", tmp_path / "vectors.safetensors")
    assert result.distinct_texts == len(set(written))
    assert result.forward_sequences == result.distinct_texts
    assert result.examples == len(written) > 5 * result.distinct_texts


def test_hand_written_set_with_a_missing_polarity(tmp_path: Path, config: Config) -> None:
    nodes = sample_nodes()
    warm = [parse_text(n["text"]).content for n in nodes if "warmth:9" in n["text"]][:6]
    cold = [parse_text(n["text"]).content for n in nodes if "warmth:" not in n["text"]][:6]
    tagged = tmp_path / "tagged"
    write_examples(tagged / "warmth" / "positive.jsonl", [f"{t}\nwarmth:9" for t in warm])
    write_examples(tagged / "warmth" / "negative.jsonl", cold)
    write_examples(tagged / "hope" / "positive.jsonl", warm[:2])
    clean = tmp_path / "clean"
    write_examples(clean / "warmth" / "positive.jsonl", warm)
    write_examples(clean / "warmth" / "negative.jsonl", cold)

    result = train(config, tagged, tmp_path / "a" / "vectors.safetensors")
    assert result.concepts == ["warmth"]
    assert result.skipped == {"hope": "no negatives"}
    assert result.stripped == 6
    reference = train(config, clean, tmp_path / "b" / "vectors.safetensors")
    assert reference.stripped == 0
    # The tag line never reached the model: the vectors are those of the clean set.
    _, with_tags = load_vectors(tmp_path / "a" / "vectors.safetensors")
    _, without = load_vectors(tmp_path / "b" / "vectors.safetensors")
    for key in without:
        np.testing.assert_allclose(with_tags[key], without[key], rtol=0, atol=1e-6)


def test_bad_training_directories(tmp_path: Path, config: Config) -> None:
    output = tmp_path / "out.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no examples"):
        train(config, tmp_path / "empty", output)
    with pytest.raises(InputError, match="is not a directory"):
        train(config, tmp_path / "missing", output)
    broken = tmp_path / "broken" / "joy" / "negative.jsonl"
    write_examples(broken, ["one long enough text", "another long enough text"])
    with broken.open("a") as handle:
        handle.write('{"text": "cut off\n')
    with pytest.raises(InputError, match=rf"^{re.escape(str(broken))}:3: not valid JSON"):
        read_training_dir(tmp_path / "broken")
    broken.write_text('{"text": "fine"}\n{"id": "n2"}\n')
    with pytest.raises(
        InputError, match=rf'^{re.escape(str(broken))}:2: expected an object with a string "text"'
    ):
        read_training_dir(tmp_path / "broken")
    lonely = tmp_path / "lonely"
    write_examples(lonely / "joy" / "positive.jsonl", ["A fine day at the lake."])
    write_examples(lonely / "awe" / "negative.jsonl", ["A dull day at the desk."])
    with pytest.raises(InputError, match=r"no emotion has both .*awe: no positives; joy: no neg"):
        train(config, lonely, output)
    assert not output.exists()


def test_bad_output_dir_is_refused_and_kept(tmp_path: Path, config: Config) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"is not empty and holds no index\.json"):
        extract_pairs(open_source(config.source), foreign, config.labels)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_extract_pairs_over_mcp_matches_the_same_graph_from_jsonl(
    tmp_path: Path, graph_path: Path
) -> None:
    server = MemoryServer(tmp_path)
    server.write(*sample_nodes())
    server.start()
    try:
        # The seed's own flag, without the /mcp path: it is added.
        over_mcp = seed_cli(
            "extract-pairs",
            "--memory-mcp-url",
            f"http://127.0.0.1:{server.port}",
            "--output-dir",
            str(tmp_path / "mcp-pairs"),
        )
    finally:
        server.stop()
    assert over_mcp.returncode == 0, over_mcp.stderr
    from_file = seed_cli(
        "extract-pairs", "--source", str(graph_path), "--output-dir", str(tmp_path / "file-pairs")
    )
    assert from_file.returncode == 0, from_file.stderr
    for emotion_dir in sorted((tmp_path / "file-pairs").iterdir()):
        if emotion_dir.is_dir():
            for name in ("positive.jsonl", "negative.jsonl"):
                mirrored = tmp_path / "mcp-pairs" / emotion_dir.name / name
                assert mirrored.read_bytes() == (emotion_dir / name).read_bytes()


def test_the_seed_commands_end_to_end(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    pairs = tmp_path / "pairs"
    extracted = seed_cli(
        "--state-dir",
        str(tmp_path / "state"),
        "extract-pairs",
        "--source",
        str(graph_path),
        "--output-dir",
        str(pairs),
        "--min-positive-score",
        "8",
        "--max-negative-mentions",
        "0",
        "--min-content-chars",
        "40",
        "--max-examples-per-emotion",
        "12",
    )
    assert extracted.returncode == 0, extracted.stderr
    assert "343 eligible nodes of 377, 14 emotions" in extracted.stdout
    assert "  joy: 12 positive, 12 negative" in extracted.stdout
    # A hand-added emotion without negatives is skipped and listed; the rest still trains.
    write_examples(pairs / "hope" / "positive.jsonl", ["We might get the grant after all."])
    trained = seed_cli(
        "--state-dir",
        str(tmp_path / "state"),
        "train",
        "--model",
        str(tiny_model_dir),
        "--training-data-dir",
        str(pairs),
        "--target-layers",
        "1,-1",
        "--output",
        str(tmp_path / "out" / "vectors.safetensors"),
        "--dtype",
        "fp32",
        "--batch-size",
        "4",
    )
    assert trained.returncode == 0, trained.stderr
    assert "train: skipped hope: no negatives" in trained.stdout
    assert "train: 14 concepts x layers [1, 3]" in trained.stdout
    manifest = check_generation(tmp_path / "out")
    assert manifest["model_dtype"] == "float32" and "hope" not in manifest["concepts"]
    assert manifest["counts"]["joy"] == {"n_pos": 12, "n_neg": 12}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "int8"], "--dtype: 'int8' is not one of bf16, bfloat16, fp16"),
        (["--target-layers", "1,two"], "--target-layers: 'two' is not an integer"),
        (
            ["--target-layers", "1,9"],
            "--target-layers: layer 9 is out of range for a model with 4 decoder blocks",
        ),
        (["--batch-size", "0"], "--batch-size: 0 is below the minimum 1"),
    ],
)
def test_bad_train_flags_are_one_line_and_exit_2(
    tmp_path: Path, tiny_model_dir: Path, args: list[str], message: str
) -> None:
    pairs = tmp_path / "pairs"
    write_examples(pairs / "joy" / "positive.jsonl", ["A bright morning by the sea."])
    write_examples(pairs / "joy" / "negative.jsonl", ["A grey queue at the office."])
    result = seed_cli(
        "--state-dir",
        str(tmp_path / "state"),
        "train",
        "--model",
        str(tiny_model_dir),
        "--training-data-dir",
        str(pairs),
        "--output",
        str(tmp_path / "vectors.safetensors"),
        *args,
    )
    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)
    assert not (tmp_path / "vectors.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-mcp-url", "ftp://nowhere"], "unsupported protocol"),
        (["--max-examples-per-emotion", "many"], "--max-examples-per-emotion: 'many' is not an"),
        (["--min-positive-score", "11"], "--min-positive-score: 11 is outside 0..10"),
    ],
)
def test_bad_extract_flags_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = seed_cli("extract-pairs", "--output-dir", str(tmp_path / "pairs"), *args)
    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)
    assert not (tmp_path / "pairs").exists()


def test_help_explains_both_commands() -> None:
    from amygdala_daemon.cli.seed import add_seed_commands

    parser = argparse.ArgumentParser(prog="amygdala-daemon")
    commands = parser.add_subparsers()
    add_seed_commands(commands)
    assert set(commands.choices) == {"extract-pairs", "train"}
    for sub in commands.choices.values():
        assert sub.description
    assert "sha256 of the node id" in commands.choices["extract-pairs"].format_help()
