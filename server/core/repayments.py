"""Repayments through the waterfall, payoff quotes, refunds, and the credit balance."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from server.clock import Clock
from server.core import funding as co_lending
from server.core import reserve
from server.core.accounts import lock_account
from server.core.commands import Decided, Done, Key, NeedsLock, Replay, Write
from server.core.views import AccountView, LoanView, account_view, active_loans, loan_view
from server.core.views import write_off as written_off
from server.db import accounts as account_rows
from server.db import ledger as ledger_rows
from server.db import loans as loan_rows
from server.db import one
from server.db import repayments as repayment_rows
from server.domain import ledger, recoveries, waterfall
from server.domain.calendar import local_date
from server.domain.errors import FailedPrecondition, InvalidArgument, InvariantViolation, NotFound
from server.domain.ledger import EntryKind
from server.domain.loans import InstallmentState, LoanStatus
from server.domain.recoveries import WriteOff
from server.domain.waterfall import Allocated, Allocation, Component, Recovered

log = structlog.get_logger(__name__)

# The channel recorded when a credit balance, not new money, pays what is owed.
CREDIT_BALANCE_CHANNEL = "CREDIT_BALANCE"
# How far ahead a payoff may be quoted.
MAX_PAYOFF_QUOTE_DAYS = 366


@dataclass(frozen=True)
class Repay:
    account_id: UUID
    loan_id: UUID | None
    amount_minor: int
    channel: str


@dataclass(frozen=True)
class RefundLoan:
    loan_id: UUID
    amount_minor: int
    reason: str


@dataclass(frozen=True)
class RepaymentView:
    repayment_id: UUID
    account_id: UUID
    loan_id: UUID | None
    channel: str
    amount_minor: int
    applied_minor: int
    unapplied_minor: int
    waived_fee_minor: int
    allocations: tuple[Allocation, ...]
    account: AccountView
    created_at: datetime
    # What went to charged-off loans' written-off debt (counted in applied_minor).
    recoveries: tuple[Recovered, ...] = ()

    @property
    def recovered_minor(self) -> int:
        return sum(r.amount_minor for r in self.recoveries)


@dataclass(frozen=True)
class PayoffQuote:
    loan_id: UUID
    as_of: date
    payoff_minor: int
    principal_minor: int
    fee_minor: int
    penalty_minor: int
    waived_fee_minor: int


class Repayments:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def repay(self, conn: asyncpg.Connection, command: Repay, key: Key,
                    lock: bool) -> Replay | Decided[RepaymentView] | Done[RepaymentView]:
        """Read (one statement), allocate through the waterfall, and return the one
        statement that books it. A repayment that leaves money for the account's other
        debts, or meets a credit balance, runs step by step in the locked mode."""
        if lock:
            await lock_account(conn, command.account_id)
        now = self._clock.now()
        first, found = await repayment_rows.repay_read(conn, command.account_id, command.loan_id, key)
        if first["replay_sha256"] is not None:
            return Replay(first["replay_sha256"], first["replay_response"])
        if first["account_id"] is None:
            raise NotFound("account_id", str(command.account_id), "account")
        loans = [loan_view(loan, rows, first["time_zone"], now) for loan, rows in found]
        if first["written_off_owed_minor"] > 0:
            # The account's charged-off loans still owe written-off debt, which the
            # waterfall may reach: a recovery takes more statements than one.
            if not lock:
                raise NeedsLock(command.account_id)
            view = await self._repay_locked(conn, command)
            return Done(view, _repaid(view))
        if command.loan_id is not None:
            if not loans:
                # The read looks within the account only; tell a loan of another
                # account from none at all.
                if await loan_rows.account_of(conn, command.loan_id) is not None:
                    raise InvalidArgument.of("loan_id", "belongs to another account")
                raise NotFound("loan_id", str(command.loan_id), "loan")
            _check_in_scope(loans[0], command.account_id)
        today = local_date(now, first["time_zone"])
        allocated = waterfall.allocate([loan.balance for loan in loans], command.amount_minor, today)
        changed, paid_off = _settlement(loans, allocated)
        # Money left as credit balance pays the account's other debts at once: when some
        # may remain (a loan in scope not paid off, or loans outside the scope), that
        # takes more statements than one.
        if first["credit_balance_minor"] + allocated.unapplied_minor > 0 and (
                command.loan_id is not None or len(paid_off) < len(loans)):
            if not lock:
                raise NeedsLock(command.account_id)
            view = await self._repay_locked(conn, command)
            return Done(view, _repaid(view))
        provisions = {loan["loan_id"]: loan["provision_minor"] for loan, _ in found}
        repayment_id = uuid.uuid4()
        principal = allocated.total(Component.PRINCIPAL)
        entries = [(repayment_id, ledger.repayment_received(
            principal_minor=principal, fee_minor=allocated.total(Component.FEE),
            penalty_minor=allocated.total(Component.PENALTY), unapplied_minor=allocated.unapplied_minor,
            waived_fee_minor=allocated.waived_minor))]
        entries += [(loan.loan_id, ledger.reserve_released(provisions[loan.loan_id]))
                    for loan in paid_off if provisions[loan.loan_id]]
        # Co-funded loans: each funder's part of what was paid, in the same write.
        touched = {a.loan_id for a in allocated.allocations} | {w.loan_id for w in allocated.waivers}
        funding_changes = co_lending.FundingChanges(EntryKind.REPAYMENT_RECEIVED, repayment_id)
        for loan, (row, _) in zip(loans, found, strict=True):
            if loan.loan_id in touched:
                funding_changes.add(loan.loan_id, co_lending.funder_stakes_of_arrays(row), loan.owed,
                                    co_lending.payment_steps(allocated, loan.loan_id))
        partner_entry = funding_changes.entry
        if partner_entry is not None:
            entries.append((repayment_id, partner_entry))
        args = repayment_rows.repay_args(
            account_id=command.account_id, version=first["version"], principal_minor=principal,
            unapplied_minor=allocated.unapplied_minor, installments=changed,
            paid_off=[loan.loan_id for loan in paid_off], repayment_id=repayment_id, loan_id=command.loan_id,
            channel=command.channel, amount_minor=command.amount_minor, applied_minor=allocated.applied_minor,
            waived_fee_minor=allocated.waived_minor, allocations=allocated.allocations,
            head=ledger_rows.head_of(first), entries=entries, now=now)
        after = dict(first.items())
        after["outstanding_principal_minor"] -= principal
        after["credit_balance_minor"] += allocated.unapplied_minor
        if principal or allocated.unapplied_minor:
            after["updated_at"] = now
        view = RepaymentView(
            repayment_id=repayment_id, account_id=command.account_id, loan_id=command.loan_id,
            channel=command.channel, amount_minor=command.amount_minor, applied_minor=allocated.applied_minor,
            unapplied_minor=allocated.unapplied_minor, waived_fee_minor=allocated.waived_minor,
            allocations=allocated.allocations, account=account_view(after, now), created_at=now)
        outcome = _repaid(view)
        if paid_off:
            outcome["loans_paid_off"] = [str(loan.loan_id) for loan in paid_off]
        if funding_changes.empty:
            return Decided(view, Write(repayment_rows.REPAY_WRITE, args), command.account_id, outcome)
        return Decided(view, Write(repayment_rows.REPAY_WRITE_CO_FUNDED, args + funding_changes.arrays()),
                       command.account_id, outcome)

    async def receive(self, conn: asyncpg.Connection, command: Repay, repayment_id: UUID) -> RepaymentView:
        """Money that reached us outside a Repay call (an auto-debit), booked exactly as
        Repay books it, in the caller's transaction, under the id the caller gives: the
        id of what brought the money, so that it is recorded once."""
        return await self._repay_locked(conn, command, repayment_id)

    async def _repay_locked(self, conn: asyncpg.Connection, command: Repay,
                            repayment_id: UUID | None = None) -> RepaymentView:
        """Repay with every step its own statement, in the caller's transaction."""
        now = self._clock.now()
        account = await lock_account(conn, command.account_id)
        today = local_date(now, account["time_zone"])
        loans, write_offs = await self._in_scope(conn, account, command.loan_id, now)
        allocated = waterfall.allocate([loan.balance for loan in loans], command.amount_minor, today,
                                       [w.debt for w in write_offs.values()])
        repayment_id = repayment_id or uuid.uuid4()
        await self._settle(conn, account["account_id"], loans, allocated, now, EntryKind.REPAYMENT_RECEIVED,
                           repayment_id)
        await repayment_rows.insert(
            conn, repayment_id=repayment_id, account_id=account["account_id"], loan_id=command.loan_id,
            channel=command.channel, amount_minor=command.amount_minor, applied_minor=allocated.applied_minor,
            unapplied_minor=allocated.unapplied_minor, waived_fee_minor=allocated.waived_minor,
            allocations=allocated.allocations, now=now)
        if allocated.unapplied_minor:
            await repayment_rows.add_to_credit_balance(conn, account["account_id"], allocated.unapplied_minor, now)
        if allocated.allocations or allocated.waivers or allocated.unapplied_minor:
            await ledger_rows.post(conn, account["account_id"], repayment_id, ledger.repayment_received(
                principal_minor=allocated.total(Component.PRINCIPAL), fee_minor=allocated.total(Component.FEE),
                penalty_minor=allocated.total(Component.PENALTY), unapplied_minor=allocated.unapplied_minor,
                waived_fee_minor=allocated.waived_minor), now)
        await self._recover(conn, account["account_id"], write_offs, allocated, ledger.LedgerAccount.CASH,
                            repayment_id, now)
        log.info("repayment_received", repayment_id=str(repayment_id), amount_minor=command.amount_minor,
                 applied_minor=allocated.applied_minor, unapplied_minor=allocated.unapplied_minor,
                 recovered_minor=allocated.recovered_minor)
        # Money left over from a payment to one loan pays the account's other debts.
        await self.apply_credit_balance(conn, account["account_id"], now)
        after = one(await account_rows.get(conn, account["account_id"]))
        return RepaymentView(
            repayment_id=repayment_id, account_id=account["account_id"], loan_id=command.loan_id,
            channel=command.channel, amount_minor=command.amount_minor, applied_minor=allocated.applied_minor,
            unapplied_minor=allocated.unapplied_minor, waived_fee_minor=allocated.waived_minor,
            allocations=allocated.allocations, account=account_view(after, now), created_at=now,
            recoveries=allocated.recoveries)

    async def _recover(self, conn: asyncpg.Connection, account_id: UUID, write_offs: dict[UUID, WriteOff],
                       allocated: Allocated, source: ledger.LedgerAccount, repayment_id: UUID,
                       now: datetime) -> None:
        """Book what an allocation recovered of charged-off loans' written-off debt
        (server/domain/recoveries.py): each loan's recovery, the RECOVERY_RECEIVED entry
        (the loans whole) and the partners' parts. The repayment must be recorded."""
        recovered = recoveries.recoveries(write_offs, allocated)
        if not recovered:
            return
        await ledger_rows.post(conn, account_id, repayment_id, ledger.recovery_received(
            source=source, principal_minor=sum(r.amount.principal_minor for r in recovered),
            fee_minor=sum(r.amount.fee_minor for r in recovered),
            penalty_minor=sum(r.amount.penalty_minor for r in recovered),
            insurer_minor=sum(r.insurer_minor for r in recovered)), now)
        partner_parts = await co_lending.book_recoveries(conn, account_id, recovered, repayment_id, now)
        for recovery in recovered:
            await loan_rows.record_recovery(
                conn, repayment_id=repayment_id, loan_id=recovery.loan_id, account_id=account_id,
                principal_minor=recovery.amount.principal_minor, fee_minor=recovery.amount.fee_minor,
                penalty_minor=recovery.amount.penalty_minor, insurer_minor=recovery.insurer_minor,
                reserve_minor=recovery.to_reserve_minor - partner_parts.get(recovery.loan_id, 0), now=now)
            log.info("loan_recovered", loan_id=str(recovery.loan_id), recovered_minor=recovery.amount.total_minor,
                     insurer_minor=recovery.insurer_minor)

    async def quote_payoff(self, conn: asyncpg.Connection, loan_id: UUID, as_of: date | None) -> PayoffQuote:
        loan = await self._loan(conn, loan_id)
        today = loan.today
        as_of = as_of or today
        if as_of < today:
            raise InvalidArgument.of("as_of", f"must be today ({today.isoformat()}) or later in the account's zone")
        if (as_of - today).days > MAX_PAYOFF_QUOTE_DAYS:
            raise InvalidArgument.of("as_of", f"must be within {MAX_PAYOFF_QUOTE_DAYS} days")
        if loan.write_off is not None:
            # A charged-off loan: what is left of its written-off debt, nothing waived.
            left = loan.write_off.owed
            return PayoffQuote(
                loan_id=loan_id, as_of=as_of, payoff_minor=left.total_minor, principal_minor=left.principal_minor,
                fee_minor=left.fee_minor, penalty_minor=left.penalty_minor, waived_fee_minor=0)
        owed = sum(i.owed_minor for i in loan.installments) if loan.status is LoanStatus.ACTIVE else 0
        allocated = waterfall.allocate([loan.balance], owed, as_of)
        return PayoffQuote(
            loan_id=loan_id, as_of=as_of, payoff_minor=allocated.applied_minor,
            principal_minor=allocated.total(Component.PRINCIPAL), fee_minor=allocated.total(Component.FEE),
            penalty_minor=allocated.total(Component.PENALTY), waived_fee_minor=allocated.waived_minor)

    async def refund(self, conn: asyncpg.Connection, command: RefundLoan) -> LoanView:
        now = self._clock.now()
        found = await loan_rows.get(conn, command.loan_id)
        if found is None:
            raise NotFound("loan_id", str(command.loan_id), "loan")
        account = await lock_account(conn, found[0]["account_id"])
        loan = await self._loan(conn, command.loan_id, account["time_zone"], now)
        if loan.status not in (LoanStatus.ACTIVE, LoanStatus.PAID_OFF):
            raise FailedPrecondition(f"loan is {loan.status}; only an active or paid-off loan can be refunded")
        refundable = loan.principal_minor - loan.refunded_minor
        if command.amount_minor > refundable:
            raise InvalidArgument.of(
                "amount_minor", f"{command.amount_minor} exceeds the {refundable} of principal not yet refunded")
        result = waterfall.refund(loan.installments, command.amount_minor, loan.today)
        refund_id = uuid.uuid4()
        await co_lending.book(conn, account["account_id"], loan.loan_id, EntryKind.LOAN_REFUNDED, refund_id,
                              loan.owed, co_lending.refund_steps(result), now)
        installments = waterfall.apply_refund(loan.installments, result)
        await loan_rows.update_installments(conn, account["account_id"], loan.loan_id, installments, {})
        status = (LoanStatus.CANCELLED if result.cancels_loan
                  else LoanStatus.PAID_OFF if all(i.owed_minor == 0 for i in installments) else loan.status)
        await loan_rows.set_status(conn, account["account_id"], loan.loan_id, status.value, now,
                                   refunded_delta_minor=command.amount_minor)
        if loan.status is LoanStatus.ACTIVE and status is not LoanStatus.ACTIVE:
            await reserve.release(conn, account["account_id"], loan.loan_id, now)
        if loan.status is LoanStatus.ACTIVE and result.unpaid_principal_cut_minor:
            await account_rows.add_to_totals(conn, account["account_id"],
                                             principal_delta_minor=-result.unpaid_principal_cut_minor, now=now)
        if result.returned_minor:
            await repayment_rows.add_to_credit_balance(conn, account["account_id"], result.returned_minor, now)
        await repayment_rows.insert_refund(
            conn, refund_id=refund_id, account_id=account["account_id"], loan_id=loan.loan_id,
            amount_minor=command.amount_minor, returned_minor=result.returned_minor, reason=command.reason, now=now)
        principal_returned = sum(line.principal_returned_minor for line in result.lines)
        await ledger_rows.post(conn, account["account_id"], refund_id, ledger.loan_refunded(
            principal_unpaid_minor=result.unpaid_principal_cut_minor,
            principal_returned_minor=principal_returned,
            fee_unpaid_minor=result.unpaid_fee_cut_minor,
            fee_returned_minor=sum(line.fee_returned_minor for line in result.lines),
            penalty_unpaid_minor=result.unpaid_penalty_cut_minor,
            penalty_returned_minor=sum(line.penalty_returned_minor for line in result.lines)), now)
        log.info("loan_refunded", loan_id=str(loan.loan_id), amount_minor=command.amount_minor,
                 returned_minor=result.returned_minor, cancelled=result.cancels_loan)
        await self.apply_credit_balance(conn, account["account_id"], now)
        (after,) = await co_lending.with_funding(conn, [await self._loan(conn, loan.loan_id, account["time_zone"],
                                                                         now)])
        return after

    async def apply_credit_balance(self, conn: asyncpg.Connection, account_id: UUID, now: datetime) -> int:
        """Use the locked account's credit balance against what it owes, through the
        waterfall; returns the amount applied. Called whenever a capture or refund
        changes what is owed or what is held, so money never sits idle beside a debt."""
        account = one(await account_rows.get(conn, account_id))
        credit = account["credit_balance_minor"]
        if credit == 0:
            return 0
        loans = await self._active_loans(conn, account, now)
        write_offs = await self._write_offs(conn, account)
        if not loans and not write_offs:
            return 0
        today = local_date(now, account["time_zone"])
        allocated = waterfall.allocate([loan.balance for loan in loans], credit, today,
                                       [w.debt for w in write_offs.values()])
        if allocated.applied_minor == 0 and not allocated.waivers:
            return 0
        repayment_id = uuid.uuid4()
        await self._settle(conn, account_id, loans, allocated, now, EntryKind.CREDIT_BALANCE_APPLIED, repayment_id)
        if allocated.applied_minor:
            await repayment_rows.insert(
                conn, repayment_id=repayment_id, account_id=account_id, loan_id=None,
                channel=CREDIT_BALANCE_CHANNEL, amount_minor=allocated.applied_minor,
                applied_minor=allocated.applied_minor, unapplied_minor=0, waived_fee_minor=allocated.waived_minor,
                allocations=allocated.allocations, now=now)
            await repayment_rows.add_to_credit_balance(conn, account_id, -allocated.applied_minor, now)
        if allocated.allocations or allocated.waivers:
            await ledger_rows.post(conn, account_id, repayment_id, ledger.credit_balance_applied(
                principal_minor=allocated.total(Component.PRINCIPAL), fee_minor=allocated.total(Component.FEE),
                penalty_minor=allocated.total(Component.PENALTY), waived_fee_minor=allocated.waived_minor), now)
        await self._recover(conn, account_id, write_offs, allocated, ledger.LedgerAccount.CUSTOMER_CREDIT_BALANCE,
                            repayment_id, now)
        log.info("credit_balance_applied", account_id=str(account_id), applied_minor=allocated.applied_minor)
        return allocated.applied_minor

    async def _settle(self, conn: asyncpg.Connection, account_id: UUID, loans: list[LoanView],
                      allocated: Allocated, now: datetime, kind: ledger.EntryKind, reference_id: UUID) -> None:
        """Write what an allocation paid and waived: installments, loans paid off, the
        principal repaid, which gives the limit back at once, and each funder's part."""
        await co_lending.book_allocation(conn, account_id, loans, allocated, kind, reference_id, now)
        changed, paid_off = _settlement(loans, allocated)
        for loan in loans:
            states = [state for loan_id, state, _ in changed if loan_id == loan.loan_id]
            if states:
                waived = {state.sequence: fee for loan_id, state, fee in changed if loan_id == loan.loan_id}
                await loan_rows.update_installments(conn, account_id, loan.loan_id, states, waived)
        for loan in paid_off:
            await loan_rows.set_status(conn, account_id, loan.loan_id, LoanStatus.PAID_OFF.value, now)
            await reserve.release(conn, account_id, loan.loan_id, now)
            log.info("loan_paid_off", loan_id=str(loan.loan_id))
        principal = allocated.total(Component.PRINCIPAL)
        if principal:
            await account_rows.add_to_totals(conn, account_id, principal_delta_minor=-principal, now=now)

    async def _in_scope(self, conn: asyncpg.Connection, account: asyncpg.Record, loan_id: UUID | None,
                        now: datetime) -> tuple[list[LoanView], dict[UUID, WriteOff]]:
        """What a payment may reach: the account's active loans and the written-off debt
        of its charged-off loans, oldest first; or the one loan named."""
        if loan_id is None:
            return await self._active_loans(conn, account, now), await self._write_offs(conn, account)
        loan = await self._loan(conn, loan_id, account["time_zone"], now)
        _check_in_scope(loan, account["account_id"])
        if loan.write_off is not None:
            return [], {loan.loan_id: loan.write_off}
        return [loan], {}

    async def _write_offs(self, conn: asyncpg.Connection, account: asyncpg.Record) -> dict[UUID, WriteOff]:
        """The written-off debt the account's charged-off loans still owe, oldest loan first."""
        found = {}
        for row in await loan_rows.owing_charged_off_for_account(conn, account["account_id"]):
            write_off = written_off(row)
            if write_off is None:
                raise InvariantViolation(f"loan {row['loan_id']} is read as charged off and is not")
            found[write_off.loan_id] = write_off
        return found

    async def _active_loans(self, conn: asyncpg.Connection, account: asyncpg.Record, now: datetime) -> list[LoanView]:
        return await active_loans(conn, account["account_id"], account["time_zone"], now)

    async def _loan(self, conn: asyncpg.Connection, loan_id: UUID, time_zone: str | None = None,
                    now: datetime | None = None) -> LoanView:
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise NotFound("loan_id", str(loan_id), "loan")
        loan, rows = found
        if time_zone is None:
            time_zone = one(await account_rows.get(conn, loan["account_id"]))["time_zone"]
        return loan_view(loan, rows, time_zone, now or self._clock.now())


