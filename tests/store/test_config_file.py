"""Reading the config file: a publish schedule is checked by the scheduler that will run it."""

from __future__ import annotations

from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.store.config_file import load, publish_trigger


def test_durations_and_cron_expressions_become_triggers() -> None:
    assert isinstance(publish_trigger("5m"), IntervalTrigger)
    assert isinstance(publish_trigger("365d"), IntervalTrigger)
    assert isinstance(publish_trigger("0 9 * * MON-FRI"), CronTrigger)


@pytest.mark.parametrize(
    ("interval", "problem"),
    [
        ("a b c d e", 'Invalid month name "d"'),
        ("61 * * * *", "higher than the maximum value (59)"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("99999999999d", "longer than the maximum 365d"),
    ],
)
def test_a_schedule_the_scheduler_refuses_is_a_config_error(
    tmp_path: Path, interval: str, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[publish]\ninterval = "{interval}"\n')
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert refused.value.key == "publish.interval"
    assert str(refused.value).startswith(f"config: publish.interval: {interval!r}")
    assert problem in str(refused.value)
