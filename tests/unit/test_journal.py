"""The journal chain's encoding and its verification (server/domain/journal.py)."""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import journal
from server.domain.errors import InvariantViolation

ACCOUNT = uuid.UUID("8d0c3a4e-1b2f-4c5d-9e6f-0a1b2c3d4e5f")
AT = datetime(2027, 1, 15, 2, 0, 0, 123456, tzinfo=UTC)


def link(sequence: int, previous: bytes, *, amount_minor: int = 129_900, kind: str = "LOAN_CAPTURED") -> journal.Link:
    return journal.Link(
        entry_id=uuid.UUID(int=sequence), account_id=ACCOUNT, sequence=sequence, created_at=AT, kind=kind,
        reference_id=uuid.UUID(int=1000 + sequence),
        lines=(journal.Line(1, "PRINCIPAL_RECEIVABLE", amount_minor),
               journal.Line(2, "MERCHANT_PAYABLE", -amount_minor)),
        previous_sha256=previous)


def chain(n: int) -> list[tuple[journal.Link, bytes]]:
    links, previous = [], journal.GENESIS
    for sequence in range(1, n + 1):
        entry = link(sequence, previous)
        previous = entry.sha256()
        links.append((entry, previous))
    return links


def test_the_bytes_are_the_documented_layout():
    entry = link(1, journal.GENESIS)
    expected = (b"credit.journal.v1" + bytes(32) + uuid.UUID(int=1).bytes + ACCOUNT.bytes
                + struct.pack(">q", 1) + struct.pack(">q", calendar.timegm(AT.utctimetuple()) * 1_000_000 + 123_456)
                + struct.pack(">i", 13) + b"LOAN_CAPTURED" + uuid.UUID(int=1001).bytes + struct.pack(">i", 2)
                + struct.pack(">i", 1) + struct.pack(">i", 20) + b"PRINCIPAL_RECEIVABLE" + struct.pack(">q", 129_900)
                + struct.pack(">i", 2) + struct.pack(">i", 16) + b"MERCHANT_PAYABLE" + struct.pack(">q", -129_900))
    assert entry.content() == expected
    assert entry.sha256() == hashlib.sha256(expected).digest()


def test_times_before_the_epoch_and_naive_times():
    assert journal.microseconds(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    with pytest.raises(InvariantViolation):
        journal.microseconds(datetime(2027, 1, 1))


@given(st.sampled_from(["entry_id", "account_id", "sequence", "created_at", "kind", "reference_id", "lines",
                        "previous_sha256"]), st.integers(min_value=1, max_value=10**9))
def test_every_covered_field_changes_the_hash(field: str, n: int):
    entry = link(1, journal.GENESIS)
    changed: Any = {
        "entry_id": uuid.UUID(int=n + 1), "account_id": uuid.UUID(int=n), "sequence": n + 1,
        "created_at": datetime.fromtimestamp(n, tz=UTC), "kind": f"K{n}", "reference_id": uuid.UUID(int=n + 10**10),
        "lines": (journal.Line(1, "PRINCIPAL_RECEIVABLE", n), journal.Line(2, "MERCHANT_PAYABLE", -n))
        if n != 129_900 else (), "previous_sha256": hashlib.sha256(str(n).encode()).digest(),
    }[field]
    assert dataclasses.replace(entry, **{field: changed}).sha256() != entry.sha256()


def test_text_fields_are_length_prefixed_so_bytes_cannot_move_between_them():
    a = dataclasses.replace(link(1, journal.GENESIS), lines=(journal.Line(1, "AB", 5), journal.Line(2, "C", -5)))
    b = dataclasses.replace(link(1, journal.GENESIS), lines=(journal.Line(1, "A", 5), journal.Line(2, "BC", -5)))
    assert a.sha256() != b.sha256()


def test_an_intact_chain_verifies():
    links = chain(4)
    assert journal.verify(ACCOUNT, links, journal.Head(4, links[-1][1])) == []
    assert links[1][0].previous_sha256 == links[0][1]


def test_verify_names_each_kind_of_break():
    links = chain(5)
    head = journal.Head(5, links[-1][1])
    edited = list(links)
    edited[2] = (dataclasses.replace(links[2][0], lines=(journal.Line(1, "PRINCIPAL_RECEIVABLE", 1),
                                                         journal.Line(2, "MERCHANT_PAYABLE", -1))), links[2][1])
    (broken,) = journal.verify(ACCOUNT, edited, head)
    assert (broken.entry_id, broken.sequence) == (uuid.UUID(int=3), 3)
    assert "content" in broken.problem

    missing = links[:2] + links[3:]
    (broken,) = journal.verify(ACCOUNT, missing, head)
    assert broken.entry_id == uuid.UUID(int=4) and "missing or out of order" in broken.problem

    (broken,) = journal.verify(ACCOUNT, links[:4], head)
    assert broken.entry_id is None and broken.found.startswith("entry 5 ") and broken.expected.startswith("entry 4 ")

    relinked = links[:2] + [(dataclasses.replace(links[2][0], previous_sha256=links[0][1]), links[2][1])] + links[3:]
    problems = [b.problem for b in journal.verify(ACCOUNT, relinked, head)]
    assert problems[0] == "its previous hash is not the hash of the entry before it"

    assert journal.verify(ACCOUNT, [], journal.Head(0, journal.GENESIS)) == []
    assert len(journal.verify(ACCOUNT, [], journal.Head(1, links[0][1]))) == 1