def _check_in_scope(loan: LoanView, account_id: UUID) -> None:
    """A repayment to one loan: the loan must be the account's, and active, or charged
    off with written-off debt left."""
    if loan.account_id != account_id:
        raise InvalidArgument.of("loan_id", "belongs to another account")
    if loan.write_off is not None:
        if loan.write_off.owed.total_minor == 0:
            raise FailedPrecondition("loan is CHARGED_OFF and its written-off debt is recovered in full; "
                                     "repay the account instead to keep a credit balance")
        return
    if loan.status is not LoanStatus.ACTIVE:
        raise FailedPrecondition(f"loan is {loan.status}; repay the account instead to keep a credit balance")


def _settlement(loans: list[LoanView],
                allocated: Allocated) -> tuple[list[tuple[UUID, InstallmentState, int]], list[LoanView]]:
    """What an allocation changes: each installment it touches as (loan, state after,
    fee waived now), and the loans it pays off."""
    touched = {a.loan_id for a in allocated.allocations} | {w.loan_id for w in allocated.waivers}
    changed: list[tuple[UUID, InstallmentState, int]] = []
    paid_off: list[LoanView] = []
    for loan in loans:
        if loan.loan_id not in touched:
            continue
        installments = waterfall.apply(loan.installments, loan.loan_id, allocated)
        waived = {w.sequence: w.amount_minor for w in allocated.waivers if w.loan_id == loan.loan_id}
        changed += [(loan.loan_id, after, waived.get(after.sequence, 0))
                    for before, after in zip(loan.installments, installments, strict=True) if after != before]
        if all(i.owed_minor == 0 for i in installments):
            paid_off.append(loan)
    return changed, paid_off


def _repaid(view: RepaymentView) -> dict[str, Any]:
    return {"outcome": "repayment_received", "repayment_id": str(view.repayment_id),
            "amount_minor": view.amount_minor, "applied_minor": view.applied_minor,
            "unapplied_minor": view.unapplied_minor}
