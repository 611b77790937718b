"""Merchants' settlement days: the merchant registry, what a merchant-day captured and
refunded across every customer account, the fee the merchant's category gives it, and
the day's file (CSV), and the settling of a closed day. The rule is
server/domain/merchant_settlement.py; the day is the partners' settlement day
(Asia/Shanghai, server/core/settlements.py).

Settling a merchant-day is one transaction: it reads the day's figures and what the
merchant's previous settled day carried out, records the day in `merchant_settlements`
(its key, (merchant, day), is what settles a day once across bot replicas: a second
insert waits for the first transaction and then finds the row), and posts in each
customer account involved the entry that moves the account's part of the day out of
MERCHANT_PAYABLE, through the ledger's posting function (each a link of that account's
chain)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from server.core.settlements import CATCH_UP_DAYS, SETTLEMENT_TIME_ZONE, csv_file, day_bounds
from server.db import acquire
from server.db import ledger as ledger_rows
from server.db import merchants as merchant_rows
from server.domain.calendar import local_date
from server.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, InvariantViolation, NotFound
from server.domain.identifiers import identifier_violation
from server.domain.ledger import merchant_day_settled
from server.domain.merchant_settlement import (
    MerchantDay,
    MerchantSettlement,
    SettlementStatus,
    fee_shares,
    settle,
)
from server.domain.payments import FailureReason
from server.domain.pricing import MerchantCategory

log = structlog.get_logger(__name__)

# Rows read per statement when a file is written.
PAGE_SIZE = 1_000
# How long after its midnight a day is settled: longer than any transaction that may
# have stamped a capture or a refund before midnight runs (the server's statement
# timeout, 15 s by default, and its idle-in-transaction timeout, 60 s).
CLOSING_GRACE = timedelta(minutes=10)
# Merchants settled per day and run: the rest are left to the next run.
SETTLE_BATCH_SIZE = 1_000

FIELDS = ("date", "merchant_id", "line", "kind", "loan_id", "account_id", "reference_id", "created_at",
          "amount_minor")


@dataclass(frozen=True)
class SettledDay:
    """What was recorded when the day settled."""

    settlement_id: uuid.UUID
    status: SettlementStatus
    payment_order_id: uuid.UUID | None
    paid_minor: int
    # The payment, when the day pays something: where to, how many were asked, and its
    # final result.
    payee_id: str | None = None
    payment_attempts: int = 0
    gateway_payment_id: str | None = None
    failure_reason: FailureReason | None = None
    completed_at: datetime | None = None

    @classmethod
    def of(cls, row: asyncpg.Record) -> SettledDay:
        return cls(row["settlement_id"], SettlementStatus(row["status"]), row["payment_order_id"],
                   row["paid_minor"], row["payee_id"], row["payment_attempts"], row["gateway_payment_id"],
                   FailureReason(row["failure_reason"]) if row["failure_reason"] else None, row["completed_at"])


@dataclass(frozen=True)
class MerchantDayView:
    merchant_id: str
    day: date
    settlement: MerchantSettlement
    # None while the day is not settled.
    settled: SettledDay | None = None


def _check_identifier(value: str, field: str) -> None:
    violation = identifier_violation(value, field)
    if violation:
        raise InvalidArgument([violation])


def _check_merchant_id(merchant_id: str) -> None:
    _check_identifier(merchant_id, "merchant_id")


async def register_merchant(conn: asyncpg.Connection, merchant_id: str, category: MerchantCategory,
                            now: datetime) -> None:
    """Name the merchant's category; registering again changes it for the days not yet
    settled."""
    _check_merchant_id(merchant_id)
    await merchant_rows.register(conn, merchant_id, category.value, now)
    log.info("merchant_registered", merchant_id=merchant_id, category=category.value)


# The merchants `make run` registers, one per scenario product with a fee of its own
# (a merchant not registered is GENERAL).
DEMO_MERCHANTS = {"school-2041": MerchantCategory.EDUCATION, "travel-2210": MerchantCategory.TRAVEL,
                  "gadget-4410": MerchantCategory.ELECTRONICS}


async def register_demo_merchants(conn: asyncpg.Connection, now: datetime) -> None:
    """Register the demonstration merchants that are not registered yet; an operator's
    later change to one stands."""
    for merchant_id, merchant_category in DEMO_MERCHANTS.items():
        if await merchant_rows.category(conn, merchant_id) is None:
            await register_merchant(conn, merchant_id, merchant_category, now)


async def set_payee(conn: asyncpg.Connection, merchant_id: str, payee_id: str, now: datetime) -> None:
    """Name where a registered merchant is paid at the gateway (by default its own id):
    the payments asked from then on go there."""
    _check_merchant_id(merchant_id)
    _check_identifier(payee_id, "payee_id")
    if await merchant_rows.set_payee(conn, merchant_id, payee_id, now) is None:
        raise NotFound("merchant_id", merchant_id, "registered merchant")
    log.info("merchant_payee_set", merchant_id=merchant_id, payee_id=payee_id)


async def payee(conn: asyncpg.Connection, merchant_id: str) -> str:
    return await merchant_rows.payee(conn, merchant_id)


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
    if day >= date.max:
        # Its end, the next midnight, is past the last date there is.
        raise InvalidArgument([FieldViolation("date", f"must be before {date.max.isoformat()}")])
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
    await _write_file(conn, view, path)
    return view


async def _write_file(conn: asyncpg.Connection, view: MerchantDayView, path: Path) -> None:
    merchant_id, day, result = view.merchant_id, view.day, view.settlement
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


async def merchants_of_day(conn: asyncpg.Connection, day: date) -> list[str]:
    """Every merchant with a capture or a refund on the day."""
    start, end = day_bounds(day)
    return await merchant_rows.merchants_of_day(conn, start, end)


async def settled_day(conn: asyncpg.Connection, merchant_id: str, day: date) -> MerchantDayView:
    """The merchant-day as it stands: once settled, its figures as they were settled
    (the category and fee then, even if the merchant's category changed since), with
    what it carried in and its status; before, with nothing carried in."""
    row = await merchant_rows.settlement(conn, merchant_id, day)
    if row is None:
        return await merchant_day(conn, merchant_id, day)
    view = await merchant_day(conn, merchant_id, day, row["carried_in_minor"])
    settled = replace(view.settlement, category=MerchantCategory(row["category"]), fee_bps=row["fee_bps"],
                      captured_minor=row["captured_minor"], refunded_minor=row["refunded_minor"],
                      fee_minor=row["fee_minor"])
    return MerchantDayView(merchant_id, day, settled, SettledDay.of(row))


@dataclass(frozen=True)
class AccountPart:
    """A customer account's part of a merchant-day: its captures less its refunds (what
    the day moved in its MERCHANT_PAYABLE) and its share of the day's fee."""

    account_id: uuid.UUID
    payable_minor: int
    fee_minor: int


