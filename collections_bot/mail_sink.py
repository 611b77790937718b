"""A local SMTP server (aiosmtpd) that keeps every message it receives as an .eml file,
for development (`make run`) and tests. It can be told to answer with SMTP error codes
first, to exercise retries and permanent failures.

    python -m collections_bot.mail_sink --port 2525 --folder var/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
import time
from collections import deque
from pathlib import Path

from aiosmtpd.controller import Controller


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
                return self.fail_next.popleft()
            message = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
            self.messages.append(message)
            if self.folder is not None:
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(self.messages):05d}.eml"
                (self.folder / name).write_bytes(envelope.original_content or envelope.content)
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
    controller, _ = start(args.host, args.port, args.folder)
    print(f"mail sink on {args.host}:{args.port}, writing to {args.folder}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
