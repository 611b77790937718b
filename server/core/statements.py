"""Statements: issued by the bot on each account's statement day from the ledger, read by
the API, emailed once. The rules of what a statement shows are server/domain/statements.py;
docs/statements.md tells the whole story.

Issuing runs under the account's row lock (each_free_account), so one replica issues a
statement and the others skip the account; the statement, its lines, its installments
and its email's delivery row commit together. The email is sent as reminders are: a
bot claims the delivery under a lease, sends it with a Message-ID stable per
statement, and records the outcome only while the lease is its own; a 4xx is tried
again later, a 5xx ends it."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

import asyncpg
import structlog

from server import paging
from server.core.accounts import each_free_account
from server.core.contact_attempts import bill_lines, masked_smtp
from server.core.views import AccountView, LoanView, account_view, active_loans, billing_cycle
from server.db import accounts as account_rows
from server.db import acquire
from server.db import statements as rows
from server.domain.billing import BillingCycle
from server.domain.calendar import add_months, local_date
from server.domain.errors import InvalidArgument, InvariantViolation, NotFound
from server.domain.ledger import LedgerAccount
from server.domain.reminders import EMAIL_RETRY, AttemptStatus, Channel, Reason, RetryPolicy, after_failure
from server.domain.statements import (
    CUSTOMER_ACCOUNTS,
    DueInstallment,
    EntryPostings,
    Line,
    LineKind,
    Owed,
    Sections,
    check_ties,
    cutoff,
    due_statement_dates,
    lines_of,
    worth_sending,
)

log = structlog.get_logger(__name__)

_CUSTOMER_ACCOUNT_NAMES = sorted(a.value for a in CUSTOMER_ACCOUNTS)


def message_id(account_id: UUID, statement_date: date, domain: str) -> str:
    """Stable per statement: a resend after a crash carries the same id."""
    return f"<statement.{account_id}.{statement_date.isoformat()}@{domain}>"


@dataclass(frozen=True)
class StatementLine(Line):
    """A line as shown: the movement, its number on the statement, and the loan it
    concerns when there is one."""

    line: int = 0
    loan_id: UUID | None = None
    merchant_id: str = ""
    order_id: str = ""
    term_months: int = 0
    method: str = ""
    apr_bps: int = 0


@dataclass(frozen=True)
class Statement:
    account_id: UUID
    statement_date: date
    period_start: date
    cutoff_at: datetime
    payment_due_date: date
    time_zone: str
    opening_minor: int
    sections: Sections
    closing_minor: int
    owed: Owed
    credit_limit_minor: int
    available_minor: int
    amount_due_minor: int
    issued_at: datetime
    lines: tuple[StatementLine, ...] = ()
    installments: tuple[DueInstallment, ...] = ()


@dataclass(frozen=True)
class StatementPage:
    statements: tuple[Statement, ...]
    next_page_token: str


@dataclass
class Issued:
    """What a pass's issuing did."""

    statements: int = 0
    emails_planned: int = 0
    busy: int = 0
    failed: int = 0
    dates: list[tuple[UUID, date]] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    account_id: UUID
    statement_date: date
    status: AttemptStatus
    reason: Reason | None
    tries: int
    message_id: str
    next_try_at: datetime | None
    detail: dict

    @property
    def key(self) -> tuple[UUID, date]:
        return self.account_id, self.statement_date


@dataclass(frozen=True)
class StatementMail:
    """Everything the bot needs to email one claimed statement."""

    delivery: Delivery
    statement: Statement
    name: str
    email: str
    locale: str


def _delivery(row: asyncpg.Record) -> Delivery:
    detail = row["detail"]
    if isinstance(detail, str):
        detail = json.loads(detail)
    return Delivery(account_id=row["account_id"], statement_date=row["statement_date"],
                    status=AttemptStatus(row["status"]), reason=Reason(row["reason"]) if row["reason"] else None,
                    tries=row["tries"], message_id=row["message_id"], next_try_at=row["next_try_at"],
                    detail=dict(detail or {}))