async def _account_parts(conn: asyncpg.Connection, merchant_id: str, day: date, captured_minor: int,
                         refunded_minor: int, fee_minor: int) -> list[AccountPart]:
    """Each account's part of the day, by account id; the parts must add up to the day's
    figures, and the fee is shared by what each captured (`fee_shares`)."""
    start, end = day_bounds(day)
    rows = await merchant_rows.day_payable_by_account(conn, merchant_id, start, end)
    if (sum(r["payable_minor"] for r in rows) != captured_minor - refunded_minor
            or sum(r["captured_minor"] for r in rows) != captured_minor):
        raise InvariantViolation(f"merchant {merchant_id} on {day}: accounts' parts {rows} do not add up to "
                                 f"{captured_minor} - {refunded_minor}")
    fees = fee_shares(fee_minor, [r["captured_minor"] for r in rows])
    return [AccountPart(r["account_id"], r["payable_minor"], fee) for r, fee in zip(rows, fees, strict=True)]


async def _post_parts(conn: asyncpg.Connection, parts: list[AccountPart], settlement_id: uuid.UUID,
                      now: datetime) -> None:
    """Book each account's part, in account order, each account's row locked by its
    posting: no two settlements of different merchants wait on each other in a cycle."""
    for part in parts:
        if part.payable_minor or part.fee_minor:
            await ledger_rows.post(conn, part.account_id, settlement_id,
                                   merchant_day_settled(part.payable_minor, part.fee_minor), now)


