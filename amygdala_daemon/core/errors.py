"""Exceptions that reach the user as one clear line."""

from __future__ import annotations


class AmygdalaError(Exception):
    """Base class: the message is shown as-is, without a traceback."""

    exit_code = 1


class ConfigError(AmygdalaError):
    """A configuration key has a value that is not accepted."""

    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key


class InputError(AmygdalaError):
    """Bad input from the user: a missing file, an unknown model, a layer past the model."""

    exit_code = 2


class LockedError(AmygdalaError):
    """Another process holds the state directory's writer lock."""

    exit_code = 1
