"""The one error a source raises when it cannot be read as a whole."""

from __future__ import annotations

from amygdala_daemon.core.errors import AmygdalaError


class SourceError(AmygdalaError):
    """The source as a whole cannot be read right now (missing file, server down)."""

    exit_code = 2
