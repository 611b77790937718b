"""The simulator's book in a JSON file, so that a restart of `make run` keeps what the
processor knows: read once at start, written (whole, then renamed into place) at most
every WRITE_DELAY_S after a change, and once more at stop."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from google.protobuf import json_format

from server.domain.errors import InvariantViolation
from server.payment_sim.book import Book

WRITE_DELAY_S = 0.2


class StateFile:
    def __init__(self, path: Path, book: Book) -> None:
        self._path = path
        self._book = book
        self._timer: asyncio.TimerHandle | None = None

    def load(self) -> int:
        """Restore the book from the file, if there is one; the payments restored.
        A file that is not a book stops the simulator, naming it."""
        if not self._path.exists():
            return 0
        try:
            snapshot = json.loads(self._path.read_text())
            self._book.restore(snapshot)
        except (OSError, ValueError, KeyError, TypeError, json_format.ParseError, InvariantViolation) as error:
            raise SystemExit(f"{self._path}: not a payment simulator's state ({error}); "
                             "move it away to start afresh") from None
        return len(snapshot["payments"])

    def watch(self) -> None:
        """Write the file after each change of the book from now on."""
        self._book.on_change = self._changed

    def write(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_name(self._path.name + ".tmp")
        temporary.write_text(json.dumps(self._book.snapshot()))
        os.replace(temporary, self._path)

    def _changed(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self.write)
