"""Reading the TOML configuration file (or `$AMYGDALA_CONFIG`, or the defaults)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from amygdala_daemon.core.config import Config, from_dict
from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.core.schedule import parse_interval


def publish_trigger(interval: str) -> IntervalTrigger | CronTrigger:
    """`publish.interval` as the scheduler runs it; a ConfigError for what it would refuse.

    Built when the config is read, not first when the daemon schedules it: a value the
    scheduler refuses is then a config error at start and a refused reload, never a crash.
    """
    schedule = parse_interval(interval)
    try:
        if schedule.cron is not None:
            return CronTrigger.from_crontab(schedule.cron)
        assert schedule.interval_s is not None
        return IntervalTrigger(seconds=schedule.interval_s)
    except (ValueError, OverflowError) as exc:
        raise ConfigError("publish.interval", f"{interval!r}: {exc}") from None


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the TOML file at `path`, or `$AMYGDALA_CONFIG`, or use the defaults."""
    chosen = path if path is not None else os.environ.get("AMYGDALA_CONFIG")
    if not chosen:
        return from_dict({})
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read config file: {exc.strerror}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    config = from_dict(table)
    publish_trigger(config.publish.interval)
    # A relative state_dir in a config file means relative to the working directory, as
    # systemd's WorkingDirectory= or the shell sets it; nothing to resolve here.
    return config
