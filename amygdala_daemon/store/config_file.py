"""Reading the TOML configuration file (or `$AMYGDALA_CONFIG`, or the defaults)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from amygdala_daemon.core.config import Config, from_dict
from amygdala_daemon.core.errors import ConfigError


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
    # A relative state_dir in a config file means relative to the working directory, as
    # systemd's WorkingDirectory= or the shell sets it; nothing to resolve here.
    return config