async def settle_day(conn: asyncpg.Connection, merchant_id: str, day: date, now: datetime) -> MerchantDayView | None:
    """Settle a closed merchant-day in the caller's transaction; None when it was settled
    already, or when a later day of the merchant was (a day settles only after the days
    before it, since it starts from what they carried out). The caller commits, and only
    then may the payment be asked for."""
    await merchant_rows.lock_merchant(conn, merchant_id)
    if await merchant_rows.later_day_settled(conn, merchant_id, day):
        log.warning("merchant_day_left_open", merchant_id=merchant_id, day=day.isoformat(),
                    reason="a later day is settled")
        return None
    carried_in_minor = await merchant_rows.carried_out_before(conn, merchant_id, day)
    view = await merchant_day(conn, merchant_id, day, carried_in_minor)
    result = view.settlement
    parts = await _account_parts(conn, merchant_id, day, result.captured_minor, result.refunded_minor,
                                 result.fee_minor)
    status = SettlementStatus.REQUESTED if result.payment_minor > 0 else SettlementStatus.CARRIED
    paying = status is SettlementStatus.REQUESTED
    row = await merchant_rows.insert_settlement(
        conn, merchant_id, day, uuid.uuid4(), result.category.value, result.fee_bps, result.captured_minor,
        result.refunded_minor, result.fee_minor, result.carried_in_minor, result.net_minor, status.value,
        uuid.uuid4() if paying else None, await merchant_rows.payee(conn, merchant_id) if paying else None, now)
    if row is None:
        log.info("merchant_day_already_settled", merchant_id=merchant_id, day=day.isoformat())
        return None
    settled = SettledDay.of(row)
    await _post_parts(conn, parts, settled.settlement_id, now)
    log.info("merchant_day_settled", merchant_id=merchant_id, day=day.isoformat(), status=status.value,
             net_minor=result.net_minor, carried_in_minor=result.carried_in_minor, accounts=len(parts))
    return MerchantDayView(merchant_id, day, result, settled)


async def book_unbooked_fees(pool: asyncpg.Pool, now: datetime, limit: int = SETTLE_BATCH_SIZE) -> int:
    """Book the fee of days settled before the fee was booked when a day settles (their
    whole part went in flight): per account, its share of the day's fee leaves
    MERCHANT_SETTLEMENT_IN_FLIGHT for MERCHANT_FEE_INCOME, as settling books it now. Each
    day in a transaction of its own under the merchant's lock; the merchant's days are
    not paid until all of its fees are booked. The days booked."""
    booked = 0
    async with acquire(pool) as conn:
        for row in await merchant_rows.unbooked_fees(conn, limit):
            merchant_id, day = row["merchant_id"], row["settlement_date"]
            async with conn.transaction(isolation="read_committed"):
                await merchant_rows.lock_merchant(conn, merchant_id)
                if not await merchant_rows.mark_fee_booked(conn, merchant_id, day):
                    continue
                parts = await _account_parts(conn, merchant_id, day, row["captured_minor"], row["refunded_minor"],
                                             row["fee_minor"])
                # Their parts left MERCHANT_PAYABLE when they settled; only the fee is new.
                await _post_parts(conn, [replace(p, payable_minor=0) for p in parts], row["settlement_id"], now)
            booked += 1
            log.info("merchant_day_fee_booked", merchant_id=merchant_id, day=day.isoformat(),
                     fee_minor=row["fee_minor"])
    return booked


async def release(conn: asyncpg.Connection, merchant_id: str, day: date) -> asyncpg.Record:
    """Let the payments sweep send a day held since before payments were sent (after an
    operator has checked it was not paid by other means)."""
    row = await merchant_rows.release(conn, merchant_id, day)
    if row is None:
        raise FailedPrecondition(f"date: merchant {merchant_id} has no held day on {day.isoformat()}")
    log.info("merchant_day_released", merchant_id=merchant_id, day=day.isoformat(),
             payment_order_id=str(row["payment_order_id"]))
    return row


async def settle_closed_days(pool: asyncpg.Pool, now: datetime, folder: Path | None = None,
                             limit: int = SETTLE_BATCH_SIZE) -> list[MerchantDayView]:
    """Settle every merchant-day of the last CATCH_UP_DAYS closed days (before the day of
    `now` in the settlement zone) not settled yet, booked at `now`, oldest day first so
    that each day starts from what the one before carried out; each in a transaction of
    its own. With `folder`, write the file of each day settled here there (with what it
    carried in)."""
    await book_unbooked_fees(pool, now)
    # A day is closed some time after its midnight: a capture or a refund stamped just
    # before it may commit a little after, and must be in its day's figures.
    today = local_date(now - CLOSING_GRACE, SETTLEMENT_TIME_ZONE)
    settled: list[MerchantDayView] = []
    async with acquire(pool) as conn:
        for back in range(CATCH_UP_DAYS, 0, -1):
            day = today - timedelta(days=back)
            start, end = day_bounds(day)
            merchants = await merchant_rows.merchants_to_settle(conn, start, end, day, limit)
            for merchant_id in merchants:
                async with conn.transaction(isolation="read_committed"):
                    view = await settle_day(conn, merchant_id, day, now)
                if view is None:
                    continue
                settled.append(view)
                if folder is not None:
                    path = folder / file_name(merchant_id, day)
                    if not path.exists():
                        await _write_file(conn, view, path)
            if len(merchants) == limit:
                # More merchants are left on this day: later days wait for the next run,
                # so that each merchant's days settle in date order.
                break
    return settled
