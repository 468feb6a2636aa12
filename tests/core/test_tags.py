from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from amygdala_daemon.core.tags import parse_text

names = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)
scores = st.integers(0, 10)
content_line = st.text(
    alphabet=st.characters(categories=("L", "N", "Zs"), include_characters=".,!?"),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() and ":" not in s)


def test_splits_content_from_trailing_tag_line() -> None:
    parsed = parse_text(
        "Untangled the scheduler bug with a friend.\nwarmth:9 clarity:10 frustration:2"
    )
    assert parsed.content == "Untangled the scheduler bug with a friend."
    assert parsed.tags == {"warmth": 9.0, "clarity": 10.0, "frustration": 2.0}
    assert parsed.malformed == ()


def test_malformed_tokens_are_counted_and_the_line_stays_out_of_content() -> None:
    parsed = parse_text("A long day of reviews.\nwarmth:nine joy:11 calm:-1 awe:9.5")
    assert parsed.content == "A long day of reviews."
    assert parsed.tags == {"awe": 9.5}
    assert parsed.malformed == ("warmth:nine", "joy:11", "calm:-1")


def test_several_tag_lines_and_repeated_names_take_the_last_score() -> None:
    parsed = parse_text("Text body here.\nwarmth:8\nclarity:9 warmth:3  \n\n")
    assert parsed.content == "Text body here."
    assert parsed.tags == {"warmth": 3.0, "clarity": 9.0}


def test_scan_stops_at_the_first_line_that_is_not_tags() -> None:
    parsed = parse_text("joy:9\nA sentence in between: with words.\ncalm:8")
    assert parsed.content == "joy:9\nA sentence in between: with words."
    assert parsed.tags == {"calm": 8.0}


def test_names_are_lower_cased_and_must_start_with_a_letter() -> None:
    parsed = parse_text("Body text.\nWarmth:9 9lives:5 self-doubt:4 under_score:7")
    assert parsed.tags == {"warmth": 9.0, "self-doubt": 4.0, "under_score": 7.0}
    assert parsed.malformed == ("9lives:5",)


def test_untagged_text_is_all_content() -> None:
    parsed = parse_text("Just a note.\nNo tags here at all.")
    assert parsed.tags == {}
    assert parsed.content == "Just a note.\nNo tags here at all."


@given(st.lists(content_line, min_size=1, max_size=4), st.dictionaries(names, scores, min_size=1))
def test_round_trip_recovers_tags_and_content(lines: list[str], tags: dict[str, int]) -> None:
    content = "\n".join(lines).strip()
    tag_line = " ".join(f"{name}:{score}" for name, score in tags.items())
    parsed = parse_text(f"{content}\n{tag_line}")
    assert parsed.tags == {name: float(score) for name, score in tags.items()}
    assert parsed.content == content
    # The tag line itself never leaks into what the model sees.
    assert not re.search(r"\b[a-z][a-z0-9_-]*:\d+\b", parsed.content)


@given(st.text(max_size=300))
def test_never_crashes_and_tags_are_valid(text: str) -> None:
    parsed = parse_text(text)
    for name, score in parsed.tags.items():
        assert re.fullmatch(r"[a-z][a-z0-9_-]*", name)
        assert 0.0 <= score <= 10.0
    assert parsed.content == parsed.content.strip()


@given(
    st.lists(content_line, min_size=1, max_size=3),
    st.lists(
        st.one_of(
            st.builds(lambda n, s: f"{n}:{s}", names, scores),
            st.builds(lambda n: f"{n}:eleven", names),
            st.builds(lambda n, s: f"{n}:{s}", names, st.integers(11, 99)),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_malformed_tokens_are_ignored_not_fatal(lines: list[str], tokens: list[str]) -> None:
    content = "\n".join(lines).strip()
    parsed = parse_text(content + "\n" + " ".join(tokens))
    assert parsed.content == content
    valid = [t for t in tokens if re.fullmatch(r"[a-z][a-z0-9_-]*:(10|\d)", t)]
    assert len(parsed.malformed) == len(tokens) - len(valid)


def test_aliases_count_as_their_concept_and_the_higher_score_wins() -> None:
    parsed = parse_text("Body text here.\nlove:9 warmth:6 joy:8", {"love": "warmth"})
    assert parsed.tags == {"warmth": 9.0, "joy": 8.0}
    assert parse_text("Body.\nlove:4 warmth:7", {"love": "warmth"}).tags == {"warmth": 7.0}
