"""Hooks after a publish: a command and an HTTP POST. A failing hook is reported, never fatal.

Hooks run after the generation is live; nothing they do can block or undo it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from amygdala_daemon.core.config import NotifyConfig
from amygdala_daemon.core.manifest import MANIFEST_FILE, VECTORS_FILE

log = logging.getLogger(__name__)


def published_event(generation_dir: Path) -> dict[str, Any]:
    """What a hook is told about a generation."""
    manifest = json.loads((generation_dir / MANIFEST_FILE).read_text())
    return {
        "generation": int(manifest["generation"]),
        "path": str(generation_dir),
        "vectors": str(generation_dir / VECTORS_FILE),
        "manifest": str(generation_dir / MANIFEST_FILE),
        "concepts": len(manifest["concepts"]),
    }


def hook_environment(event: dict[str, Any]) -> dict[str, str]:
    return {
        "AMYGDALA_GENERATION": str(event["generation"]),
        "AMYGDALA_PATH": str(event["path"]),
        "AMYGDALA_VECTORS": str(event["vectors"]),
        "AMYGDALA_MANIFEST": str(event["manifest"]),
        "AMYGDALA_CONCEPTS": str(event["concepts"]),
    }


def run_command(argv: list[str], event: dict[str, Any], timeout_s: float) -> str | None:
    """Run the command hook; None on success, else why it failed."""
    try:
        completed = subprocess.run(
            argv,
            env={**os.environ, **hook_environment(event)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"notify.command timed out after {timeout_s:g}s"
    except OSError as exc:
        return f"notify.command could not start: {exc.strerror}"
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"notify.command exited {completed.returncode}: {tail[0]}"
    return None


def post_url(url: str, event: dict[str, Any], timeout_s: float, retries: int) -> str | None:
    """POST the event as JSON, retrying with exponential backoff; None on success."""
    body = json.dumps({"event": "published", **event}).encode()
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return None
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
    return f"notify.url failed after {retries + 1} attempts: {problem}"


def fire(config: NotifyConfig, event: dict[str, Any]) -> list[str]:
    """Run every configured hook; return the failures (already logged)."""
    failures = []
    if config.command:
        failure = run_command(config.command, event, config.timeout_s)
        if failure:
            failures.append(failure)
    if config.url:
        failure = post_url(config.url, event, config.timeout_s, config.retries)
        if failure:
            failures.append(failure)
    for failure in failures:
        log.warning("publish hook: %s", failure)
    return failures
