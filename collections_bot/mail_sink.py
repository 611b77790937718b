"""A local SMTP server (aiosmtpd) that keeps every message it receives as an .eml file,
for development (`make run`) and tests. It can be told to answer with SMTP error codes
first, to exercise retries and permanent failures.

    python -m collections_bot.mail_sink --port 2525 --folder var/mail

It logs JSON lines on standard error like the other processes (LOG_LEVEL, default
info), aiosmtpd's own log included: one `mail_stored` line per message kept.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import structlog
from aiosmtpd.controller import Controller

from server.config import SettingsError, log_level_setting
from server.logging import configure_logging, json_stdlib_loggers

log = structlog.get_logger("mail_sink")


class MailSink:
    """An aiosmtpd handler: stores messages in memory and, if given a folder, as
    .eml files; `fail_next` holds replies (such as "451 try later") for the next DATA
    commands before mail is accepted again."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.messages: list[email.message.EmailMessage] = []
        self.fail_next: deque[str] = deque()
        self.data_commands = 0
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self.data_commands += 1
            if self.fail_next:
                reply = self.fail_next.popleft()
                log.info("mail_refused", reply=reply)
                return reply
            content = envelope.original_content or envelope.content
            message = email.message_from_bytes(content, policy=email.policy.default)
            self.messages.append(message)
            name = None
            if self.folder is not None:
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(self.messages):05d}.eml"
                (self.folder / name).write_bytes(content)
        # No addresses, subject or Message-ID: the file holds the message.
        log.info("mail_stored", file=name, bytes=len(content), recipients=len(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def start(host: str, port: int, folder: Path | None = None) -> tuple[Controller, MailSink]:
    sink = MailSink(folder)
    controller = Controller(sink, hostname=host, port=port)
    controller.start()
    return controller, sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--folder", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    try:
        log_level = log_level_setting(os.environ)
    except SettingsError as error:
        sys.exit(f"bad setting: {error}")
    configure_logging(log_level)
    json_stdlib_loggers("mail")  # aiosmtpd logs under mail.log and mail.debug
    controller, _ = start(args.host, args.port, args.folder)
    log.info("mail_sink_started", address=f"{args.host}:{args.port}", folder=str(args.folder))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    log.info("mail_sink_stopped")


if __name__ == "__main__":
    main()