def _statement(row: asyncpg.Record, lines: Sequence[asyncpg.Record] = (),
               installments: Sequence[asyncpg.Record] = ()) -> Statement:
    return Statement(
        account_id=row["account_id"], statement_date=row["statement_date"], period_start=row["period_start"],
        cutoff_at=row["cutoff_at"], payment_due_date=row["payment_due_date"], time_zone=row["time_zone"],
        opening_minor=row["opening_minor"],
        sections=Sections(
            purchases_minor=row["purchases_minor"], fees_minor=row["fees_minor"],
            penalties_minor=row["penalties_minor"], payments_minor=row["payments_minor"],
            refunds_minor=row["refunds_minor"], waivers_minor=row["waivers_minor"],
            written_off_minor=row["written_off_minor"], adjustments_minor=row["adjustments_minor"]),
        closing_minor=row["closing_minor"],
        owed=Owed(row["principal_owed_minor"], row["fee_owed_minor"], row["penalty_owed_minor"],
                  row["credit_balance_minor"]),
        credit_limit_minor=row["credit_limit_minor"], available_minor=row["available_minor"],
        amount_due_minor=row["amount_due_minor"], issued_at=row["issued_at"],
        lines=tuple(StatementLine(
            line=r["line"], kind=LineKind(r["kind"]), entry_id=r["entry_id"], entry_kind=r["entry_kind"],
            reference_id=r["reference_id"], booked_at=r["booked_at"], amount_minor=r["amount_minor"],
            loan_id=r["loan_id"], merchant_id=r["merchant_id"] or "", order_id=r["order_id"] or "",
            term_months=r["term_months"] or 0, method=r["method"] or "", apr_bps=r["apr_bps"] or 0)
            for r in lines),
        installments=tuple(DueInstallment(r["loan_id"], r["sequence"], r["order_id"], r["due_date"],
                                          r["principal_minor"], r["fee_minor"], r["penalty_minor"])
                           for r in installments),
    )


def _entries(posting_rows: Sequence[asyncpg.Record]) -> list[EntryPostings]:
    """Entries from their posting rows (grouped, in the rows' booking order)."""
    postings: dict[UUID, list[tuple[LedgerAccount, int]]] = defaultdict(list)
    heads: dict[UUID, asyncpg.Record] = {}
    for r in posting_rows:
        heads.setdefault(r["entry_id"], r)
        postings[r["entry_id"]].append((LedgerAccount(r["ledger_account"]), r["amount_minor"]))
    return [EntryPostings(entry_id, head["kind"], head["reference_id"], head["created_at"],
                          tuple(postings[entry_id])) for entry_id, head in heads.items()]


@dataclass(frozen=True)
class Current:
    """The account as it stands when its statements are issued."""

    loans: list[LoanView]
    view: AccountView
    cycle: BillingCycle


