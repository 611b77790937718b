"""The local SMTP sink as `make run` and operators start it: a process of its own whose
output is JSON lines like every other process's, aiosmtpd's own log included."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage

from tests.e2e.conftest import ROOT, free_port

RECIPIENT = "zhang.wei@example.com"


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the mail sink exited at start"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the mail sink did not listen on {port} within {timeout_s} s")


def test_the_mail_sink_logs_json_lines_and_each_message_it_keeps(tmp_path):
    port, folder = free_port(), tmp_path / "mail"
    stdout, stderr = open(tmp_path / "stdout", "wb"), open(tmp_path / "stderr", "wb")
    sink = subprocess.Popen(
        [sys.executable, "-m", "collections_bot.mail_sink", "--host", "127.0.0.1", "--port", str(port),
         "--folder", str(folder)],
        cwd=ROOT, env={**os.environ, "LOG_LEVEL": "info"}, stdout=stdout, stderr=stderr)
    stdout.close()
    stderr.close()
    try:
        wait_for_port(port, sink)
        message = EmailMessage()
        message["From"] = "Credit Reminders <reminders@credit.example>"
        message["To"] = RECIPIENT
        message["Subject"] = "Your installment is due"
        message.set_content("Please pay.")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.send_message(message)
    finally:
        sink.send_signal(signal.SIGTERM)
        returncode = sink.wait(30)
    output = (tmp_path / "stdout").read_text() + (tmp_path / "stderr").read_text()
    assert returncode == 0, output

    lines = output.splitlines()
    assert lines, "the mail sink wrote nothing"
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    for event in events:
        assert {"event", "level", "timestamp"} <= event.keys(), event
        assert event["level"] in {"debug", "info", "warning", "error", "critical"}, event
    names = [e["event"] for e in events]
    assert "mail_sink_started" in names and names[-1] == "mail_sink_stopped", names
    # aiosmtpd's own lines (the session, the envelope) are among them.
    assert any(e.get("logger") == "mail.log" for e in events), events

    [kept] = [p.name for p in folder.iterdir()]
    [stored] = [e for e in events if e["event"] == "mail_stored"]
    assert stored["file"] == kept and stored["recipients"] == 1 and stored["bytes"] > 0, stored
    # The envelope's addresses reach the log masked, like every other log line's.
    assert RECIPIENT not in output and "[email]" in output
