"""The chain of an account's journal entries: each entry carries the SHA-256 of its own
content and of the entry before it in the same account, so that changing, removing or
reordering a booked entry shows (docs/ledger.md).

1. An account's entries are numbered 1, 2, 3, ... in the order they were booked: their
   `sequence`. The accounts row keeps the chain's length and its last hash (the head).
2. An entry's content is its canonical bytes (`entry_bytes`), which include the hash of
   the entry before it; the first entry's previous hash is 32 zero bytes (`GENESIS`).
3. Its hash is the SHA-256 of those bytes; the account's head becomes that hash.

The encoding, field by field, all integers big-endian:

    "credit.journal.v1"                    17 ASCII bytes, the version of the encoding
    previous_sha256                        32 bytes
    entry_id, account_id                   16 bytes each (the UUID's bytes)
    sequence                               int64
    created_at                             int64, microseconds since 1970-01-01T00:00:00Z
    kind                                   text
    reference_id                           16 bytes
    number of postings                     int32
    then per posting, in line order:
        line                               int32
        ledger_account                     text
        amount_minor                       int64, signed (debits positive)

where text is an int32 count of bytes and then the UTF-8 bytes. Migration 0017 defines
the same function in SQL (`journal_entry_sha256`), for writes that chain in the database.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from server.domain.errors import InvariantViolation

ENCODING_TAG = b"credit.journal.v1"
GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Line:
    """One posting of an entry, as it is hashed."""

    line: int
    ledger_account: str
    amount_minor: int


@dataclass(frozen=True)
class Head:
    """The end of an account's chain: how many entries it has and the last one's hash."""

    length: int
    sha256: bytes

    def __post_init__(self) -> None:
        if self.length < 0 or len(self.sha256) != 32:
            raise InvariantViolation(f"not a chain head: {self.length}, {self.sha256.hex()}")


@dataclass(frozen=True)
class Link:
    """An entry with its place in the chain."""

    entry_id: UUID
    account_id: UUID
    sequence: int
    created_at: datetime
    kind: str
    reference_id: UUID
    lines: tuple[Line, ...]
    previous_sha256: bytes

    def content(self) -> bytes:
        return entry_bytes(self)

    def sha256(self) -> bytes:
        return hashlib.sha256(entry_bytes(self)).digest()


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def microseconds(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive time is refused, not guessed."""
    if moment.tzinfo is None:
        raise InvariantViolation(f"a journal time without a zone: {moment}")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def entry_bytes(link: Link) -> bytes:
    """The canonical bytes of an entry (the module docstring gives the layout)."""
    return encode(link.previous_sha256, link.entry_id, link.account_id, link.sequence, link.created_at, link.kind,
                  link.reference_id, [(line.line, line.ledger_account, line.amount_minor) for line in link.lines])


def encode(previous_sha256: bytes, entry_id: UUID, account_id: UUID, sequence: int, created_at: datetime, kind: str,
           reference_id: UUID, lines: Sequence[tuple[int, str, int]]) -> bytes:
    """The canonical bytes of an entry from its fields, postings as (line, ledger
    account, amount) in line order: what the hot path hashes without building a Link."""
    if len(previous_sha256) != 32:
        raise InvariantViolation(f"entry {entry_id}: previous hash of {len(previous_sha256)} bytes")
    parts = [ENCODING_TAG, previous_sha256, entry_id.bytes, account_id.bytes,
             struct.pack(">qq", sequence, microseconds(created_at)), _text(kind), reference_id.bytes,
             struct.pack(">i", len(lines))]
    for line, ledger_account, amount_minor in lines:
        parts += [struct.pack(">i", line), _text(ledger_account), struct.pack(">q", amount_minor)]
    return b"".join(parts)


def entry_sha256(previous_sha256: bytes, entry_id: UUID, account_id: UUID, sequence: int, created_at: datetime,
                 kind: str, reference_id: UUID, lines: Sequence[tuple[int, str, int]]) -> bytes:
    """The hash of the entry `encode` gives the bytes of."""
    return hashlib.sha256(encode(previous_sha256, entry_id, account_id, sequence, created_at, kind, reference_id,
                                 lines)).digest()


@dataclass(frozen=True)
class Break:
    """Where a chain stops holding: the entry (None for the head on the accounts row),
    what is wrong with it, and what was found against what the chain expects."""

    account_id: UUID
    entry_id: UUID | None
    sequence: int
    problem: str
    found: str
    expected: str


def verify(account_id: UUID, links: list[tuple[Link, bytes]], head: Head) -> list[Break]:
    """The breaks in an account's chain: `links` are its entries in sequence order, each
    with the hash stored beside it; `head` is what the accounts row says."""
    breaks: list[Break] = []
    expected = Head(0, GENESIS)
    for link, stored in links:
        if link.sequence != expected.length + 1:
            breaks.append(Break(account_id, link.entry_id, link.sequence, "an entry is missing or out of order",
                                f"sequence {link.sequence}", f"sequence {expected.length + 1}"))
        elif link.previous_sha256 != expected.sha256:
            breaks.append(Break(account_id, link.entry_id, link.sequence,
                                "its previous hash is not the hash of the entry before it",
                                link.previous_sha256.hex(), expected.sha256.hex()))
        recomputed = link.sha256()
        if recomputed != stored:
            breaks.append(Break(account_id, link.entry_id, link.sequence, "its content does not match its hash",
                                stored.hex(), recomputed.hex()))
        expected = Head(link.sequence, stored)
    if head != expected:
        breaks.append(Break(account_id, None, head.length, "the account's head is not its journal's last entry",
                            f"entry {head.length} {head.sha256.hex()}",
                            f"entry {expected.length} {expected.sha256.hex()}"))
    return breaks