class Statements:
    def __init__(self, *, mail_domain: str = "credit.example", email_retry: RetryPolicy = EMAIL_RETRY) -> None:
        self._mail_domain = mail_domain
        self._email_retry = email_retry

    # -- issuing, by the bot ---------------------------------------------------------------

    async def issue_due(self, pool: asyncpg.Pool, now: datetime, batch_size: int) -> Issued:
        """Issue every statement due at `now` (each account's own today), each account in
        its own transaction under a SKIP LOCKED lock; an account whose issue fails is
        rolled back and logged, and the others go on."""
        issued = Issued()

        async def next_batch(conn, after):
            return await rows.accounts_due(conn, now, after, batch_size)

        async def issue_one(conn, account):
            for statement, planned in await self.issue_account(conn, account, now):
                issued.statements += 1
                issued.emails_planned += planned
                issued.dates.append((statement.account_id, statement.statement_date))

        def failed(account_id: UUID, error: Exception) -> None:
            issued.failed += 1
            log.error("statement_issue_failed", account_id=str(account_id), error=f"{type(error).__name__}: {error}",
                      exc_info=error)

        issued.busy = await each_free_account(pool, next_batch, issue_one, on_error=failed)
        return issued

    async def issue_account(self, conn: asyncpg.Connection, account: asyncpg.Record,
                            now: datetime) -> list[tuple[Statement, bool]]:
        """Issue the account's statements due by its today, oldest first, inside the
        caller's transaction on the locked account; each with whether an email is planned."""
        zone = account["time_zone"]
        cycle = billing_cycle(account)
        opened_on = local_date(account["created_at"], zone)
        last = await rows.last_statement(conn, account["account_id"])
        last_date = last["statement_date"] if last else None
        opening = last["closing_minor"] if last else 0
        issued = []
        # What the period's statements show of the account as it is now: the same for each
        # (the account is locked, and issuing writes only statements).
        current = Current(await active_loans(conn, account["account_id"], zone, now), account_view(account, now),
                          cycle)
        for statement_date in due_statement_dates(cycle, last_date, opened_on, local_date(now, zone)):
            statement = await self._build(conn, account, current, statement_date, last_date or opened_on, opening,
                                          now)
            planned = await self._store(conn, account, statement, now)
            issued.append((statement, planned))
            log.info("statement_issued", account_id=str(statement.account_id),
                     statement_date=statement_date.isoformat(), closing_minor=statement.closing_minor,
                     lines=len(statement.lines), email_planned=planned)
            last_date, opening = statement_date, statement.closing_minor
        return issued

    async def _build(self, conn: asyncpg.Connection, account: asyncpg.Record, current: Current,
                     statement_date: date, period_start: date, opening_minor: int, now: datetime) -> Statement:
        account_id = account["account_id"]
        zone = account["time_zone"]
        cut = cutoff(statement_date, zone)
        entries = _entries(await rows.unstated_entries(conn, account_id, cut, _CUSTOMER_ACCOUNT_NAMES))
        lines: list[Line] = [line for entry in entries for line in lines_of(entry)]
        loans = await rows.loans_of_references(conn, account_id, sorted({line.reference_id for line in lines}))
        owed = Owed.of({LedgerAccount(name): amount for name, amount in
                        (await rows.balances_before(conn, account_id, cut, _CUSTOMER_ACCOUNT_NAMES)).items()})
        sections = Sections.of(lines)
        closing = check_ties(opening_minor, sections, owed)
        payment_due_date = current.cycle.due_date(statement_date)
        due = sorted((DueInstallment(line.loan_id, line.installment.sequence, line.order_id, line.installment.due_date,
                                     line.principal_minor, line.fee_minor, line.penalty_minor)
                      for line in bill_lines(current.loans)
                      if line.owed_minor > 0 and line.installment.due_date <= payment_due_date),
                     key=lambda i: (i.due_date, i.order_id, i.sequence))
        view = current.view

        def shown(number: int, line: Line) -> StatementLine:
            movement = vars(line)
            loan = loans.get(line.reference_id)
            if loan is None:
                return StatementLine(**movement, line=number)
            return StatementLine(**movement, line=number, loan_id=loan["loan_id"], merchant_id=loan["merchant_id"],
                                 order_id=loan["order_id"], term_months=loan["term_months"], method=loan["method"],
                                 apr_bps=loan["apr_bps"])

        return Statement(
            account_id=account_id, statement_date=statement_date, period_start=period_start, cutoff_at=cut,
            payment_due_date=payment_due_date, time_zone=zone, opening_minor=opening_minor, sections=sections,
            closing_minor=closing, owed=owed, credit_limit_minor=view.effective_limit_minor,
            available_minor=view.available_minor, amount_due_minor=sum(i.owed_minor for i in due), issued_at=now,
            lines=tuple(shown(n, line) for n, line in enumerate(lines, start=1)), installments=tuple(due))

    async def _store(self, conn: asyncpg.Connection, account: asyncpg.Record, s: Statement, now: datetime) -> bool:
        """Write the statement with its lines and installments, and plan its email; True
        when an email is to go out."""
        if s.owed.credit_balance_minor < 0:
            raise InvariantViolation(f"account {s.account_id} has a negative credit balance in the ledger")
        k = s.sections
        await rows.insert(
            conn,
            (s.account_id, s.statement_date, s.period_start, s.cutoff_at, s.payment_due_date, s.time_zone,
             s.opening_minor, k.purchases_minor, k.fees_minor, k.penalties_minor, k.payments_minor, k.refunds_minor,
             k.waivers_minor, k.written_off_minor, k.adjustments_minor, s.closing_minor, s.owed.principal_minor,
             s.owed.fee_minor, s.owed.penalty_minor, s.owed.credit_balance_minor, s.credit_limit_minor,
             s.available_minor, s.amount_due_minor, s.issued_at),
            [(line.line, line.kind.value, line.entry_id, line.entry_kind, line.reference_id, line.booked_at,
              line.amount_minor, line.loan_id, line.merchant_id or None, line.order_id or None,
              line.term_months or None, line.method or None, line.apr_bps if line.loan_id else None)
             for line in s.lines],
            [(i.loan_id, i.sequence, i.order_id, i.due_date, i.principal_minor, i.fee_minor, i.penalty_minor)
             for i in s.installments])
        if not worth_sending(s.opening_minor, s.closing_minor, s.lines, s.installments):
            return False
        has_email = bool(account_rows.contact(account)[1])
        status, reason = (AttemptStatus.PENDING, None) if has_email else (AttemptStatus.SUPPRESSED,
                                                                           Reason.NO_CONTACT_ADDRESS)
        await rows.insert_delivery(conn, s.account_id, s.statement_date, status.value,
                                   reason.value if reason else None,
                                   message_id(s.account_id, s.statement_date, self._mail_domain), now)
        return has_email

    # -- the API's reads ---------------------------------------------------------------------

    async def get(self, conn: asyncpg.Connection, account_id: UUID, period: str, *,
                  statement_date: date | None = None, month: date | None = None) -> Statement:
        """The statement of one date, or the latest dated in `month` (its first day);
        `period` is how the caller named it, for a NOT_FOUND."""
        if await account_rows.get(conn, account_id) is None:
            raise NotFound("account_id", str(account_id), "account")
        if statement_date is not None:
            row = await rows.get(conn, account_id, statement_date)
        elif month is not None:
            row = await rows.latest_between(conn, account_id, month, add_months(month, 1))
        else:
            raise InvariantViolation("a statement is asked for by its date or its month")
        if row is None:
            raise NotFound("period", period, "statement")
        (statement,) = await self._whole(conn, row["account_id"], [row])
        return statement

    async def _whole(self, conn: asyncpg.Connection, account_id: UUID,
                     found: Sequence[asyncpg.Record]) -> list[Statement]:
        """The account's statements of these rows, with their lines and installments."""
        dates = [r["statement_date"] for r in found]
        lines, installments = defaultdict(list), defaultdict(list)
        for line in await rows.lines(conn, account_id, dates):
            lines[line["statement_date"]].append(line)
        for installment in await rows.installments(conn, account_id, dates):
            installments[installment["statement_date"]].append(installment)
        return [_statement(r, lines[r["statement_date"]], installments[r["statement_date"]]) for r in found]

    async def page(self, conn: asyncpg.Connection, account_id: UUID, page_size: int, page_token: str) -> StatementPage:
        """One page of the account's statements, newest first; `page_size` is already
        bounded by the caller."""
        if page_size < 1:
            raise InvariantViolation(f"a page of {page_size} statements")
        if await account_rows.get(conn, account_id) is None:
            raise NotFound("account_id", str(account_id), "account")
        before = None
        if page_token:
            (value,) = paging.decode(page_token, 1)
            try:
                before = date.fromisoformat(value)
            except ValueError:
                raise InvalidArgument.of("page_token", "is not a token this service issued") from None
        found = await rows.page(conn, account_id, before, page_size + 1)
        statements = tuple(await self._whole(conn, account_id, found[:page_size]))
        token = paging.encode([statements[-1].statement_date.isoformat()]) if len(found) > page_size else ""
        return StatementPage(statements, token)

    # -- a bot's side of the email: claim, check, report ------------------------------------

    async def claim(self, pool: asyncpg.Pool, now: datetime, *, lease_now: datetime, lease_until: datetime,
                    owner: UUID, limit: int) -> list[Delivery]:
        async with acquire(pool) as conn:
            return [_delivery(r) for r in await rows.claim_deliveries(
                conn, now, lease_now=lease_now, lease_until=lease_until, owner=owner, limit=limit)]

    async def renew(self, pool: asyncpg.Pool, keys: Sequence[tuple[UUID, date]], owner: UUID, lease_until: datetime,
                    timeout_s: float) -> set[tuple[UUID, date]]:
        async with acquire(pool, timeout=timeout_s) as conn:
            return await rows.renew_leases(conn, list(keys), owner, lease_until, timeout_s=timeout_s)

    async def mail(self, pool: asyncpg.Pool, delivery: Delivery, owner: UUID,
                   now: datetime) -> StatementMail | AttemptStatus | None:
        """What to send for a claimed delivery; SUPPRESSED (recorded) when the account has
        no email address any more; None when the lease was lost meanwhile."""
        async with acquire(pool) as conn:
            account = await account_rows.get(conn, delivery.account_id)
            row = await rows.get(conn, delivery.account_id, delivery.statement_date)
            if account is None or row is None:
                raise NotFound("account_id", str(delivery.account_id), "statement of the delivery")
            name, email, _ = account_rows.contact(account)
            if not email:
                if not await rows.finish_delivery(conn, delivery.account_id, delivery.statement_date, owner,
                                                  AttemptStatus.SUPPRESSED.value, now,
                                                  reason=Reason.NO_CONTACT_ADDRESS.value):
                    return None
                return AttemptStatus.SUPPRESSED
            (statement,) = await self._whole(conn, delivery.account_id, [row])
        return StatementMail(delivery, statement, name, email, account["locale"])

    async def mark_sent(self, pool: asyncpg.Pool, delivery: Delivery, owner: UUID, now: datetime,
                        detail: dict) -> bool:
        """Record a delivered email; False when the lease was lost (nothing recorded)."""
        async with acquire(pool) as conn:
            return await rows.finish_delivery(conn, delivery.account_id, delivery.statement_date, owner,
                                              AttemptStatus.SENT.value, now, detail=masked_smtp(detail))

    async def mark_failed(self, pool: asyncpg.Pool, delivery: Delivery, owner: UUID, now: datetime, *,
                          permanent: bool, detail: dict) -> AttemptStatus | None:
        """Record a failed send under the email retry policy (tried again later, or given
        up); the status it leaves, or None when the lease was lost."""
        failed = after_failure(Channel.EMAIL, delivery.tries, permanent, now, self._email_retry)
        async with acquire(pool) as conn:
            recorded = await rows.finish_delivery(
                conn, delivery.account_id, delivery.statement_date, owner, failed.status.value, now,
                reason=failed.reason.value, detail=masked_smtp(detail), next_try_at=failed.next_try_at)
        return failed.status if recorded else None

