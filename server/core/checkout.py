"""Checkout: quotes, authorizations that hold limit, capture into loans, void, expiry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from server.clock import Clock
from server.core import funding as co_lending
from server.core import reserve
from server.core.accounts import lock_account
from server.core.commands import Decided, Done, Key, NeedsLock, Replay, Write
from server.core.repayments import Repayments
from server.core.views import (
    AccountView,
    AuthorizationView,
    RiskView,
    account_view,
    authorization_view,
    billing_cycle,
    credit_line,
    hold,
)
from server.db import accounts as account_rows
from server.db import acquire, one
from server.db import authorizations as authorization_rows
from server.db import funding as funding_rows
from server.db import ledger as ledger_rows
from server.db import loans as loan_rows
from server.domain import authorizations as holds
from server.domain import ledger, quotes, risk
from server.domain.accounts import AccountStatus, CreditLine
from server.domain.authorizations import Approval, AuthorizationStatus, Decline, DeclineReason
from server.domain.billing import BillingCycle
from server.domain.calendar import local_date
from server.domain.errors import Aborted, AlreadyExists, FailedPrecondition, InvariantViolation, NotFound
from server.domain.pricing import Grade, Plan, ProductTable, RepaymentMethod, ScheduledInstallment, build_plan
from server.domain.quotes import UnavailableReason

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quote:
    plans: tuple[Plan, ...]
    account: AccountView
    # Why no plan is offered; None when plans are.
    unavailable_reason: UnavailableReason | None
    unavailable_message: str


@dataclass(frozen=True)
class Authorize:
    account_id: UUID
    merchant_id: str
    order_id: str
    amount_minor: int
    term_months: int
    method: RepaymentMethod
    risk_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Capture:
    authorization_id: UUID
    amount_minor: int  # 0 captures all


def priced_plan(principal_minor: int, term_months: int, method: RepaymentMethod, monthly_rate_bps: int,
                purchase_date: date, cycle: BillingCycle) -> Plan:
    """The plan of a purchase on `purchase_date` (the account's local date): its
    installments fall due on the account's repayment days."""
    return build_plan(principal_minor, term_months, method, monthly_rate_bps, purchase_date,
                      cycle.due_dates(purchase_date, term_months))


def _line_without_expired_holds(row) -> CreditLine:
    """The account's credit line once its holds that expired by now (`due_expired_minor`
    of the read) no longer hold anything: Authorize's write expires them, and a quote
    counts them as Authorize would."""
    return replace(credit_line(row), held_minor=row["held_minor"] - row["due_expired_minor"])


class Checkout:
    def __init__(self, clock: Clock, products: ProductTable, hold_ttl: timedelta, repayments: Repayments,
                 ruleset: risk.Ruleset | None, partners: co_lending.Partners | None = None) -> None:
        self._clock = clock
        self._partners = partners or co_lending.Partners()
        self._products = products
        self._hold_ttl = hold_ttl
        self._repayments = repayments
        self._ruleset = ruleset

    async def quote(self, conn: asyncpg.Connection, account_id: UUID, amount_minor: int,
                    method: RepaymentMethod | None) -> Quote:
        now = self._clock.now()
        row = await account_rows.get_with_due_expired(conn, account_id, now)
        if row is None:
            raise NotFound("account_id", str(account_id), "account")
        # Holds that expired but are not yet swept free their room, as in Authorize.
        account = replace(account_view(row, now), line=_line_without_expired_holds(row))
        offered = quotes.offers(account.line, self._products, amount_minor, method, now)
        plans = tuple(
            priced_plan(amount_minor, offer.product.term_months, offer.product.method, offer.monthly_rate_bps,
                        account.today, account.billing)
            for offer in offered.offers
        )
        return Quote(plans, account, offered.unavailable_reason, offered.message)

    async def authorize(self, conn: asyncpg.Connection, command: Authorize, key: Key,
                        lock: bool) -> Replay | Decided[AuthorizationView]:
        """Read (one statement), decide, and return the one statement that books it.
        In locked mode (`lock`) the account row is locked first, in the caller's
        transaction."""
        if lock:
            await lock_account(conn, command.account_id)
        now = self._clock.now()
        row = await authorization_rows.authorize_read(conn, command, key, now, with_risk=self._ruleset is not None)
        if row["replay_sha256"] is not None:
            return Replay(row["replay_sha256"], row["replay_response"])
        if row["account_id"] is None:
            raise NotFound("account_id", str(command.account_id), "account")
        due_expired = row["due_expired_minor"]
        if row["live_account_id"] is not None:
            # The account's own live authorization of the order. Only a PENDING hold past
            # its expiry stops holding the order (this authorization's write expires it);
            # a captured one holds it for good.
            lapsed = row["live_status"] == AuthorizationStatus.PENDING and row["live_expires_at"] <= now
            if not lapsed:
                raise _order_taken(command)
        line = _line_without_expired_holds(row)
        decision = holds.decide(line, self._products, command.amount_minor, command.term_months, command.method, now)
        # The rules run only on what the account could otherwise take: a decline for its
        # status, the term or the limit is not a risk decision, and carries none.
        facts, verdict = self._assess_risk(command, line.risk_grade, row) if isinstance(decision, Approval) else (
            None, None)
        if verdict is not None and verdict.decision is not risk.Decision.APPROVE:
            reason = (DeclineReason.RISK_DECLINED if verdict.decision is risk.Decision.DECLINE
                      else DeclineReason.RISK_REVIEW)
            decision = Decline(reason, f"risk score {verdict.score}: {', '.join(verdict.reasons)}")
        view = AuthorizationView(
            authorization_id=uuid.uuid4(), account_id=command.account_id, merchant_id=command.merchant_id,
            order_id=command.order_id,
            status=AuthorizationStatus.PENDING if isinstance(decision, Approval) else AuthorizationStatus.DECLINED,
            decline_reason=None if isinstance(decision, Approval) else decision.reason,
            decline_message="" if isinstance(decision, Approval) else decision.message,
            amount_minor=command.amount_minor, captured_minor=0, released_minor=0,
            term_months=command.term_months, method=command.method,
            plan=(priced_plan(command.amount_minor, command.term_months, command.method,
                              decision.offer.monthly_rate_bps, local_date(now, row["time_zone"]), billing_cycle(row))
                  if isinstance(decision, Approval) else None),
            # A declined authorization held nothing, so it never expires.
            expires_at=now + self._hold_ttl if isinstance(decision, Approval) else None,
            loan_id=None,
            risk=RiskView(verdict.decision, verdict.score, verdict.reasons) if verdict else None,
            created_at=now,
        )
        sql, args = authorization_rows.authorize_write(
            authorization_id=view.authorization_id, account_id=command.account_id, version=row["version"],
            merchant_id=command.merchant_id, order_id=command.order_id, status=view.status.value,
            decline_reason=view.decline_reason.value if view.decline_reason else None,
            decline_message=view.decline_message or None, amount_minor=command.amount_minor,
            term_months=command.term_months, method=command.method.value,
            monthly_rate_bps=view.plan.monthly_rate_bps if view.plan else None,
            risk_decision=view.risk.decision.value if view.risk else None,
            risk_score=view.risk.score if view.risk else 0, risk_reasons=list(view.risk.reasons) if view.risk else [],
            risk_context=command.risk_context, expires_at=view.expires_at, due_expired_minor=due_expired,
            record=None if facts is None or verdict is None else authorization_rows.RiskRecord(
                decision_id=uuid.uuid4(), inputs=risk.facts_json(facts),
                rule_results=risk.results_json(verdict.results), ruleset_version=verdict.ruleset_version),
            now=now)
        outcome: dict[str, Any] = {"authorization_id": str(view.authorization_id)}
        if isinstance(decision, Approval):
            outcome.update(outcome="hold_approved", amount_minor=command.amount_minor)
        else:
            outcome.update(outcome="authorization_declined", reason=decision.reason.value)
        if verdict is not None and verdict.decision is not risk.Decision.APPROVE:
            outcome.update(risk_decision=verdict.decision.value, risk_score=verdict.score)
        if due_expired:
            outcome.update(holds_expired_minor=due_expired)
        # Another account holds the order (found only by the write: the read stays within
        # the account), or a concurrent request of this account took it.
        return Decided(view, Write(sql, args), command.account_id, outcome, conflicts={
            "authorizations_one_live_per_order": _explain_order_conflict(command, now),
            "authorizations_one_live_per_account_order": _order_taken(command)})

    def _assess_risk(self, command: Authorize, grade: Grade,
                     row: asyncpg.Record) -> tuple[risk.Facts | None, risk.Verdict | None]:
        """The facts and the verdict of the ruleset, or (None, None) when checks are off."""
        if self._ruleset is None:
            return None, None
        facts = risk.Facts(
            amount_minor=command.amount_minor, grade=grade, device_id=command.risk_context.get("device_id", ""),
            ip_address=command.risk_context.get("ip_address", ""),
            blocked=tuple(row["blocked"]), merchant_level=row["merchant_level"],
            account_approvals_last_hour=row["account_approvals_last_hour"],
            account_amount_last_day_minor=row["account_amount_last_day_minor"],
            device_authorizations_last_hour=row["device_authorizations_last_hour"],
            device_accounts_last_30_days=row["device_accounts_last_30_days"],
            ip_accounts_last_day=row["ip_accounts_last_day"],
            device_known_for_account=row["device_known_for_account"],
            captured_count=row["captured_count"], largest_captured_minor=row["largest_captured_minor"])
        return facts, self._ruleset.evaluate(facts)

    async def capture(self, conn: asyncpg.Connection, command: Capture, key: Key,
                      lock: bool) -> Replay | Decided[AuthorizationView] | Done[AuthorizationView]:
        """Read (one statement), decide, and return the one statement that books the
        loan. A capture that a credit balance pays at once needs more than one
        statement: it asks for the locked mode and books everything there."""
        if lock and await account_rows.lock_by_authorization(conn, command.authorization_id) is None:
            raise NotFound("authorization_id", str(command.authorization_id), "authorization")
        now = self._clock.now()
        row = await loan_rows.capture_read(conn, command.authorization_id, key)
        if row["replay_sha256"] is not None:
            return Replay(row["replay_sha256"], row["replay_response"])
        if row["authorization_id"] is None:
            raise NotFound("authorization_id", str(command.authorization_id), "authorization")
        if row["account_status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; its holds cannot be captured")
        if row["credit_balance_minor"] > 0:
            if not lock:
                raise NeedsLock(row["account_id"])
            view = await self._capture_locked(conn, command)
            return Done(view, {"outcome": "hold_captured", "authorization_id": str(view.authorization_id),
                               "loan_id": str(view.loan_id), "captured_minor": view.captured_minor})
        method = RepaymentMethod(row["method"])
        min_amount = self._products.min_amount_minor(row["term_months"], method) or 1
        result = holds.capture(hold(row), command.amount_minor, min_amount, now)
        start_date = local_date(now, row["time_zone"])
        plan = priced_plan(result.captured_minor, row["term_months"], method, row["monthly_rate_bps"], start_date,
                           billing_cycle(row))
        loan_id = uuid.uuid4()
        provision = reserve.provision_minor(plan.principal_minor, Grade(row["risk_grade"]))
        entries = [(loan_id, ledger.loan_captured(plan.principal_minor, plan.total_fee_minor))]
        if provision:
            entries.append((loan_id, ledger.reserve_provisioned(provision)))
        # A partner that accepts the loan funds its share if it has room (decided by the
        # write, on the partner's exposure counters); otherwise the loan is the platform's.
        offer = co_lending.capture_offer(self._partners, row["account_id"], Grade(row["risk_grade"]),
                                         plan.term_months, plan.principal_minor, plan.total_fee_minor)
        head, args = loan_rows.capture_args(
            account_id=row["account_id"], version=row["version"], hold_minor=row["amount_minor"],
            captured_minor=result.captured_minor, released_minor=result.released_minor,
            authorization_id=row["authorization_id"], loan_id=loan_id, principal_minor=plan.principal_minor,
            term_months=plan.term_months, method=plan.method.value, monthly_rate_bps=plan.monthly_rate_bps,
            apr_bps=plan.apr_bps, merchant_id=row["merchant_id"], order_id=row["order_id"],
            currency=row["currency"], start_date=start_date, provision_minor=provision,
            installments=[(i.sequence, i.due_date, i.principal_minor, i.fee_minor) for i in plan.installments],
            head=ledger_rows.head_of(row), entries=entries, now=now)
        view = replace(authorization_view(row, plan, now), status=AuthorizationStatus.CAPTURED,
                       captured_minor=result.captured_minor, released_minor=result.released_minor, loan_id=loan_id)
        outcome: dict[str, Any] = {
            "outcome": "hold_captured", "authorization_id": str(view.authorization_id), "loan_id": str(loan_id),
            "captured_minor": result.captured_minor, "released_minor": result.released_minor}
        if offer is None:
            return Decided(view, Write(loan_rows.CAPTURE_WRITE, args), row["account_id"], outcome)
        outcome["offered_to_partner"] = offer.partner.partner_id
        # The partner's entry, if the write posts it, follows the capture's in the chain.
        return Decided(view, Write(loan_rows.CAPTURE_WRITE_CO_FUNDED,
                                   args + offer.args(row["account_id"], loan_id, head, now)),
                       row["account_id"], outcome)

    async def _capture_locked(self, conn: asyncpg.Connection, command: Capture) -> AuthorizationView:
        """Capture with every step its own statement, in the caller's transaction: for
        a capture that the account's credit balance pays at once."""
        account, auth = await self._lock_authorization(conn, command.authorization_id)
        now = self._clock.now()
        if account["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; its holds cannot be captured")
        min_amount = self._products.min_amount_minor(auth["term_months"], RepaymentMethod(auth["method"])) or 1
        result = holds.capture(hold(auth), command.amount_minor, min_amount, now)
        start_date = local_date(now, account["time_zone"])
        plan = priced_plan(result.captured_minor, auth["term_months"], RepaymentMethod(auth["method"]),
                           auth["monthly_rate_bps"], start_date, billing_cycle(account))
        loan_id = uuid.uuid4()
        await loan_rows.insert(
            conn, loan_id=loan_id, account_id=auth["account_id"], authorization_id=auth["authorization_id"],
            principal_minor=plan.principal_minor, term_months=plan.term_months, method=plan.method.value,
            monthly_rate_bps=plan.monthly_rate_bps, apr_bps=plan.apr_bps, merchant_id=auth["merchant_id"],
            order_id=auth["order_id"], currency=account["currency"], start_date=start_date, now=now,
            installments=[(i.sequence, i.due_date, i.principal_minor, i.fee_minor) for i in plan.installments])
        auth = await authorization_rows.set_outcome(
            conn, auth["account_id"], auth["authorization_id"], status=AuthorizationStatus.CAPTURED.value,
            captured_minor=result.captured_minor, released_minor=result.released_minor, loan_id=loan_id, now=now)
        await account_rows.add_to_totals(conn, auth["account_id"], held_delta_minor=-auth["amount_minor"],
                                         principal_delta_minor=result.captured_minor, now=now)
        await ledger_rows.post(conn, auth["account_id"], loan_id,
                               ledger.loan_captured(plan.principal_minor, plan.total_fee_minor), now)
        await reserve.provide(conn, auth["account_id"], loan_id, plan.principal_minor, Grade(account["risk_grade"]),
                              now)
        offer = co_lending.capture_offer(self._partners, auth["account_id"], Grade(account["risk_grade"]),
                                         plan.term_months, plan.principal_minor, plan.total_fee_minor)
        if offer is not None:
            head = await ledger_rows.head(conn, auth["account_id"])
            await funding_rows.co_fund(conn, auth["account_id"], loan_id, now,
                                       offer.args(auth["account_id"], loan_id, head, now))
        log.info("hold_captured", authorization_id=str(auth["authorization_id"]), loan_id=str(loan_id),
                 captured_minor=result.captured_minor, released_minor=result.released_minor)
        # A credit balance pays the new debt at once, through the waterfall.
        await self._repayments.apply_credit_balance(conn, auth["account_id"], now)
        return authorization_view(auth, plan, now)

    async def void(self, conn: asyncpg.Connection, authorization_id: UUID) -> AuthorizationView:
        account, auth = await self._lock_authorization(conn, authorization_id)
        now = self._clock.now()
        if holds.void(hold(auth), now):
            auth = await authorization_rows.set_outcome(
                conn, auth["account_id"], authorization_id, status=AuthorizationStatus.VOIDED.value, captured_minor=0,
                released_minor=auth["amount_minor"], loan_id=None, now=now)
            await account_rows.add_to_totals(conn, auth["account_id"], held_delta_minor=-auth["amount_minor"],
                                             now=now)
            log.info("hold_voided", authorization_id=str(authorization_id), released_minor=auth["amount_minor"])
        return authorization_view(auth, self._locked_plan(auth, account), now)

    async def get(self, conn: asyncpg.Connection, authorization_id: UUID) -> AuthorizationView:
        auth = await authorization_rows.get(conn, authorization_id)
        if auth is None:
            raise NotFound("authorization_id", str(authorization_id), "authorization")
        account = one(await account_rows.get(conn, auth["account_id"]))
        plan: Plan | None
        if auth["loan_id"] is not None:
            plan = await self._loan_plan(conn, auth)
        else:
            plan = self._locked_plan(auth, account)
        return authorization_view(auth, plan, self._clock.now())

    async def expire_due_holds(self, pool: asyncpg.Pool, batch_size: int = 100) -> int:
        """Book the expiry of pending holds past their time, one account per transaction.
        An account busy in another transaction is skipped; the next sweep or that
        account's next authorization books it. Returns the number of accounts swept."""
        now = self._clock.now()
        swept = 0
        async with acquire(pool) as conn:
            for account_id in await authorization_rows.accounts_with_due_holds(conn, now, batch_size):
                try:
                    async with conn.transaction():
                        if await account_rows.lock_if_free(conn, account_id) is None:
                            continue
                        if await self._expire_due_holds_of_locked(conn, account_id, now) is not None:
                            swept += 1
                except (asyncpg.PostgresError, InvariantViolation):
                    # One account's failure must not stop the others from being swept.
                    log.exception("hold_expiry_failed", account_id=str(account_id))
        return swept

    async def _expire_due_holds_of_locked(self, conn: asyncpg.Connection, account_id: UUID,
                                          now: datetime) -> asyncpg.Record | None:
        """Expire the locked account's holds past their time; the updated row, or None
        when nothing expired."""
        released = await authorization_rows.expire_due_for_account(conn, account_id, now)
        if not released:
            return None
        log.info("holds_expired", account_id=str(account_id), released_minor=released)
        return await account_rows.add_to_totals(conn, account_id, held_delta_minor=-released, now=now)

    async def _lock_authorization(self, conn: asyncpg.Connection,
                                  authorization_id: UUID) -> tuple[asyncpg.Record, asyncpg.Record]:
        # Lock order is always account, then authorization, as in Authorize.
        account = await account_rows.lock_by_authorization(conn, authorization_id)
        if account is None:
            raise NotFound("authorization_id", str(authorization_id), "authorization")
        return account, one(await authorization_rows.get(conn, authorization_id, lock=True))

    def _locked_plan(self, auth: asyncpg.Record, account: asyncpg.Record) -> Plan | None:
        """The plan an authorization locked, dated from the day it was approved."""
        if auth["monthly_rate_bps"] is None:
            return None
        return priced_plan(auth["amount_minor"], auth["term_months"], RepaymentMethod(auth["method"]),
                           auth["monthly_rate_bps"], local_date(auth["created_at"], account["time_zone"]),
                           billing_cycle(account))

    async def _loan_plan(self, conn: asyncpg.Connection, auth: asyncpg.Record) -> Plan:
        found = await loan_rows.get(conn, auth["loan_id"])
        if found is None:
            raise InvariantViolation(f"authorization {auth['authorization_id']} names a loan that does not exist")
        loan, rows = found
        return Plan(
            term_months=loan["term_months"],
            method=RepaymentMethod(loan["method"]),
            monthly_rate_bps=loan["monthly_rate_bps"],
            apr_bps=loan["apr_bps"],
            principal_minor=loan["principal_minor"],
            installments=tuple(ScheduledInstallment(r["sequence"], r["due_date"], r["principal_minor"],
                                                    r["fee_minor"]) for r in rows),
        )


async def account_of_authorization(conn: asyncpg.Connection, authorization_id: UUID) -> UUID:
    """The account of an authorization, for a request that names only the authorization."""
    account_id = await authorization_rows.account_of(conn, authorization_id)
    if account_id is None:
        raise NotFound("authorization_id", str(authorization_id), "authorization")
    return account_id


def _order_taken(command: Authorize) -> AlreadyExists:
    return AlreadyExists(
        f"order_id: merchant {command.merchant_id!r} order {command.order_id!r} already has a pending "
        "or captured authorization")


def _explain_order_conflict(command: Authorize, now: datetime):
    """What it means that the write met another account's live authorization of the
    order (the one-live-per-order index of a single database): the order is taken,
    unless that hold has expired and waits to be booked (or was just given back), when
    the caller may retry shortly."""

    async def explain(conn: asyncpg.Connection) -> AlreadyExists | Aborted:
        holder = await authorization_rows.order_holder(conn, command.merchant_id, command.order_id)
        if holder is not None and (holder["status"] != AuthorizationStatus.PENDING or holder["expires_at"] > now):
            return _order_taken(command)
        return Aborted("order_id: an expired hold on this order is being released; retry shortly")

    return explain
