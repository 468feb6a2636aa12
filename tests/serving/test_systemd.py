"""The systemd units: the directives the daemon relies on, `verify` clean, exposure <= 3.0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.core.config import ServerConfig
from amygdala_daemon.serving.limits import FD_HEADROOM
from tests.helpers import ROOT

UNITS = ROOT / "systemd"
DAEMON = "amygdala-daemon.service"
REBUILD = "amygdala-daemon-rebuild.service"
INSTALLED = "/opt/amygdala-daemon/venv/bin/amygdala-daemon"
STATE_DIR = "/var/lib/amygdala-daemon"
MAX_EXPOSURE = 3.0
# Everything that confines the process must be the same for the daemon and the rebuild.
SHARED = (
    "User",
    "Group",
    "Environment",
    "WorkingDirectory",
    "StateDirectory",
    "StateDirectoryMode",
    "CacheDirectory",
    "CacheDirectoryMode",
    "ConfigurationDirectory",
    "ConfigurationDirectoryMode",
    "UMask",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "PrivateDevices",
    "DevicePolicy",
    "PrivateUsers",
    "PrivateIPC",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RemoveIPC",
    "KeyringMode",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "MemoryDenyWriteExecute",
)

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value in order (systemd keys may repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: keep directives on one line"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"line {number}: {raw!r}"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text(encoding="utf-8"))


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, found {values}"
    return values[0]


def words(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [word for value in unit.get(section, {}).get(key, []) for word in value.split()]


def test_daemon_unit_carries_the_required_directives() -> None:
    unit = load(DAEMON)
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") in {"main", "exec", "all"}
    assert one(unit, "WatchdogSec") not in {"", "0", "infinity"}
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "StateDirectory") == Path(STATE_DIR).name
    assert one(unit, "UMask") == "0022"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "TimeoutStopSec") not in {"", "0"}
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "PrivateTmp") == "yes"
    assert one(unit, "ProtectHome") == "yes"
    assert one(unit, "CapabilityBoundingSet") == ""
    assert words(unit, "RestrictAddressFamilies") == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "@system-service" in words(unit, "SystemCallFilter")
    assert "AMYGDALA_CONFIG=/etc/amygdala-daemon/config.toml" in words(unit, "Environment")
    assert one(unit, "ExecStart") == f"{INSTALLED} --state-dir {STATE_DIR} run"
    # Room for the default websocket cap and what the daemon keeps open besides.
    default_cap = ServerConfig().max_connections
    assert int(one(unit, "LimitNOFILE")) >= default_cap + FD_HEADROOM
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


def test_rebuild_unit_never_runs_beside_the_daemon_and_is_confined_the_same() -> None:
    daemon, rebuild = load(DAEMON), load(REBUILD)
    assert one(rebuild, "Type") == "oneshot"
    assert one(rebuild, "ExecStart") == f"{INSTALLED} --state-dir {STATE_DIR} rebuild"
    # Conflicts= stops the daemon; the ordering makes that stop finish before rebuild starts.
    assert DAEMON in words(rebuild, "Conflicts", "Unit")
    assert DAEMON in words(rebuild, "After", "Unit") + words(rebuild, "Before", "Unit")
    assert "Restart" not in rebuild["Service"]
    for key in SHARED:
        assert key in daemon["Service"], f"{DAEMON} lacks {key}="
        assert rebuild["Service"].get(key) == daemon["Service"][key], f"{key}= differs"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "--no-pager", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=cwd,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def local_copy(name: str, directory: Path) -> Path:
    """The unit with only its ExecStart= executable pointed at this venv's, which exists."""
    executable = Path(sys.executable).parent / "amygdala-daemon"
    assert executable.is_file(), f"{executable} is missing: install the package (pip install -e .)"
    original = (UNITS / name).read_text(encoding="utf-8").splitlines(keepends=True)
    rewritten = [
        line.replace(f"={INSTALLED} ", f"={executable} ", 1)
        if line.startswith("ExecStart=")
        else line
        for line in original
    ]
    changed = [new for old, new in zip(original, rewritten, strict=True) if old != new]
    assert len(changed) == 1, f"expected one ExecStart= to rewrite in {name}, changed {changed}"
    copy = directory / name
    copy.write_text("".join(rewritten), encoding="utf-8")
    return copy


def test_units_pass_systemd_analyze_verify_silently(tmp_path: Path) -> None:
    systemd_analyze()
    copies = [str(local_copy(name, tmp_path)) for name in (DAEMON, REBUILD)]
    result = analyze("verify", *copies, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("name", [DAEMON, REBUILD])
def test_exposure_is_at_most_3(name: str, tmp_path: Path) -> None:
    systemd_analyze()
    result = analyze("security", "--offline=yes", str(UNITS / name), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+(?:\.\d+)?)", output)
    assert match is not None, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output
