"""The rated-file format of `evaluate`: JSONL and TSV, ratings and labels, one-line errors."""

from __future__ import annotations

import pytest

from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.rated import parse_rated

JSONL = """\
{"id": "a", "text": "We laughed all evening.", "Joy": 9, "calm": true, "nostalgia": null}

{"id": "b", "text": "The deadline scared me.\\nanxiety:9", "joy": 1.5, "calm": false}
{"text": "A quiet walk.", "joy": 4, "calm": true, "proud": 1}
{"text": "Nothing much.", "proud": 0}
"""


def test_jsonl_ratings_labels_and_line_numbers() -> None:
    rated = parse_rated(JSONL, "r.jsonl")
    assert rated.texts[1] == "The deadline scared me.\nanxiety:9", "the text is kept whole"
    # The blank line still counts: messages name the file's own lines.
    assert rated.lines == [1, 3, 4, 5]
    joy = rated.concepts["joy"]
    assert (joy.kind, joy.rows, joy.values, joy.lines) == (
        "rating",
        [0, 1, 2],
        [9.0, 1.5, 4.0],
        [1, 3, 4],
    )
    calm = rated.concepts["calm"]
    assert (calm.kind, calm.values) == ("label", [1.0, 0.0, 1.0])
    # Every value 0 or 1: labels, though written as numbers.
    assert rated.concepts["proud"].kind == "label"
    assert "nostalgia" not in rated.concepts and "id" not in rated.concepts


def test_tsv_reads_the_same_as_jsonl() -> None:
    tsv = "id\ttext\tjoy\tcalm\na\tWe laughed.\t9\tTRUE\nb\tThe deadline.\t\tfalse\nc\tA walk.\t4\n"
    rated = parse_rated(tsv, "r.tsv")
    assert rated.texts == ["We laughed.", "The deadline.", "A walk."]
    assert rated.concepts["joy"].values == [9.0, 4.0] and rated.concepts["joy"].rows == [0, 2]
    assert rated.concepts["calm"].kind == "label" and rated.concepts["calm"].values == [1.0, 0.0]
    assert "id" not in rated.concepts


@pytest.mark.parametrize(
    ("source", "raw", "message"),
    [
        ("r.jsonl", '{"joy": 3}\n', 'evaluate: r.jsonl:1: the row has no "text"'),
        ("r.jsonl", '{"text": 7}\n', 'evaluate: r.jsonl:1: the row has a non-string "text"'),
        (
            "r.jsonl",
            '{"text": "a", "joy": 1}\n{"text": "  "}\n',
            "evaluate: r.jsonl:2: the text is empty",
        ),
        (
            "r.jsonl",
            '{"text": "a", "joy": 2}\n{"text": "b", "joy": "high"}\n',
            "evaluate: r.jsonl:2: 'joy' is \"high\", not a number or true/false",
        ),
        ("r.jsonl", '{"text": "a"}\n{"text": \n', "evaluate: r.jsonl:2: not valid JSON"),
        ("r.jsonl", '{"text": "a"}\n[1, 2]\n', "evaluate: r.jsonl:2: expected a JSON object"),
        (
            "r.jsonl",
            '{"text": "a", "joy": true}\n{"text": "b", "joy": 7}\n',
            "evaluate: r.jsonl:2: 'joy' is 7, but other rows label it true/false",
        ),
        ("r.tsv", "sentence\tjoy\nhello\t3\n", "evaluate: r.tsv:1: no text column"),
        ("r.tsv", "text\tjoy\nhello\tlots\n", "evaluate: r.tsv:2: 'joy' is 'lots', not a number"),
        ("r.tsv", "text\tjoy\nhello\tnan\n", "evaluate: r.tsv:2: 'joy' is 'nan', not a number"),
        ("r.tsv", "text\tjoy\nhello\t3\t4\n", "evaluate: r.tsv:2: 3 fields, but the header has 2"),
        ("r.jsonl", "\n\n", "evaluate: r.jsonl: no rows"),
    ],
)
def test_bad_rows_name_the_file_and_line(source: str, raw: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_rated(raw, source)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"text": "a", "joy": 3}\n{"text": "b"}\n{"text": "c", "joy": 5}\n',
            "evaluate: r.jsonl: 'joy' is rated on 2 row(s) (lines 1, 3); it needs at least 3",
        ),
        (
            '{"text": "a", "calm": true}\n{"text": "b", "calm": true}\n{"text": "c", "calm": 1}\n',
            "evaluate: r.jsonl: every label of 'calm' is true (lines 1, 2, 3); an AUROC needs both",
        ),
        (
            '{"text": "a", "joy": 4}\n{"text": "b", "joy": 4}\n{"text": "c", "joy": 4}\n',
            "evaluate: r.jsonl: every rating of 'joy' is 4 (lines 1, 2, 3); a correlation needs",
        ),
    ],
)
def test_too_little_to_score_is_one_line(raw: str, message: str) -> None:
    [concept] = parse_rated(raw, "r.jsonl").concepts.values()
    with pytest.raises(InputError) as caught:
        concept.check("r.jsonl")
    assert str(caught.value).startswith(message), str(caught.value)


def test_enough_to_score_passes() -> None:
    raw = '{"text": "a", "joy": 3}\n{"text": "b", "joy": 5}\n{"text": "c", "joy": 5}\n'
    joy = parse_rated(raw, "r.jsonl").concepts["joy"]
    joy.check("r.jsonl")  # three rows, two distinct values: enough, so no InputError
    assert joy.kind == "rating" and joy.values == [3.0, 5.0, 5.0]
