"""Rated texts for `evaluate`: JSONL or TSV parsed into texts and per-concept values. No I/O.

JSONL, one object per line: `{"text": "...", "joy": 7, "anxiety": 2, "proud": true}`. Every key
but `text` (and an optional `id`, ignored) is a concept; `null` or a missing key means "not
rated". TSV: a header row `text<TAB>joy<TAB>...` (an `id` column is ignored too), then one
text per row; an empty cell is not rated. A value is a rating (any finite number) or a label
(`true`/`false`). A concept whose values are all 0 or 1 is read as labels too. Blank lines are
skipped; line numbers in messages are the file's own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from amygdala_daemon.core.errors import InputError

Kind = Literal["rating", "label"]

# Not a concept: lets a file keep its own row names.
IGNORED_KEYS = frozenset({"id"})
MIN_ROWS = 3


@dataclass
class RatedConcept:
    """One concept's values: a rating, or a label as 1.0 / 0.0, for some of the rows."""

    name: str
    kind: Kind
    rows: list[int] = field(default_factory=list)
    """Indices into `RatedTexts.texts`."""
    values: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """The file line of each value."""

    def check(self, source: str) -> None:
        """Raise `InputError` unless there is enough here for a correlation or an AUROC."""
        where = f"line {self.lines[0]}" if len(self.lines) == 1 else _lines(self.lines)
        if len(self.values) < MIN_ROWS:
            raise InputError(
                f"evaluate: {source}: {self.name!r} is rated on {len(self.values)} row(s) "
                f"({where}); it needs at least {MIN_ROWS}"
            )
        if self.kind == "label" and len(set(self.values)) < 2:
            state = "true" if self.values[0] == 1.0 else "false"
            raise InputError(
                f"evaluate: {source}: every label of {self.name!r} is {state} ({where}); "
                "an AUROC needs both true and false"
            )
        if self.kind == "rating" and len(set(self.values)) < 2:
            raise InputError(
                f"evaluate: {source}: every rating of {self.name!r} is {self.values[0]:g} "
                f"({where}); a correlation needs ratings that vary"
            )


@dataclass
class RatedTexts:
    """The texts of a rated file, in file order, and what each concept says about them."""

    source: str
    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    concepts: dict[str, RatedConcept] = field(default_factory=dict)


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return f"lines {shown}" + (", ..." if len(lines) > 5 else "")


def parse_rated(raw: str, source: str) -> RatedTexts:
    """Parse a rated file's contents; `source` names it in every message.

    TSV when `source` ends in `.tsv` or the first non-blank line is not a JSON object.

    >>> rated = parse_rated('{"text": "a", "joy": 7}\\n{"text": "b", "joy": 2}\\n', "r.jsonl")
    >>> rated.texts, rated.concepts["joy"].values, rated.concepts["joy"].kind
    (['a', 'b'], [7.0, 2.0], 'rating')
    """
    numbered = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise InputError(f"evaluate: {source}: no rows (expected JSONL or TSV with a header)")
    is_tsv = source.lower().endswith(".tsv") or not numbered[0][1].lstrip().startswith("{")
    rows = _tsv_rows(numbered, source) if is_tsv else _jsonl_rows(numbered, source)
    rated = RatedTexts(source)
    cells: dict[str, list[tuple[int, int, bool | float]]] = {}
    for line, text, values in rows:
        if not text.strip():
            raise InputError(f"evaluate: {source}:{line}: the text is empty")
        for name, value in values.items():
            cells.setdefault(name, []).append((len(rated.texts), line, value))
        rated.texts.append(text)
        rated.lines.append(line)
    for name, found in cells.items():
        rated.concepts[name] = _concept(name, found, source)
    return rated


def _concept(name: str, found: list[tuple[int, int, bool | float]], source: str) -> RatedConcept:
    """Labels when any value is a bool or every value is 0 or 1; ratings otherwise."""
    has_bool = any(isinstance(value, bool) for _, _, value in found)
    binary = all(value in (0.0, 1.0) for _, _, value in found)
    if has_bool and not binary:
        line, value = next((ln, v) for _, ln, v in found if not isinstance(v, bool))
        raise InputError(
            f"evaluate: {source}:{line}: {name!r} is {value:g}, but other rows label it "
            "true/false: use labels or ratings for a concept, not both"
        )
    concept = RatedConcept(name, "label" if binary else "rating")
    for row, line, value in found:
        concept.rows.append(row)
        concept.values.append(float(value))
        concept.lines.append(line)
    return concept


def _number(value: Any, name: str, where: str) -> bool | float | None:
    """A JSON value as a label, a rating, or not rated (None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise InputError(
        f"evaluate: {where}: {name!r} is {json.dumps(value)}, not a number or true/false"
    )


def _jsonl_rows(
    numbered: list[tuple[int, str]], source: str
) -> list[tuple[int, str, dict[str, bool | float]]]:
    rows = []
    for line, body in numbered:
        where = f"{source}:{line}"
        try:
            row = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InputError(f"evaluate: {where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"evaluate: {where}: expected a JSON object, got {body[:40]!r}")
        text = row.get("text")
        if not isinstance(text, str):
            problem = "has no" if text is None else "has a non-string"
            raise InputError(f'evaluate: {where}: the row {problem} "text"')
        values: dict[str, bool | float] = {}
        for key, value in row.items():
            if key == "text" or key in IGNORED_KEYS:
                continue
            parsed = _number(value, key, where)
            if parsed is not None:
                values[key.lower()] = parsed
        rows.append((line, text, values))
    return rows


def _cell(cell: str, name: str, where: str) -> bool | float | None:
    """A TSV cell as a label, a rating, or not rated (None)."""
    stripped = cell.strip()
    if not stripped:
        return None
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    try:
        value = float(stripped)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"evaluate: {where}: {name!r} is {stripped!r}, not a number or true/false")
    return value


def _tsv_rows(
    numbered: list[tuple[int, str]], source: str
) -> list[tuple[int, str, dict[str, bool | float]]]:
    header_line, header = numbered[0]
    names = [name.strip().lower() for name in header.split("\t")]
    if "text" not in names:
        raise InputError(
            f"evaluate: {source}:{header_line}: no text column (a TSV header names its columns, "
            'one of them `text`; a JSONL row is an object with a "text" key)'
        )
    text_column = names.index("text")
    rows = []
    for line, body in numbered[1:]:
        where = f"{source}:{line}"
        cells = body.split("\t")
        if len(cells) > len(names):
            raise InputError(
                f"evaluate: {where}: {len(cells)} fields, but the header has {len(names)}"
            )
        text = cells[text_column] if text_column < len(cells) else ""
        values: dict[str, bool | float] = {}
        for name, cell in zip(names, cells, strict=False):
            if name == "text" or name in IGNORED_KEYS or not name:
                continue
            parsed = _cell(cell, name, where)
            if parsed is not None:
                values[name] = parsed
        rows.append((line, text, values))
    return rows
