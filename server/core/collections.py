"""Collections: ageing, penalties, charge-off, promises and reminder planning for one
account, plus what the CollectionsService reads and changes. The bot calls
`review_due_accounts` once a pass (each account reviewed with its row locked); the
server calls the rest. Contact attempts are written by `ContactAttempts` only."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from uuid import UUID

import asyncpg
import structlog

from server.clock import Clock
from server.core import funding as co_lending
from server.core import promises, reserve
from server.core.accounts import each_free_account, lock_account
from server.core.contact_attempts import NOTICE_TEMPLATE, AttemptPolicy, ContactAttempts, bill_lines
from server.core.repayments import Repayments
from server.core.views import LoanView, active_loans, installment_state, loan_view
from server.db import accounts as account_rows
from server.db import acquire
from server.db import collections as rows
from server.db import ledger as ledger_rows
from server.db import loans as loan_rows
from server.db import payment_orders as order_rows
from server.domain import auto_debit, funding, ledger
from server.domain.accounts import AccountStatus
from server.domain.bills import bills
from server.domain.calendar import latest_local_date, local_date
from server.domain.cases import Escalation, EscalationReason, PromiseSource
from server.domain.errors import FailedPrecondition, InvalidArgument, InvariantViolation, NotFound
from server.domain.funding import Owed
from server.domain.ledger import EntryKind
from server.domain.loans import Bucket, LoanStatus, bucket
from server.domain.money import round_half_up
from server.domain.penalties import PenaltyPolicy, accrue
from server.domain.reminders import (
    EMAIL_RETRY,
    REACHED,
    VOICE_RETRY,
    Attempt,
    AttemptKind,
    AttemptStatus,
    Channel,
    ContactFacts,
    ContactRules,
    ContactWindow,
    FrequencyCaps,
    PastContact,
    Reason,
    RetryPolicy,
    Step,
    hold_back,
    plan_steps,
)

log = structlog.get_logger(__name__)

PROMISE_MAX_DAYS_AHEAD = 7
# Look this far past today for installments with pre-due steps (the earliest is D-3).
PRE_DUE_HORIZON_DAYS = 4


@dataclass(frozen=True)
class CollectionsPolicy:
    penalty: PenaltyPolicy = field(default_factory=PenaltyPolicy)
    charge_off_days: int = 180
    window: ContactWindow = field(default_factory=ContactWindow)
    caps: FrequencyCaps = field(default_factory=FrequencyCaps)
    mail_domain: str = "credit.example"
    # The insured share of principal lost at charge-off, claimed back into the reserve.
    insurance_share_bps: int = 0
    email_retry: RetryPolicy = EMAIL_RETRY
    voice_retry: RetryPolicy = VOICE_RETRY
    # AUTO_DEBIT_HOUR: the notice of a failed auto-debit says when the next try is.
    auto_debit_hour: int = auto_debit.DEFAULT_MORNING_HOUR

    @property
    def attempts(self) -> AttemptPolicy:
        return AttemptPolicy(rules=ContactRules(self.window, self.caps), email_retry=self.email_retry,
                             voice_retry=self.voice_retry, penalty=self.penalty, mail_domain=self.mail_domain,
                             auto_debit_hour=self.auto_debit_hour)


@dataclass(frozen=True)
class CaseView:
    account_id: UUID
    bucket: Bucket
    days_past_due: int
    overdue_minor: int
    penalty_owed_minor: int
    escalation: Escalation | None
    needs_payment_check: bool
    promise: asyncpg.Record | None
    preferences: tuple[bool, bool, bool]
    updated_at: datetime
    # When bucket, days past due, overdue and penalty owed were computed.
    as_of: datetime


@dataclass
class Review:
    """What one review of an account did."""
    penalty_days: int = 0
    penalty_minor: int = 0
    bucket: str = "CURRENT"
    bucket_changed: bool = False
    charged_off: int = 0
    planned: dict[AttemptStatus, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class Reviews:
    """What one pass's reviews did, over every account they reached."""
    reviewed: int = 0
    busy: int = 0
    failed: int = 0
    penalty_days: int = 0
    penalty_minor: int = 0
    charged_off: int = 0
    planned: Counter = field(default_factory=Counter)

    def add(self, review: Review) -> None:
        self.reviewed += 1
        self.penalty_days += review.penalty_days
        self.penalty_minor += review.penalty_minor
        self.charged_off += review.charged_off
        self.planned.update({status.value: n for status, n in review.planned.items()})


