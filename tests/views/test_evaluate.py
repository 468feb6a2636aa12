"""`evaluate` end to end on the tiny model: its figures against a numpy reference from `probe`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amygdala_daemon.cli.main import main as cli_main
from amygdala_daemon.core.config import Config
from tests.helpers.published import published_state

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (text, joy, anxiety, calm): None is "not rated". Tag lines must be stripped as in probe.
ROWS: list[tuple[str, float | None, float | None, bool]] = [
    ("We laughed all evening at the old photos.\njoy:9", 9, 0, False),
    ("The deadline moved up and nobody told me.", 0, 8, False),
    ("A slow morning with tea and the crossword.", 5, None, True),
    ("My hands shook before the interview started.\nanxiety:9 joy:1", 1, 9, False),
    ("The garden finally bloomed after a cold spring.", 8, 1, True),
    ("I keep checking the door lock again and again.", 0, 10, False),
    ("Floated in the lake and watched the clouds drift.", 6, 0, True),
    ("My brother called and we talked for two hours.", 7, 1, False),
    ("The scan results are late and I cannot sleep.", 0, None, False),
    ("Snow fell softly while the house stayed quiet.", 4, 0, True),
    ("Won the chess game I thought I had lost.", 10, 2, False),
    ("The bus broke down and I missed the meeting.", 1, 6, False),
]
NOSTALGIA = {0: 7, 4: 3, 9: 8}  # not a published concept: skipped


def rated_jsonl(path: Path) -> Path:
    lines = []
    for i, (text, joy, anxiety, calm) in enumerate(ROWS):
        row: dict[str, Any] = {"id": f"t{i}", "text": text, "joy": joy, "anxiety": anxiety}
        row["calm"] = calm
        if i in NOSTALGIA:
            row["nostalgia"] = NOSTALGIA[i]
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rated_tsv(path: Path) -> Path:
    lines = ["text\tjoy\tanxiety\tcalm"]
    for text, joy, anxiety, calm in ROWS:
        cells = ["" if v is None else f"{v:g}" for v in (joy, anxiety)]
        # TSV holds one line per text: the tag lines go, as the model never sees them anyway.
        lines.append("\t".join([text.split("\n")[0], *cells, str(calm).lower()]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Config]:
    return published_state(tmp_path_factory.mktemp("evaluate"), tiny_model_dir)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert cli_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def counted_ranks(values: np.ndarray) -> np.ndarray:
    return np.array([(values < v).sum() + 1 + ((values == v).sum() - 1) / 2 for v in values])


def pairwise_auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    wins = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return float(np.mean(wins))


def probe_reference(
    capsys: pytest.CaptureFixture[str], config_path: Path, tmp_path: Path
) -> dict[str, np.ndarray]:
    """concept -> `[n_texts, n_layers]` raw projections of the texts' content, from probe."""
    contents = tmp_path / "contents.txt"
    contents.write_text("\n".join(text.split("\n")[0] for text, *_ in ROWS) + "\n")
    results = run_json(
        capsys, "--config", str(config_path), "probe", "--json", "--file", str(contents)
    )
    return {
        concept: np.array(
            [[r["projections"][concept][layer] for layer in ("1", "2")] for r in results]
        )
        for concept in ("joy", "anxiety", "calm")
    }


