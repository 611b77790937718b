"""Partners' daily settlements: what the platform collected for a funding partner on a
settlement day, what the partner lent that day, and the net to transfer; and the
settlement file (CSV) of a day, written by `python -m server.funding settle` or by the
collections bot (SETTLEMENT_DIR)."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from server.db import acquire
from server.db import funding as funding_rows
from server.domain.calendar import local_date
from server.domain.errors import NotFound

log = structlog.get_logger(__name__)

# The platform's business day, in which partners are settled.
SETTLEMENT_TIME_ZONE = "Asia/Shanghai"
# Rows read per statement when a file is written.
PAGE_SIZE = 1_000
# How many closed days the bot looks back for files not yet written.
CATCH_UP_DAYS = 7

FIELDS = ("date", "partner_id", "line", "kind", "loan_id", "reference_id", "created_at", "principal_minor",
          "fee_minor", "penalty_minor", "recovery_minor", "amount_minor")


@dataclass(frozen=True)
class PartnerSettlement:
    partner_id: str
    day: date
    # Collected for the partner, less what was given back (a refund of paid fees).
    principal_minor: int
    fee_minor: int
    penalty_minor: int
    # Its share of insurance claims on loans charged off.
    recovery_minor: int
    items: int
    # What it lent that day: its part of the loans it co-funded.
    funded_principal_minor: int
    loans_funded: int

    @property
    def collected_minor(self) -> int:
        return self.principal_minor + self.fee_minor + self.penalty_minor + self.recovery_minor

    @property
    def net_transfer_minor(self) -> int:
        """What the platform pays the partner for the day (negative: the partner pays
        the platform): collections less the partner's part of new loans."""
        return self.collected_minor - self.funded_principal_minor


@contextmanager
def csv_file(path: Path) -> Iterator[Any]:
    """A CSV writer whose rows reach `path` whole or not at all: written to a temporary
    file beside it, synced and renamed when the block ends without an error, so a
    reader never sees half a file and a second writer of the same file (another bot
    replica) replaces it with the same content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with partial.open("w", newline="", encoding="utf-8") as out:
            yield csv.writer(out)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The instants a settlement day starts and ends."""
    zone = ZoneInfo(SETTLEMENT_TIME_ZONE)
    return datetime.combine(day, time(), zone), datetime.combine(day + timedelta(days=1), time(), zone)


async def settlement(conn: asyncpg.Connection, partner_id: str, day: date) -> PartnerSettlement:
    if await funding_rows.partner(conn, partner_id) is None:
        raise NotFound("partner_id", partner_id, "funding partner")
    start, end = day_bounds(day)
    collected, funded = await funding_rows.settlement_totals(conn, partner_id, start, end)
    return PartnerSettlement(
        partner_id=partner_id, day=day, principal_minor=collected["principal_minor"], fee_minor=collected["fee_minor"],
        penalty_minor=collected["penalty_minor"], recovery_minor=collected["recovery_minor"],
        items=collected["items"], funded_principal_minor=funded["funded_principal_minor"],
        loans_funded=funded["loans"])


async def write_csv(conn: asyncpg.Connection, partner_id: str, day: date, path: Path) -> PartnerSettlement:
    """Write a day's settlement file: one ITEM line per event that collected for the
    partner (or gave back), one FUNDED line per loan it co-funded (amount negative: it
    owes its part), then a TOTAL line whose amount is the net to transfer. Whole or
    not at all (`csv_file`)."""
    result = await settlement(conn, partner_id, day)
    start, end = day_bounds(day)
    with csv_file(path) as writer:
        writer.writerow(FIELDS)
        after = (start - timedelta(microseconds=1), uuid.UUID(int=0))
        while rows := await funding_rows.settlement_items_page(conn, partner_id, start, end, after, PAGE_SIZE):
            for r in rows:
                amount = r["principal_minor"] + r["fee_minor"] + r["penalty_minor"] + r["recovery_minor"]
                writer.writerow((day.isoformat(), partner_id, "ITEM", r["kind"], r["loan_id"], r["reference_id"],
                                 r["created_at"].isoformat(), r["principal_minor"], r["fee_minor"],
                                 r["penalty_minor"], r["recovery_minor"], amount))
            after = (rows[-1]["created_at"], rows[-1]["item_id"])
        after = (start - timedelta(microseconds=1), uuid.UUID(int=0))
        while rows := await funding_rows.settlement_funded_page(conn, partner_id, start, end, after, PAGE_SIZE):
            for r in rows:
                writer.writerow((day.isoformat(), partner_id, "FUNDED", "LOAN_CO_FUNDED", r["loan_id"],
                                 r["loan_id"], r["created_at"].isoformat(), -r["funded_principal_minor"], 0, 0,
                                 0, -r["funded_principal_minor"]))
            after = (rows[-1]["created_at"], rows[-1]["loan_id"])
        writer.writerow((day.isoformat(), partner_id, "TOTAL", "", "", "", "",
                         result.principal_minor - result.funded_principal_minor, result.fee_minor,
                         result.penalty_minor, result.recovery_minor, result.net_transfer_minor))
    return result


def file_name(partner_id: str, day: date) -> str:
    return f"settlement-{partner_id}-{day.isoformat()}.csv"


async def write_due_files(pool: asyncpg.Pool, folder: Path, now: datetime) -> int:
    """Write the files of every partner for the closed days of the last CATCH_UP_DAYS
    that have none yet (a day closes at midnight in the settlement zone). Returns the
    number written."""
    today = local_date(now, SETTLEMENT_TIME_ZONE)
    written = 0
    async with acquire(pool) as conn:
        partners = [r["partner_id"] for r in await funding_rows.partners(conn)]
        for back in range(CATCH_UP_DAYS, 0, -1):
            day = today - timedelta(days=back)
            for partner_id in partners:
                path = folder / file_name(partner_id, day)
                if path.exists():
                    continue
                result = await write_csv(conn, partner_id, day, path)
                written += 1
                log.info("settlement_file_written", partner_id=partner_id, day=day.isoformat(), path=str(path),
                         net_transfer_minor=result.net_transfer_minor)
    return written
