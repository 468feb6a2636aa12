"""Tag-line parsing: split a node's text into content and `name:score` tags.

Pure functions over text. See DESIGN.md "Nodes and tags".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_TOKEN = re.compile(r"([^\s:]+):(\S+)")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
MAX_SCORE = 10.0
# One node names at most this many concepts, each at most this long: a node with thousands of
# names would otherwise grow every accumulator and checkpoint by a concept per name.
MAX_TAGS = 32
MAX_NAME_CHARS = 48


@dataclass(frozen=True)
class ParsedText:
    """A node's text split into what the model sees and what labels it."""

    content: str
    tags: dict[str, float] = field(default_factory=dict)
    malformed: tuple[str, ...] = ()


def _is_tag_line(line: str) -> bool:
    tokens = line.split()
    return bool(tokens) and all(_TOKEN.fullmatch(token) for token in tokens)


def _parse_score(value: str) -> float | None:
    if not _NUMBER.fullmatch(value):
        return None
    score = float(value)
    if not math.isfinite(score) or score < 0 or score > MAX_SCORE:
        return None
    return score


def parse_text(text: str, aliases: dict[str, str] | None = None) -> ParsedText:
    """Split trailing tag lines from `text`.

    >>> p = parse_text("Fixed the bug with Maya.\\nwarmth:9 clarity:10 joy:11")
    >>> p.content, p.tags, p.malformed
    ('Fixed the bug with Maya.', {'warmth': 9.0, 'clarity': 10.0}, ('joy:11',))

    Past `MAX_TAGS` distinct names, further names count as malformed:

    >>> many = parse_text("Content.\\n" + " ".join(f"t{i}:5" for i in range(40)))
    >>> len(many.tags), len(many.malformed)
    (32, 8)
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = len(lines)
    # Blank lines at the very end are neither content nor tags.
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    start = end
    while start > 0 and _is_tag_line(lines[start - 1]):
        start -= 1
    tags: dict[str, float] = {}
    malformed: list[str] = []
    # Top to bottom, so a repeated name takes its last score.
    for line in lines[start:end]:
        for token in line.split():
            name, _, value = token.partition(":")
            score = _parse_score(value)
            key = name.lower()
            if (
                _NAME.fullmatch(name)
                and len(name) <= MAX_NAME_CHARS
                and score is not None
                and (key in tags or len(tags) < MAX_TAGS)
            ):
                tags[key] = score
            else:
                malformed.append(token)
    content = "\n".join(lines[:start]).strip()
    if aliases:
        tags = apply_aliases(tags, aliases)
    return ParsedText(content=content, tags=tags, malformed=tuple(malformed))


def apply_aliases(tags: dict[str, float], aliases: dict[str, str]) -> dict[str, float]:
    """Count aliased tags as their concept; on a collision the higher score wins.

    >>> apply_aliases({"love": 9.0, "warmth": 6.0}, {"love": "warmth"})
    {'warmth': 9.0}
    """
    if not aliases:
        return tags
    out: dict[str, float] = {}
    for name, score in tags.items():
        concept = aliases.get(name, name)
        out[concept] = max(score, out.get(concept, score))
    return out
