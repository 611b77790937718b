"""Collections: ageing, penalties, charge-off, promises and reminder planning for one
account, plus what the CollectionsService reads and changes. The bot calls
`review_account` with the account row locked; the server calls the rest."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from uuid import UUID

import asyncpg
import structlog

from server.clock import Clock
from server.core import reserve
from server.core.accounts import lock_account
from server.core.repayments import Repayments
from server.core.views import LoanView, loan_view
from server.db import accounts as account_rows
from server.db import collections as rows
from server.db import ledger as ledger_rows
from server.db import loans as loan_rows
from server.domain import ledger
from server.domain.accounts import AccountStatus
from server.domain.calendar import local_date
from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from server.domain.loans import Bucket, LoanStatus, bucket
from server.domain.money import round_half_up
from server.domain.penalties import PenaltyPolicy, accrue
from server.domain.reminders import (
    Channel,
    ContactWindow,
    Deferral,
    FrequencyCaps,
    PastContact,
    Step,
    Suppression,
    plan_steps,
    within_caps,
)

log = structlog.get_logger(__name__)

PROMISE_MAX_DAYS_AHEAD = 7
# Outcomes of a call in which the customer was reached (the quiet period follows them).
REACHED_OUTCOMES = {"PROMISE_TO_PAY", "CLAIMS_PAID", "DISPUTE", "REQUEST_AGENT", "REFUSED"}
# What a call's outcome does to the case.
ESCALATING_OUTCOMES = {"DISPUTE": "DISPUTE", "REQUEST_AGENT": "AGENT_REQUESTED"}


@dataclass(frozen=True)
class CollectionsPolicy:
    penalty: PenaltyPolicy = field(default_factory=PenaltyPolicy)
    charge_off_days: int = 180
    window: ContactWindow = field(default_factory=ContactWindow)
    caps: FrequencyCaps = field(default_factory=FrequencyCaps)
    mail_domain: str = "credit.example"
    # The insured share of principal lost at charge-off, claimed back into the reserve.
    insurance_share_bps: int = 0


@dataclass(frozen=True)
class CaseView:
    account_id: UUID
    bucket: Bucket
    days_past_due: int
    overdue_minor: int
    penalty_owed_minor: int
    escalation_reason: str | None
    needs_payment_check: bool
    promise: asyncpg.Record | None
    preferences: tuple[bool, bool, bool]
    updated_at: datetime


@dataclass
class Review:
    """What one review of an account did."""
    penalty_days: int = 0
    penalty_minor: int = 0
    bucket: str = "CURRENT"
    bucket_changed: bool = False
    charged_off: int = 0
    planned: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def message_id(loan_id: UUID, sequence: int, step_code: str, domain: str) -> str:
    """Stable per (installment, step): a resend after a crash carries the same id."""
    return f"<reminder.{loan_id}.{sequence}.{step_code}@{domain}>"


class Collections:
    def __init__(self, clock: Clock, policy: CollectionsPolicy, repayments: Repayments) -> None:
        self._clock = clock
        self.policy = policy
        self._repayments = repayments

    # -- the bot's review of one locked account ------------------------------------------

    async def steps(self, conn: asyncpg.Connection) -> list[Step]:
        """The reminder strategy as it stands: read once per pass."""
        return [Step(r["step_code"], r["offset_days"], Channel(r["channel"]), r["template"], r["escalates"])
                for r in await rows.steps(conn)]

    async def review_account(self, conn: asyncpg.Connection, account: asyncpg.Record, now: datetime,
                             channels: frozenset[Channel], steps: list[Step]) -> Review:
        review = Review()
        account_id = account["account_id"]
        zone = account["time_zone"]
        today = local_date(now, zone)
        loans = await self._active_loans(conn, account, now)
        if loans:
            review.penalty_days, review.penalty_minor = await self._accrue_penalties(conn, account_id, loans, zone,
                                                                                     today, now)
            if review.penalty_minor:
                await self._repayments.apply_credit_balance(conn, account_id, now)
                loans = await self._active_loans(conn, account, now)
            for loan in loans:
                if loan.days_past_due >= self.policy.charge_off_days:
                    await self._charge_off(conn, account, loan, now)
                    review.charged_off += 1
            if review.charged_off:
                loans = await self._active_loans(conn, account, now)
        await self._age(conn, account_id, loans, today, now, review)
        await self._resolve_promise(conn, account_id, loans, today, now)
        await self._plan_reminders(conn, account, loans, today, now, channels, steps, review)
        return review

    async def _accrue_penalties(self, conn, account_id: UUID, loans: list[LoanView], zone: str, today: date,
                                now: datetime) -> tuple[int, int]:
        loan_ids = [loan.loan_id for loan in loans]
        state = await rows.penalty_state(conn, loan_ids)
        paid_on: dict[tuple[UUID, int], list[tuple[date, int]]] = defaultdict(list)
        for payment in await rows.payments(conn, loan_ids):
            paid_on[(payment["loan_id"], payment["sequence"])].append(
                (local_date(payment["created_at"], zone), payment["amount_minor"]))
        days = total = 0
        for loan in loans:
            booked_for_loan = 0
            for i in loan.installments:
                if i.due_date >= today:
                    continue
                unpaid_now = i.principal_minor + i.fee_minor - i.principal_paid_minor - i.fee_paid_minor
                payments = paid_on[(loan.loan_id, i.sequence)]

                def unpaid_at_end_of(day: date, unpaid_now=unpaid_now, payments=payments) -> int:
                    return unpaid_now + sum(amount for paid_day, amount in payments if paid_day > day)

                previous = state.get((loan.loan_id, i.sequence))
                for penalty in accrue(
                        due_date=i.due_date, principal_minor=i.principal_minor, fee_minor=i.fee_minor,
                        charged_so_far_minor=previous["charged_minor"] if previous else 0,
                        last_charged=previous["last_charged"] if previous else None, today=today,
                        unpaid_at_end_of=unpaid_at_end_of, policy=self.policy.penalty):
                    if await rows.book_accrual(conn, loan.loan_id, i.sequence, penalty.accrual_date, account_id,
                                               penalty.base_minor, penalty.amount_minor, now):
                        days += 1
                        booked_for_loan += penalty.amount_minor
            if booked_for_loan:
                await ledger_rows.post(conn, account_id, loan.loan_id, ledger.penalty_assessed(booked_for_loan), now)
                total += booked_for_loan
        if total:
            log.info("penalties_booked", account_id=str(account_id), days=days, amount_minor=total)
        return days, total

    async def _charge_off(self, conn, account: asyncpg.Record, loan: LoanView, now: datetime) -> None:
        unpaid_principal = sum(i.principal_minor - i.principal_paid_minor for i in loan.installments)
        unpaid_fee = sum(i.fee_minor - i.fee_paid_minor for i in loan.installments)
        unpaid_penalty = sum(i.penalty_minor - i.penalty_paid_minor for i in loan.installments)
        await rows.charge_off(conn, loan.loan_id, now)
        if unpaid_principal:
            await account_rows.add_to_totals(conn, account["account_id"], principal_delta_minor=-unpaid_principal,
                                             now=now)
        claim = round_half_up(Fraction(unpaid_principal * self.policy.insurance_share_bps, 10_000))
        if unpaid_principal or unpaid_fee or unpaid_penalty:
            await ledger_rows.post(conn, account["account_id"], loan.loan_id, ledger.loan_charged_off(
                principal_minor=unpaid_principal, fee_minor=unpaid_fee, penalty_minor=unpaid_penalty,
                insurance_claim_minor=claim), now)
        if account["status"] != AccountStatus.CLOSED:
            await account_rows.set_status(conn, account["account_id"], AccountStatus.CLOSED.value, now)
        await rows.event(conn, account["account_id"], "LOAN_CHARGED_OFF",
                         {"loan_id": str(loan.loan_id), "principal_minor": unpaid_principal,
                          "days_past_due": loan.days_past_due}, now)
        log.info("loan_charged_off", loan_id=str(loan.loan_id), principal_minor=unpaid_principal)

    async def _age(self, conn, account_id: UUID, loans: list[LoanView], today: date, now: datetime,
                   review: Review) -> None:
        dpd = max((loan.days_past_due for loan in loans), default=0)
        charged_off = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM loans WHERE account_id = $1 AND status = 'CHARGED_OFF')", account_id)
        current = Bucket.CHARGED_OFF if charged_off and not loans else bucket(dpd, self.policy.charge_off_days)
        overdue = sum(i.owed_minor for loan in loans for i in loan.installments if i.due_date < today)
        existing = await rows.case(conn, account_id)
        if existing is None and current is Bucket.CURRENT:
            review.bucket = current.value
            return
        before = existing["bucket"] if existing else Bucket.CURRENT.value
        await rows.save_case(conn, account_id, current.value, dpd, overdue, now)
        review.bucket = current.value
        if before != current.value:
            review.bucket_changed = True
            await rows.event(conn, account_id, "BUCKET_CHANGED", {"from": before, "to": current.value, "dpd": dpd},
                             now)
            log.info("bucket_changed", account_id=str(account_id), before=before, after=current.value, dpd=dpd)

    async def _resolve_promise(self, conn, account_id: UUID, loans: list[LoanView], today: date,
                               now: datetime) -> None:
        promise = await rows.active_promise(conn, account_id)
        if promise is None:
            return
        paid_since = await rows.paid_in_total(conn, account_id) - promise["paid_before_minor"]
        owed = sum(i.owed_minor for loan in loans for i in loan.installments if i.due_date <= today)
        if paid_since >= promise["amount_minor"] or owed == 0:
            await rows.resolve_promise(conn, promise["promise_id"], "KEPT", now)
            await rows.event(conn, account_id, "PROMISE_KEPT", {"promise_id": str(promise["promise_id"])}, now)
        elif today > promise["promised_date"]:
            # The day after the promised date, an unkept promise is broken and the case escalates.
            await rows.resolve_promise(conn, promise["promise_id"], "BROKEN", now)
            await rows.event(conn, account_id, "PROMISE_BROKEN", {"promise_id": str(promise["promise_id"]),
                                                                  "paid_since_minor": paid_since}, now)
            await rows.escalate(conn, account_id, "BROKEN_PROMISE", now)
            log.info("promise_broken", account_id=str(account_id))

    async def _plan_reminders(self, conn, account: asyncpg.Record, loans: list[LoanView], today: date,
                              now: datetime, channels: frozenset[Channel], steps: list[Step],
                              review: Review) -> None:
        account_id = account["account_id"]
        attempts = {(a["loan_id"], a["sequence"], a["step_code"]): a for a in await rows.attempts_of_account(
            conn, account_id)}
        email_out, voice_out, phone_blocked = await rows.preferences(conn, account_id)
        promise_active = await rows.active_promise(conn, account_id) is not None
        history = [PastContact(r["at"], Channel(r["channel"]), r["outcome"] in REACHED_OUTCOMES)
                   for r in await rows.recent_contacts(conn, account_id, now - timedelta(days=8))]
        in_window = self.policy.window.contains(now, account["time_zone"])

        for loan in loans:
            for i in loan.installments:
                if i.owed_minor == 0:
                    continue
                taken = {code for (loan_id, seq, code) in attempts if loan_id == loan.loan_id and seq == i.sequence}
                deferred = {code for (loan_id, seq, code), a in attempts.items()
                            if loan_id == loan.loan_id and seq == i.sequence and a["status"] == "DEFERRED"}
                plan = plan_steps(steps, i.due_date, today, taken - deferred)
                for step in plan.superseded:
                    await self._record(conn, account_id, loan.loan_id, i.sequence, step, "SKIPPED", "SUPERSEDED",
                                       attempts, now, review)
                for step in plan.run:
                    status, reason = self._decide(step, promise_active, email_out, voice_out, phone_blocked,
                                                  channels, in_window, history, now, account["time_zone"])
                    await self._record(conn, account_id, loan.loan_id, i.sequence, step, status, reason, attempts,
                                       now, review)
                    if status == "PENDING":
                        history.append(PastContact(now, step.channel))
                        if step.escalates:
                            await rows.escalate(conn, account_id, f"STEP_{step.code}", now)

    def _decide(self, step: Step, promise_active: bool, email_out: bool, voice_out: bool, phone_blocked: bool,
                channels: frozenset[Channel], in_window: bool, history: list[PastContact], now: datetime,
                zone: str) -> tuple[str, str | None]:
        if promise_active:
            return "SUPPRESSED", Suppression.PROMISE_ACTIVE.value
        if (step.channel is Channel.EMAIL and email_out) or (step.channel is Channel.VOICE and voice_out):
            return "SUPPRESSED", Suppression.OPTED_OUT.value
        if step.channel is Channel.VOICE and phone_blocked:
            return "SUPPRESSED", Suppression.WRONG_NUMBER.value
        if step.channel not in channels:
            return "SUPPRESSED", Suppression.CHANNEL_UNAVAILABLE.value
        if not in_window:
            return "DEFERRED", Deferral.OUTSIDE_CONTACT_WINDOW.value
        if not within_caps(step.channel, now, zone, history, self.policy.caps):
            return "DEFERRED", Deferral.FREQUENCY_CAP.value
        return "PENDING", None

    async def _record(self, conn, account_id: UUID, loan_id: UUID, sequence: int, step: Step, status: str,
                      reason: str | None, attempts: dict, now: datetime, review: Review) -> None:
        existing = attempts.get((loan_id, sequence, step.code))
        if existing is not None:
            if existing["status"] == "DEFERRED" and (status, reason) != ("DEFERRED", existing["reason"]):
                await rows.set_attempt_status(conn, existing["attempt_id"], status, now, reason=reason)
                review.planned[status] += 1
            return
        await rows.insert_attempt(
            conn, attempt_id=uuid.uuid4(), account_id=account_id, loan_id=loan_id, sequence=sequence,
            step_code=step.code, channel=step.channel.value, status=status, reason=reason,
            message_id=message_id(loan_id, sequence, step.code, self.policy.mail_domain), now=now)
        review.planned[status] += 1

    # -- what the CollectionsService reads and changes -------------------------------------

    async def record_promise(self, conn: asyncpg.Connection, account_id: UUID, promised_date: date,
                             amount_minor: int, source: str) -> asyncpg.Record:
        account = await lock_account(conn, account_id)
        now = self._clock.now()
        today = local_date(now, account["time_zone"])
        if not today <= promised_date <= today + timedelta(days=PROMISE_MAX_DAYS_AHEAD):
            raise InvalidArgument.of("promised_date", f"must be between {today.isoformat()} and "
                                     f"{(today + timedelta(days=PROMISE_MAX_DAYS_AHEAD)).isoformat()}")
        if await rows.active_promise(conn, account_id) is not None:
            raise FailedPrecondition("account already has an active promise to pay")
        promise = await rows.insert_promise(conn, uuid.uuid4(), account_id, promised_date, amount_minor, source,
                                            await rows.paid_in_total(conn, account_id), now)
        await rows.event(conn, account_id, "PROMISE_RECORDED",
                         {"promised_date": promised_date.isoformat(), "amount_minor": amount_minor, "source": source},
                         now)
        return promise

    async def act_on_call(self, conn: asyncpg.Connection, account_id: UUID, outcome: str,
                          promised_date: date | None, amount_minor: int, now: datetime) -> None:
        """What a call's outcome changes: a promise, a payment check, a human queue, a
        blocked number. Runs in the transaction that records the outcome."""
        if outcome == "PROMISE_TO_PAY" and promised_date is not None:
            if await rows.active_promise(conn, account_id) is None:
                await rows.insert_promise(conn, uuid.uuid4(), account_id, promised_date, max(1, amount_minor),
                                          "VOICE", await rows.paid_in_total(conn, account_id), now)
                await rows.event(conn, account_id, "PROMISE_RECORDED",
                                 {"promised_date": promised_date.isoformat(), "amount_minor": amount_minor,
                                  "source": "VOICE"}, now)
        elif outcome == "CLAIMS_PAID":
            await rows.flag_payment_check(conn, account_id, now)
            await rows.event(conn, account_id, "CLAIMS_PAID", {}, now)
        elif outcome in ESCALATING_OUTCOMES:
            await rows.escalate(conn, account_id, ESCALATING_OUTCOMES[outcome], now)
        elif outcome == "WRONG_PERSON":
            await rows.block_phone(conn, account_id, now)
            await rows.event(conn, account_id, "PHONE_BLOCKED", {"reason": "WRONG_PERSON"}, now)

    async def waive_penalty(self, conn: asyncpg.Connection, loan_id: UUID, sequence: int, amount_minor: int,
                            reason: str) -> LoanView:
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise NotFound("loan_id", str(loan_id), "loan")
        account = await lock_account(conn, found[0]["account_id"])
        now = self._clock.now()
        loan, installment_rows = await loan_rows.get(conn, loan_id)
        installment = next((r for r in installment_rows if r["sequence"] == sequence), None)
        if installment is None:
            raise InvalidArgument.of("sequence", f"loan has no installment {sequence}")
        if loan["status"] != LoanStatus.ACTIVE:
            raise FailedPrecondition(f"loan is {loan['status']}; penalties can be waived on active loans only")
        unpaid = installment["penalty_minor"] - installment["penalty_paid_minor"]
        if amount_minor > unpaid:
            raise InvalidArgument.of("amount_minor", f"{amount_minor} exceeds the {unpaid} of unpaid penalty")
        await rows.waive(conn, uuid.uuid4(), account["account_id"], loan_id, sequence, amount_minor, reason, now)
        await ledger_rows.post(conn, account["account_id"], loan_id, ledger.penalty_waived(amount_minor), now)
        await rows.event(conn, account["account_id"], "PENALTY_WAIVED",
                         {"loan_id": str(loan_id), "sequence": sequence, "amount_minor": amount_minor,
                          "reason": reason}, now)
        found = await loan_rows.get(conn, loan_id)
        after = loan_view(found[0], found[1], account["time_zone"], now)
        if all(i.owed_minor == 0 for i in after.installments):
            await loan_rows.set_status(conn, account["account_id"], loan_id, LoanStatus.PAID_OFF.value, now)
            await reserve.release(conn, account["account_id"], loan_id, now)
            found = await loan_rows.get(conn, loan_id)
            after = loan_view(found[0], found[1], account["time_zone"], now)
        return after

    async def case(self, conn: asyncpg.Connection, account_id: UUID) -> CaseView:
        """The case as it stands now: lateness computed from the loans, the rest as the
        last pass and the operators left it."""
        account = await account_rows.get(conn, account_id)
        if account is None:
            raise NotFound("account_id", str(account_id), "account")
        now = self._clock.now()
        today = local_date(now, account["time_zone"])
        loans = await self._active_loans(conn, account, now)
        stored = await rows.case(conn, account_id)
        dpd = max((loan.days_past_due for loan in loans), default=0)
        current = bucket(dpd, self.policy.charge_off_days)
        if stored is not None and stored["bucket"] == Bucket.CHARGED_OFF and not loans:
            current = Bucket.CHARGED_OFF
        email_out, voice_out, phone_blocked = await rows.preferences(conn, account_id)
        return CaseView(
            account_id=account_id, bucket=current, days_past_due=dpd,
            overdue_minor=sum(i.owed_minor for loan in loans for i in loan.installments if i.due_date < today),
            penalty_owed_minor=sum(i.penalty_minor - i.penalty_paid_minor for loan in loans
                                   for i in loan.installments),
            escalation_reason=stored["escalation_reason"] if stored else None,
            needs_payment_check=bool(stored and stored["needs_payment_check"]),
            promise=await rows.active_promise(conn, account_id),
            preferences=(email_out, voice_out, phone_blocked),
            updated_at=stored["updated_at"] if stored else now)

    async def cases(self, conn: asyncpg.Connection, bucket_filter: Bucket | None, after: UUID,
                    limit: int) -> list[CaseView]:
        found = await rows.cases_page(conn, bucket_filter.value if bucket_filter else None, after, limit)
        return [await self.case(conn, r["account_id"]) for r in found]

    async def set_preferences(self, conn: asyncpg.Connection, account_id: UUID, email_opt_out: bool,
                              voice_opt_out: bool) -> tuple[bool, bool, bool]:
        await lock_account(conn, account_id)
        now = self._clock.now()
        row = await rows.set_preferences(conn, account_id, email_opt_out, voice_opt_out, now)
        await rows.event(conn, account_id, "CONTACT_PREFERENCES_SET",
                         {"email_opt_out": email_opt_out, "voice_opt_out": voice_opt_out}, now)
        return row["email_opt_out"], row["voice_opt_out"], row["phone_blocked"]

    async def attempts(self, conn: asyncpg.Connection, account_id: UUID, after: tuple[datetime, UUID] | None,
                       limit: int) -> list[asyncpg.Record]:
        if await account_rows.get(conn, account_id) is None:
            raise NotFound("account_id", str(account_id), "account")
        return await rows.attempts_page(conn, account_id, after, limit)

    async def _active_loans(self, conn, account: asyncpg.Record, now: datetime) -> list[LoanView]:
        return [loan_view(loan, installments, account["time_zone"], now)
                for loan, installments in await loan_rows.active_for_account(conn, account["account_id"])]