def test_evaluate_matches_a_numpy_reference_from_probe(
    state: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, _ = state
    rated = rated_jsonl(tmp_path / "rated.jsonl")
    data = run_json(
        capsys, "--config", str(config_path), "evaluate", "--file", str(rated), "--json"
    )
    reference = probe_reference(capsys, config_path, tmp_path)
    assert data["layers"] == [1, 2] and data["generation"] == 1
    assert data["texts"] == data["scored_texts"] == len(ROWS)
    assert data["skipped"] == ["nostalgia"]
    rows = {row["name"]: row for row in data["concepts"]}
    assert list(rows) == ["joy", "anxiety", "calm"]
    for name, column in (("joy", 1), ("anxiety", 2)):
        rated_rows = [i for i, row in enumerate(ROWS) if row[column] is not None]
        ratings = np.array([ROWS[i][column] for i in rated_rows], dtype=float)
        row = rows[name]
        assert (row["kind"], row["n"], row["metric"]) == ("rating", len(rated_rows), "pearson")
        for j, layer in enumerate(("1", "2")):
            projections = reference[name][rated_rows, j]
            expected_r = np.corrcoef(projections, ratings)[0, 1]
            expected_rho = np.corrcoef(counted_ranks(projections), counted_ranks(ratings))[0, 1]
            assert row["layers"][layer]["pearson"] == pytest.approx(expected_r, abs=1e-6)
            assert row["layers"][layer]["spearman"] == pytest.approx(expected_rho, abs=1e-6)
        best = max(("1", "2"), key=lambda layer: row["layers"][layer]["pearson"])
        assert row["best_layer"] == int(best) and row["best"] == row["layers"][best]["pearson"]
    calm = rows["calm"]
    labels = np.array([row[3] for row in ROWS])
    assert (calm["kind"], calm["n"], calm["n_true"], calm["n_false"]) == ("label", 12, 4, 8)
    for j, layer in enumerate(("1", "2")):
        expected = pairwise_auroc(reference["calm"][labels, j], reference["calm"][~labels, j])
        assert calm["layers"][layer]["auroc"] == pytest.approx(expected, abs=1e-12)


def test_tsv_gives_the_same_figures_and_the_table_reads(
    state: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, _ = state
    from_jsonl = run_json(
        capsys, "--config", str(config_path), "evaluate", "--json", "--file",
        str(rated_jsonl(tmp_path / "rated.jsonl")),
    )  # fmt: skip
    tsv = rated_tsv(tmp_path / "rated.tsv")
    from_tsv = run_json(
        capsys, "--config", str(config_path), "evaluate", "--json", "--file", str(tsv)
    )
    for a, b in zip(from_jsonl["concepts"], from_tsv["concepts"], strict=True):
        assert a["name"] == b["name"] and a["best_layer"] == b["best_layer"]
        for layer in ("1", "2"):
            assert a["layers"][layer] == pytest.approx(b["layers"][layer], abs=1e-6)
    assert from_tsv["skipped"] == []
    assert cli_main(["--config", str(config_path), "evaluate", "--file", str(tsv)]) == 0
    table = capsys.readouterr().out
    assert "ratings: Pearson r (Spearman r)" in table and "labels: AUROC" in table
    assert "layer 1" in table and "layer 2" in table
    joy = next(line for line in table.splitlines() if line.startswith("joy "))
    best = from_tsv["concepts"][0]
    assert joy.split()[1] == "12" and joy.endswith(
        f"layer {best['best_layer']}: {best['best']:.2f}"
    )
    assert "\ncalm " in table


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "evaluate: cannot read {path}: No such file or directory"),
        ("no-text.tsv", "sentence\tjoy\nhello\t3\n", "evaluate: {path}:1: no text column"),
        (
            "no-text.jsonl",
            '{"text": "a", "joy": 2}\n{"joy": 3}\n',
            'evaluate: {path}:2: the row has no "text"',
        ),
        (
            "word.jsonl",
            '{"text": "a", "joy": 2}\n{"text": "b", "joy": "lots"}\n',
            "evaluate: {path}:2: 'joy' is \"lots\", not a number or true/false",
        ),
        (
            "short.jsonl",
            '{"text": "a", "joy": 2}\n{"text": "b", "joy": 5}\n{"text": "c", "wonder": 1}\n',
            "evaluate: {path}: 'joy' is rated on 2 row(s) (lines 1, 2); it needs at least 3",
        ),
        (
            "unpublished.jsonl",
            '{"text": "a", "wonder": 2}\n',
            "evaluate: {path}: none of its concepts (wonder) is in the published vectors",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    state: tuple[Path, Config],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | None,
    message: str,
) -> None:
    config_path, config = state
    path = tmp_path / name
    if content is not None:
        write(path, content)
    current = (config.state_path / "published" / "current").resolve()
    code = cli_main(["--config", str(config_path), "evaluate", "--file", str(path)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith("amygdala-daemon: error: ")
    assert errors[0].removeprefix("amygdala-daemon: error: ").startswith(message.format(path=path))
    assert (config.state_path / "published" / "current").resolve() == current


def test_nothing_published_is_a_state_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rated = rated_jsonl(tmp_path / "rated.jsonl")
    code = cli_main(["--state-dir", str(tmp_path / "empty"), "evaluate", "--file", str(rated)])
    assert code == 1
    assert "evaluate: no published generation under" in capsys.readouterr().err


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plots_write_one_png_per_concept(
    state: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib (the plots extra)")
    config_path, _ = state
    plots = tmp_path / "plots"
    rated = rated_jsonl(tmp_path / "rated.jsonl")
    argv = [
        "--config",
        str(config_path),
        "evaluate",
        "--file",
        str(rated),
        "--json",
        "--plots",
        str(plots),
    ]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["skipped"] == ["nostalgia"], "stdout stays clean JSON"
    assert sorted(p.name for p in plots.iterdir()) == [
        "evaluate_anxiety.png", "evaluate_calm.png", "evaluate_joy.png",
    ]  # fmt: skip
    for png in plots.iterdir():
        width, height = png_size(png)
        assert width > 400 and height > 300, (png.name, width, height)
        assert f"wrote {png}" in captured.err


def test_plots_without_matplotlib_fail_before_any_work(
    state: tuple[Path, Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path, _ = state
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    # The file does not exist either: the matplotlib check comes first.
    argv = ["--config", str(config_path), "evaluate", "--file", str(tmp_path / "nope.jsonl")]
    assert cli_main([*argv, "--plots", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip() == (
        "amygdala-daemon: error: --plots needs matplotlib: pip install 'amygdala-daemon[plots]'"
    )
    assert not (tmp_path / "p").exists()
