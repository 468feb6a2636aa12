"""schedule.py: `publish.interval` parsing and the debounce decision, as plain functions."""

from __future__ import annotations

import pytest

from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.core.schedule import (
    DebounceState,
    PublishSchedule,
    debounce_due,
    parse_interval,
    poll_timeout,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2d", 172_800.0),
        ("250ms", 0.25),
        ("45", 45.0),  # no unit: seconds
        (" 10 s ", 10.0),
    ],
)
def test_durations_become_seconds(text: str, seconds: float) -> None:
    assert parse_interval(text) == PublishSchedule(interval_s=seconds, cron=None)


@pytest.mark.parametrize("text", ["*/10 * * * *", "0 9 * * MON-FRI", "5,35 1-3 * * *"])
def test_five_fields_are_a_cron_expression(text: str) -> None:
    assert parse_interval(f"  {text} ") == PublishSchedule(interval_s=None, cron=text)


def test_a_zero_duration_is_refused_by_key() -> None:
    with pytest.raises(ConfigError, match="must be a positive duration") as refused:
        parse_interval("0s")
    assert refused.value.key == "publish.interval"
    assert str(refused.value).startswith("config: publish.interval: '0s'")


@pytest.mark.parametrize("text", ["365d", f"{365 * 24}h"])
def test_a_year_is_the_longest_interval(text: str) -> None:
    assert parse_interval(text).interval_s == 365 * 86400.0


@pytest.mark.parametrize("text", ["366d", "99999999999d", f"{366 * 86400}s"])
def test_a_longer_interval_is_refused_by_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"longer than the maximum 365d") as refused:
        parse_interval(text)
    assert refused.value.key == "publish.interval"


@pytest.mark.parametrize("text", ["", "5 minutes", "-5m", "5w", "* * * *", "* * * * * *", "1h30m"])
def test_anything_else_names_both_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"neither a duration .* nor a 5-field cron") as refused:
        parse_interval(text)
    assert refused.value.key == "publish.interval"


def test_debounce_waits_for_enough_changes_and_a_quiet_period() -> None:
    quiet_for = 2.0
    state = DebounceState(pending_changes=3, last_change_at=100.0)
    assert not debounce_due(state, 101.9, quiet_for, publish_after_changes=1)
    assert debounce_due(state, 102.0, quiet_for, publish_after_changes=1)
    assert debounce_due(state, 500.0, quiet_for, publish_after_changes=3)
    assert not debounce_due(state, 500.0, quiet_for, publish_after_changes=4)


def test_debounce_is_off_without_a_change_or_without_a_delay() -> None:
    assert not debounce_due(DebounceState(), 1e9, 2.0, 0)
    assert not debounce_due(DebounceState(0, None), 1e9, 2.0, 0)
    waiting = DebounceState(pending_changes=50, last_change_at=0.0)
    assert not debounce_due(waiting, 1e9, 0.0, 1)
    assert not debounce_due(waiting, 1e9, -1.0, 1)
    assert debounce_due(waiting, 1e9, 0.001, 1)


def test_the_daemon_wakes_in_time_for_a_pending_publish() -> None:
    pending = DebounceState(pending_changes=1, last_change_at=5.0)
    assert poll_timeout(pending, 10.0, 2.0) == 2.0
    assert poll_timeout(pending, 1.0, 2.0) == 1.0, "never sleeps longer than the poll interval"
    assert poll_timeout(pending, 10.0, 0.0) == 10.0, "debounce off: the plain poll interval"
    assert poll_timeout(DebounceState(), 10.0, 2.0) == 10.0
