"""notify.py: the command and HTTP hooks a publish fires, under a real daemon."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.helpers.daemon import DaemonProcess, request, wait_for
from tests.helpers.graphs import sample_nodes

# Each test starts a real daemon subprocess.
pytestmark = pytest.mark.slow


class _Capture(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_notify_hooks_fire_and_a_hanging_hook_delays_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    record = tmp_path / "hook-env.jsonl"
    script = (
        "import json, os, sys, time; "
        f"open({str(record)!r}, 'a').write(json.dumps({{k: v for k, v in os.environ.items() "
        "if k.startswith('AMYGDALA_')}) + '\\n'); "
        "time.sleep(30 if os.environ['AMYGDALA_GENERATION'] == '2' else 0)"
    )
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        sample_nodes()[:60],
        notify={
            "command": [sys.executable, "-c", script],
            "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
            "timeout_s": 3.0,
        },
        server={"force_publish_interval": 0},  # two forced publishes back to back
    )
    daemon.start()
    try:
        client = daemon.client()
        wait_for(daemon.generation, what="the first generation")
        wait_for(lambda: record.exists() and _Capture.bodies, what="the first hooks")
        env = json.loads(record.read_text().splitlines()[0])
        manifest = json.loads(Path(env["AMYGDALA_MANIFEST"]).read_text())
        assert env["AMYGDALA_GENERATION"] == "1" == str(manifest["generation"])
        assert env["AMYGDALA_CONCEPTS"] == str(len(manifest["concepts"]))
        assert Path(env["AMYGDALA_VECTORS"]).is_file() and Path(env["AMYGDALA_MANIFEST"]).is_file()
        assert _Capture.bodies[0]["event"] == "published" and _Capture.bodies[0]["generation"] == 1
        # Generation 2's command hangs; generation 3 is published before it times out.
        events = []
        assert request(client, {"op": "publish", "force": True})["generation"] == 2
        third = request(client, {"op": "publish", "force": True})
        assert third["ok"] and third["generation"] == 3
        while True:
            event = json.loads(client.recv(timeout=30))
            events.append(event)
            if event.get("event") == "error":
                break
        assert "notify.command timed out after 3s" in event["error"] and event["generation"] == 2
        assert daemon.generation() == 3, "the failing hook undid nothing"
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        server.shutdown()
        server.server_close()
