from __future__ import annotations

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.labels import KnownConcepts, is_eligible, label_node, mention_count

BODY = "A long enough paragraph of content about the day we shipped it."


def test_eligibility_needs_a_valid_tag_and_enough_content() -> None:
    settings = LabelsConfig()
    assert is_eligible({"joy": 9}, BODY, settings)
    assert not is_eligible({}, BODY, settings)
    assert not is_eligible({"joy": 9}, "Too short.", settings)


def test_positive_ignored_and_excluded() -> None:
    known = KnownConcepts(["joy", "calm", "warmth"])
    labels = label_node({"joy": 9, "calm": 5}, BODY, known, LabelsConfig())
    assert labels.positive == {"joy"}
    # calm is tagged below the positive threshold: ignored, so excluded from negatives.
    assert labels.excluded_from_negatives == {"joy", "calm"}


def test_max_negative_score_turns_low_scores_into_negatives() -> None:
    known = KnownConcepts(["joy", "calm"])
    settings = LabelsConfig(max_negative_score=3)
    labels = label_node({"joy": 9, "calm": 2}, BODY, known, settings)
    assert labels.excluded_from_negatives == {"joy"}


def test_mentions_exclude_from_negatives_whole_word_case_insensitive() -> None:
    known = KnownConcepts(["joy", "calm", "self-doubt"])
    content = "No Joy today, but joyful moments; Self-doubt crept in. calmness is not calm"
    labels = label_node({"warmth": 8}, content, known, LabelsConfig())
    assert labels.excluded_from_negatives == {"warmth", "joy", "self-doubt", "calm"}
    assert mention_count(content, "joy") == 1
    assert mention_count(content, "calm") == 1
    assert mention_count(content, "self-doubt") == 1
    loose = label_node({"warmth": 8}, content, known, LabelsConfig(max_negative_mentions=1))
    assert loose.excluded_from_negatives == {"warmth"}


def test_known_concepts_index() -> None:
    known = KnownConcepts()
    assert known.add("joy") and not known.add("joy")
    known.add("self-doubt")
    assert "joy" in known and len(known) == 2
    assert known.compound == ["self-doubt"]