class Collections:
    def __init__(self, clock: Clock, policy: CollectionsPolicy, repayments: Repayments,
                 attempts: ContactAttempts | None = None) -> None:
        self._clock = clock
        self.policy = policy
        self._repayments = repayments
        self.attempts = attempts or ContactAttempts(policy.attempts)

    # -- the bot's reviews ---------------------------------------------------------------

    async def steps(self, conn: asyncpg.Connection) -> list[Step]:
        """The reminder strategy as it stands: read once per pass."""
        return await self.attempts.strategy(conn)

    async def review_due_accounts(self, pool: asyncpg.Pool, now: datetime, channels: frozenset[Channel],
                                  batch_size: int) -> Reviews:
        """Review every account that needs it at `now`, each in its own transaction under
        a SKIP LOCKED lock: replicas share the work, an account busy elsewhere is left for
        the next pass, and an account whose review fails is rolled back, logged and left
        for the next pass while the others go on."""
        reviews = Reviews()
        # Installments with pre-due steps, by the latest "today" of any zone: each
        # account's own today decides the rest.
        horizon = latest_local_date(now) + timedelta(days=PRE_DUE_HORIZON_DAYS)
        async with acquire(pool) as conn:
            steps = await self.steps(conn)

        async def next_batch(conn, after):
            return await rows.accounts_to_review(conn, horizon, after, batch_size)

        async def review_one(conn, account):
            reviews.add(await self.review_account(conn, account, now, channels, steps))

        def failed(account_id: UUID, error: Exception) -> None:
            reviews.failed += 1
            log.error("account_review_failed", account_id=str(account_id), error=f"{type(error).__name__}: {error}",
                      exc_info=error)

        reviews.busy = await each_free_account(pool, next_batch, review_one, on_error=failed)
        return reviews

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
                # A co-funded loan's partner earns its share of the penalty.
                await co_lending.book(conn, account_id, loan.loan_id, EntryKind.PENALTY_ASSESSED, loan.loan_id,
                                      loan.owed, funding.penalty_steps(booked_for_loan), now)
                total += booked_for_loan
        if total:
            log.info("penalties_booked", account_id=str(account_id), days=days, amount_minor=total)
        return days, total

    async def _charge_off(self, conn, account: asyncpg.Record, loan: LoanView, now: datetime) -> None:
        unpaid_principal = sum(i.principal_minor - i.principal_paid_minor for i in loan.installments)
        unpaid_fee = sum(i.fee_minor - i.fee_paid_minor for i in loan.installments)
        unpaid_penalty = sum(i.penalty_minor - i.penalty_paid_minor for i in loan.installments)
        # The customer still owes the fees of periods due by today; later periods' fees
        # are waived, as on an early payoff (docs/repayment.md, "Recoveries").
        fee_due = sum(i.fee_minor - i.fee_paid_minor for i in loan.installments if i.due_date <= loan.today)
        if unpaid_principal:
            await account_rows.add_to_totals(conn, account["account_id"], principal_delta_minor=-unpaid_principal,
                                             now=now)
        claim = round_half_up(Fraction(unpaid_principal * self.policy.insurance_share_bps, 10_000))
        entries = []
        if unpaid_principal or unpaid_fee or unpaid_penalty:
            entry = ledger.loan_charged_off(principal_minor=unpaid_principal, fee_minor=unpaid_fee,
                                            penalty_minor=unpaid_penalty, insurance_claim_minor=claim)
            await ledger_rows.post(conn, account["account_id"], loan.loan_id, entry, now)
            entries.append(entry)
        # A co-funded loan's partner bears its share of the loss and recovers its share
        # of the insurance claim.
        owed = Owed(unpaid_principal, unpaid_fee, unpaid_penalty)
        changes = await co_lending.book(conn, account["account_id"], loan.loan_id, EntryKind.LOAN_CHARGED_OFF,
                                        loan.loan_id, owed, funding.charge_off_steps(owed), now,
                                        recovery_base_minor=claim)
        if changes is not None and changes.entry is not None:
            entries.append(changes.entry)
        # What the reserve itself carries: every posting of the event to it.
        reserve_loss = sum(p.amount_minor for entry in entries for p in entry.postings
                           if p.ledger_account is ledger.LedgerAccount.RISK_RESERVE)
        await rows.charge_off(conn, loan.loan_id, now, principal_minor=unpaid_principal, fee_minor=fee_due,
                              penalty_minor=unpaid_penalty, insurance_claim_minor=claim,
                              reserve_loss_minor=reserve_loss)
        if account["status"] != AccountStatus.CLOSED:
            await account_rows.set_status(conn, account["account_id"], AccountStatus.CLOSED.value, now)
        await rows.event(conn, account["account_id"], "LOAN_CHARGED_OFF",
                         {"loan_id": str(loan.loan_id), "principal_minor": unpaid_principal,
                          "days_past_due": loan.days_past_due}, now)
        log.info("loan_charged_off", loan_id=str(loan.loan_id), principal_minor=unpaid_principal)

    async def _age(self, conn, account_id: UUID, loans: list[LoanView], today: date, now: datetime,
                   review: Review) -> None:
        dpd = max((loan.days_past_due for loan in loans), default=0)
        charged_off = await rows.has_charged_off_loans(conn, account_id)
        current = Bucket.CHARGED_OFF if charged_off and not loans else bucket(dpd, self.policy.charge_off_days)
        overdue = sum(i.owed_minor for loan in loans for i in loan.installments if i.due_date < today)
        penalty_owed = sum(i.penalty_minor - i.penalty_paid_minor for loan in loans for i in loan.installments)
        existing = await rows.case(conn, account_id)
        if existing is None and current is Bucket.CURRENT:
            review.bucket = current.value
            return
        before = existing["bucket"] if existing else Bucket.CURRENT.value
        await rows.save_case(conn, account_id, current.value, dpd, overdue, penalty_owed, now)
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
            await rows.escalate(conn, account_id, Escalation(EscalationReason.BROKEN_PROMISE).stored(), now)
            log.info("promise_broken", account_id=str(account_id))

    async def _plan_reminders(self, conn, account: asyncpg.Record, loans: list[LoanView], today: date,
                              now: datetime, channels: frozenset[Channel], steps: list[Step],
                              review: Review) -> None:
        account_id = account["account_id"]
        zone = account["time_zone"]
        attempts = await self.attempts.of_account(conn, account_id)
        email_out, voice_out, phone_blocked = await rows.preferences(conn, account_id)
        promise_active = await rows.active_promise(conn, account_id) is not None
        _, email, phone = account_rows.contact(account)
        history = [PastContact(r["at"], Channel(r["channel"]), r["outcome"] in REACHED)
                   for r in await rows.recent_contacts(conn, account_id, now - timedelta(days=8))]
        tries = await self._debit_tries(conn, account_id, today)

        # One reminder schedule per bill: the steps of each due date with something
        # unpaid, whatever the number of loans on it.
        for due_date, bill in bills(bill_lines(loans)).items():
            mine = {code: a for (day, code), a in attempts.items() if day == due_date}
            taken = {code for code, a in mine.items() if a.status is not AttemptStatus.DEFERRED}
            plan = plan_steps(steps, due_date, today, taken)
            for step in plan.superseded:
                await self._record(conn, account_id, due_date, step, (AttemptStatus.SKIPPED, Reason.SUPERSEDED),
                                   mine.get(step.code), now, review)
            facts = ContactFacts(owed_minor=bill.owed_minor, promise_active=promise_active, email_opt_out=email_out,
                                 voice_opt_out=voice_out, phone_blocked=phone_blocked, has_email=bool(email),
                                 has_phone=bool(phone))

            def held(channel: Channel, facts=facts) -> tuple[AttemptStatus, Reason] | None:
                return hold_back(channel, facts, now, zone, self.attempts.policy.rules, channels=channels,
                                 history=history)

            for step in plan.run:
                status = await self._record(conn, account_id, due_date, step, held(step.channel),
                                            mine.get(step.code), now, review, history)
                if status is AttemptStatus.PENDING and step.escalates:
                    await rows.escalate(conn, account_id, Escalation.by_step(step.code).stored(), now)
            await self._plan_notice(conn, account_id, due_date, mine, tries.get(due_date, []), zone, now, held,
                                    review, history)

    async def _record(self, conn, account_id: UUID, due_date: date, step: Step,
                      held: tuple[AttemptStatus, Reason] | None, existing: Attempt | None, now: datetime,
                      review: Review, history: list[PastContact] | None = None, *,
                      payment_order_id: UUID | None = None) -> AttemptStatus | None:
        """Plan a step as `held` says (PENDING when nothing holds it back), counting it
        in the review and, when PENDING, in the customer's contacts under the caps. The
        status given, or None when nothing changed."""
        status, reason = held if held is not None else (AttemptStatus.PENDING, None)
        if not await self.attempts.plan(conn, account_id, due_date, step, status, reason, existing, now,
                                        payment_order_id=payment_order_id):
            return None
        review.planned[status] += 1
        if status is AttemptStatus.PENDING and history is not None:
            history.append(PastContact(now, step.channel))
        return status

    async def _debit_tries(self, conn, account_id: UUID, today: date) -> dict[date, list[auto_debit.Attempt]]:
        """The account's auto-debit tries by due date, of the due dates still tried."""
        found: dict[date, list[auto_debit.Attempt]] = defaultdict(list)
        for row in await order_rows.debit_tries_since(conn, account_id,
                                                      today - timedelta(days=auto_debit.REACH_DAYS + 1)):
            found[row["due_date"]].append(auto_debit.Attempt(row["attempt"], row["status"], row["completed_at"],
                                                             row["order_id"]))
        return found

    async def _plan_notice(self, conn, account_id: UUID, due_date: date, mine: dict[str, Attempt],
                           tries: list[auto_debit.Attempt], zone: str, now: datetime,
                           held: Callable[[Channel], tuple[AttemptStatus, Reason] | None], review: Review,
                           history: list[PastContact]) -> None:
        """The notice that the bill's latest auto-debit try failed, when one is to be
        told now (server/domain/auto_debit.py, rule 6): planned by the rules of any email
        step (it may wait for the contact window or the caps, and is suppressed if the
        bill is paid). A notice of an earlier try still waiting is superseded by it."""
        failed = auto_debit.latest_failure(tries)
        code = auto_debit.notice_step(failed.number) if failed is not None else None
        for other in mine.values():
            if (other.kind is AttemptKind.DEBIT_FAILED and other.status is AttemptStatus.DEFERRED
                    and other.step_code != code):
                await self._record(conn, account_id, due_date, _notice_step(other.step_code, 0),
                                   (AttemptStatus.SKIPPED, Reason.SUPERSEDED), other, now, review)
        if failed is None or code is None or failed.completed_at is None:
            return
        if code not in mine and auto_debit.failure_to_tell(tries, now) is None:
            # Too old to start telling; a notice planned in time still goes out.
            return
        offset = (local_date(failed.completed_at, zone) - due_date).days
        await self._record(conn, account_id, due_date, _notice_step(code, offset), held(Channel.EMAIL),
                           mine.get(code), now, review, history, payment_order_id=failed.order_id)

    # -- what the CollectionsService reads and changes -------------------------------------

    async def record_promise(self, conn: asyncpg.Connection, account_id: UUID, promised_date: date,
                             amount_minor: int, source: PromiseSource) -> asyncpg.Record:
        account = await lock_account(conn, account_id)
        now = self._clock.now()
        today = local_date(now, account["time_zone"])
        if not today <= promised_date <= today + timedelta(days=PROMISE_MAX_DAYS_AHEAD):
            raise InvalidArgument.of("promised_date", f"must be between {today.isoformat()} and "
                                     f"{(today + timedelta(days=PROMISE_MAX_DAYS_AHEAD)).isoformat()}")
        owed = sum(i.owed_minor for loan in await self._active_loans(conn, account, now) for i in loan.installments)
        if owed == 0:
            raise FailedPrecondition("account owes nothing; there is nothing to promise to pay")
        if await rows.active_promise(conn, account_id) is not None:
            raise FailedPrecondition("account already has an active promise to pay")
        return await promises.open_promise(conn, account_id, promised_date, amount_minor, source, now)

    async def waive_penalty(self, conn: asyncpg.Connection, loan_id: UUID, sequence: int, amount_minor: int,
                            reason: str) -> LoanView:
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise NotFound("loan_id", str(loan_id), "loan")
        account = await lock_account(conn, found[0]["account_id"])
        now = self._clock.now()
        loan, installment_rows = await self._loan(conn, loan_id)
        installment = next((r for r in installment_rows if r["sequence"] == sequence), None)
        if installment is None:
            raise InvalidArgument.of("sequence", f"loan has no installment {sequence}")
        if loan["status"] != LoanStatus.ACTIVE:
            raise FailedPrecondition(f"loan is {loan['status']}; penalties can be waived on active loans only")
        unpaid = installment["penalty_minor"] - installment["penalty_paid_minor"]
        if amount_minor > unpaid:
            raise InvalidArgument.of("amount_minor", f"{amount_minor} exceeds the {unpaid} of unpaid penalty")
        owed_before = funding.owed_by(installment_state(r) for r in installment_rows)
        await rows.waive(conn, uuid.uuid4(), account["account_id"], loan_id, sequence, amount_minor, reason, now)
        await ledger_rows.post(conn, account["account_id"], loan_id, ledger.penalty_waived(amount_minor), now)
        await co_lending.book(conn, account["account_id"], loan_id, EntryKind.PENALTY_WAIVED, loan_id, owed_before,
                              funding.waiver_steps(amount_minor), now)
        await rows.event(conn, account["account_id"], "PENALTY_WAIVED",
                         {"loan_id": str(loan_id), "sequence": sequence, "amount_minor": amount_minor,
                          "reason": reason}, now)
        after = loan_view(*await self._loan(conn, loan_id), account["time_zone"], now)
        if all(i.owed_minor == 0 for i in after.installments):
            await loan_rows.set_status(conn, account["account_id"], loan_id, LoanStatus.PAID_OFF.value, now)
            await reserve.release(conn, account["account_id"], loan_id, now)
            after = loan_view(*await self._loan(conn, loan_id), account["time_zone"], now)
        (after,) = await co_lending.with_funding(conn, [after])
        return after

    @staticmethod
    async def _loan(conn: asyncpg.Connection, loan_id: UUID) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        """A loan the caller has found and whose account it holds locked."""
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise InvariantViolation(f"loan {loan_id} went away under its account's lock")
        return found

    async def case(self, conn: asyncpg.Connection, account_id: UUID) -> CaseView:
        """The case as it stands now: lateness computed from the loans at this instant,
        the rest as the last pass and the operators left it."""
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
        return CaseView(
            account_id=account_id, bucket=current, days_past_due=dpd,
            overdue_minor=sum(i.owed_minor for loan in loans for i in loan.installments if i.due_date < today),
            penalty_owed_minor=sum(i.penalty_minor - i.penalty_paid_minor for loan in loans
                                   for i in loan.installments),
            escalation=_escalation(stored["escalation_reason"]) if stored else None,
            needs_payment_check=bool(stored and stored["needs_payment_check"]),
            promise=await rows.active_promise(conn, account_id),
            preferences=await rows.preferences(conn, account_id),
            updated_at=stored["updated_at"] if stored else now, as_of=now)

    async def cases(self, conn: asyncpg.Connection, bucket_filter: Bucket | None, after: UUID,
                    limit: int) -> list[CaseView]:
        """A page of cases as the last review of each left them: the bucket filtered on
        is the bucket shown, and `as_of` says when each was computed (GetCase computes
        one case afresh)."""
        found = await rows.cases_page(conn, bucket_filter.value if bucket_filter else None, after, limit)
        return [CaseView(
            account_id=r["account_id"], bucket=Bucket(r["bucket"]), days_past_due=r["days_past_due"],
            overdue_minor=r["overdue_minor"], penalty_owed_minor=r["penalty_owed_minor"],
            escalation=_escalation(r["escalation_reason"]), needs_payment_check=r["needs_payment_check"],
            promise=await rows.active_promise(conn, r["account_id"]),
            preferences=await rows.preferences(conn, r["account_id"]), updated_at=r["updated_at"],
            as_of=r["reviewed_at"]) for r in found]

    async def set_preferences(self, conn: asyncpg.Connection, account_id: UUID, email_opt_out: bool,
                              voice_opt_out: bool) -> tuple[bool, bool, bool]:
        await lock_account(conn, account_id)
        now = self._clock.now()
        row = await rows.set_preferences(conn, account_id, email_opt_out, voice_opt_out, now)
        await rows.event(conn, account_id, "CONTACT_PREFERENCES_SET",
                         {"email_opt_out": email_opt_out, "voice_opt_out": voice_opt_out}, now)
        return row["email_opt_out"], row["voice_opt_out"], row["phone_blocked"]

    async def _active_loans(self, conn, account: asyncpg.Record, now: datetime) -> list[LoanView]:
        return await active_loans(conn, account["account_id"], account["time_zone"], now)


def _notice_step(code: str, offset_days: int) -> Step:
    """A notice of a failed auto-debit as a step: an email on the day the try failed."""
    return Step(code, offset_days, Channel.EMAIL, NOTICE_TEMPLATE)


def _escalation(stored: str | None) -> Escalation | None:
    return Escalation.of_stored(stored) if stored is not None else None
