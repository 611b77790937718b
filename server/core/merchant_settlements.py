"""Merchants' settlement days: the merchant registry, what a merchant-day captured and
refunded across every customer account, the fee the merchant's category gives it, and
the day's file (CSV). The rule is server/domain/merchant_settlement.py; the day is the
partners' settlement day (Asia/Shanghai, server/core/settlements.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from server.core.settlements import csv_file, day_bounds
from server.db import merchants as merchant_rows
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.merchant_settlement import MerchantDay, MerchantSettlement, settle
from server.domain.pricing import MerchantCategory

log = structlog.get_logger(__name__)

# Rows read per statement when a file is written.
PAGE_SIZE = 1_000
# As Authorize takes it (server/services/fields.py, MAX_ID_LENGTH).
MAX_MERCHANT_ID_LENGTH = 128

FIELDS = ("date", "merchant_id", "line", "kind", "loan_id", "account_id", "reference_id", "created_at",
          "amount_minor")


@dataclass(frozen=True)
class MerchantDayView:
    merchant_id: str
    day: date
    settlement: MerchantSettlement


def _check_merchant_id(merchant_id: str) -> None:
    if not 1 <= len(merchant_id) <= MAX_MERCHANT_ID_LENGTH:
        raise InvalidArgument([FieldViolation("merchant_id", f"1 to {MAX_MERCHANT_ID_LENGTH} characters")])


async def register_merchant(conn: asyncpg.Connection, merchant_id: str, category: MerchantCategory,
                            now: datetime) -> None:
    """Name the merchant's category; registering again changes it for the days not yet
    settled."""
    _check_merchant_id(merchant_id)
    await merchant_rows.register(conn, merchant_id, category.value, now)
    log.info("merchant_registered", merchant_id=merchant_id, category=category.value)


async def category(conn: asyncpg.Connection, merchant_id: str) -> MerchantCategory:
    """The merchant's category; GENERAL for a merchant the registry does not name, so
    that checkout never refuses a merchant for want of a registration."""
    registered = await merchant_rows.category(conn, merchant_id)
    return MerchantCategory(registered) if registered else MerchantCategory.GENERAL


async def merchant_day(conn: asyncpg.Connection, merchant_id: str, day: date,
                       carried_in_minor: int = 0) -> MerchantDayView:
    """The merchant-day settled by the rule; NotFound when the merchant captured and
    refunded nothing that day."""
    _check_merchant_id(merchant_id)
    start, end = day_bounds(day)
    totals = await merchant_rows.day_totals(conn, merchant_id, start, end)
    if not totals["captures"] and not totals["refunds"]:
        raise NotFound("merchant_id", merchant_id, f"merchant with captures or refunds on {day.isoformat()}")
    booked = MerchantDay(captured_minor=totals["captured_minor"], refunded_minor=totals["refunded_minor"],
                         captures=totals["captures"], refunds=totals["refunds"])
    return MerchantDayView(merchant_id, day, settle(booked, await category(conn, merchant_id), carried_in_minor))


def file_name(merchant_id: str, day: date) -> str:
    return f"merchant-settlement-{merchant_id}-{day.isoformat()}.csv"


async def write_csv(conn: asyncpg.Connection, merchant_id: str, day: date, path: Path,
                    carried_in_minor: int = 0) -> MerchantDayView:
    """Write a merchant-day's file: one CAPTURE line per loan captured (amount positive),
    one REFUND line per refund (negative), a FEE line, a CARRIED_IN line, then a NET
    line whose amount is the day's net and a PAYMENT line (what is to be paid, never
    negative). Whole or not at all (`csv_file`)."""
    view = await merchant_day(conn, merchant_id, day, carried_in_minor)
    result = view.settlement
    start, end = day_bounds(day)
    when = day.isoformat()
    with csv_file(path) as writer:
        writer.writerow(FIELDS)
        after = (start - timedelta(microseconds=1), uuid.UUID(int=0))
        while rows := await merchant_rows.day_items_page(conn, merchant_id, start, end, after, PAGE_SIZE):
            for r in rows:
                writer.writerow((when, merchant_id, "ITEM", r["kind"], r["loan_id"], r["account_id"],
                                 r["item_id"], r["created_at"].isoformat(), r["amount_minor"]))
            after = (rows[-1]["created_at"], rows[-1]["item_id"])
        writer.writerow((when, merchant_id, "FEE", f"{result.category.value}:{result.fee_bps}", "", "", "", "",
                         -result.fee_minor))
        writer.writerow((when, merchant_id, "CARRIED_IN", "", "", "", "", "", result.carried_in_minor))
        writer.writerow((when, merchant_id, "NET", "", "", "", "", "", result.net_minor))
        writer.writerow((when, merchant_id, "PAYMENT", "", "", "", "", "", result.payment_minor))
    log.info("merchant_settlement_file_written", merchant_id=merchant_id, day=when, net_minor=result.net_minor)
    return view


async def merchants_of_day(conn: asyncpg.Connection, day: date) -> list[str]:
    """Every merchant with a capture or a refund on the day."""
    start, end = day_bounds(day)
    return await merchant_rows.merchants_of_day(conn, start, end)
