"""Co-lending in the core: the partners as read at start, the offer a capture makes to
one of them, and what every later event does to a co-funded loan's funders (their
stakes, their settlement items, their exposure counters and the partner entry), built
for a one-statement write or written in a locked account's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from server.core.views import LoanView, Row
from server.db import funding as funding_rows
from server.db import ledger as ledger_rows
from server.domain import funding, ledger, recoveries
from server.domain.errors import AlreadyExists, InvalidArgument, InvariantViolation, NotFound
from server.domain.funding import PLATFORM, FunderStake, Funding, Moved, Owed, Partner, Shares, Step
from server.domain.journal import Head
from server.domain.ledger import EntryKind, JournalEntry
from server.domain.pricing import Grade
from server.domain.recoveries import Recovery
from server.domain.waterfall import Allocated, Component, Refund

log = structlog.get_logger(__name__)


def partner_from_row(row: Row) -> Partner:
    return Partner(
        partner_id=row["partner_id"], name=row["name"],
        shares=Shares(row["principal_share_bps"], row["fee_share_bps"]),
        max_exposure_minor=row["max_exposure_minor"], grades=frozenset(Grade(g) for g in row["grades"]),
        terms=frozenset(row["terms"]), active=row["active"], exposure_stripes=row["exposure_stripes"])


class Partners:
    """The funding partners, read once at start: a capture chooses from this copy and
    makes no read for it. Changes made with `python -m server.funding` reach a server
    when it restarts, but for the exposure caps (and so a deactivation, which closes
    them), which captures check in the database at once."""

    def __init__(self, partners: Sequence[Partner] = ()) -> None:
        self._partners = tuple(partners)

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> Partners:
        partners = cls([partner_from_row(r) for r in await funding_rows.partners(conn)])
        log.info("funding_partners_loaded", partners=[p.partner_id for p in partners._partners if p.active])
        return partners

    def __len__(self) -> int:
        return len(self._partners)

    def offer(self, grade: Grade, term_months: int) -> Partner | None:
        return funding.choose(self._partners, grade, term_months)


@dataclass(frozen=True)
class CaptureOffer:
    """A capture's offer of its loan to a partner: the parameters of the co-funding
    CTEs (server/db/funding.co_funding_ctes), less the partner entry's."""

    partner: Partner
    partner_principal_minor: int
    preferred_stripe: int
    funders: tuple[tuple[str, int, int, int, int], ...]
    entry: JournalEntry

    def args(self, account_id: UUID, loan_id: UUID, head: Head, now: datetime) -> tuple[Any, ...]:
        """The parameters, the partner entry chained after `head` of the account."""
        _, entry_arrays = ledger_rows.entry_arrays(account_id, head, [(loan_id, self.entry)], now)
        return (self.partner_principal_minor, self.partner.partner_id, self.preferred_stripe,
                [f[0] for f in self.funders], [f[1] for f in self.funders], [f[2] for f in self.funders],
                [f[3] for f in self.funders], [f[4] for f in self.funders], *entry_arrays)


def capture_offer(partners: Partners, account_id: UUID, grade: Grade, term_months: int, principal_minor: int,
                  total_fee_minor: int) -> CaptureOffer | None:
    """What a capture offers the partner that accepts the loan, if any. A loan too small
    for the partner's share to reach a fen of principal is not offered."""
    partner = partners.offer(grade, term_months)
    if partner is None:
        return None
    moved = funding.move(partner.partner_id, partner.shares, Owed(),
                         funding.capture_steps(principal_minor, total_fee_minor))
    if moved.after.principal_minor == 0:
        return None
    entry = ledger.partner_shares(EntryKind.LOAN_CO_FUNDED, [moved])
    if entry is None:
        return None
    shares = partner.shares
    platform = funding.platform_stake(Owed(principal_minor, total_fee_minor), [moved.after])
    return CaptureOffer(
        partner=partner, partner_principal_minor=moved.after.principal_minor,
        preferred_stripe=funding.stripe_of(account_id, partner.exposure_stripes),
        funders=((PLATFORM, funding.BPS - shares.principal_share_bps, funding.BPS - shares.fee_share_bps,
                  platform.principal_minor, platform.fee_minor),
                 (partner.partner_id, shares.principal_share_bps, shares.fee_share_bps,
                  moved.after.principal_minor, moved.after.fee_minor)),
        entry=entry)


def funder_stakes(rows: Sequence[Row]) -> list[FunderStake]:
    """A loan's funders from its loan_funding rows."""
    return [FunderStake(r["funder_id"], Shares(r["principal_share_bps"], r["fee_share_bps"]),
                        r["funded_principal_minor"], Owed(r["principal_minor"], r["fee_minor"], r["penalty_minor"]),
                        r["exposure_stripe"]) for r in rows]


async def with_funding(conn: asyncpg.Connection, loans: Sequence[LoanView]) -> list[LoanView]:
    """The loans (of one account) with their funders read."""
    if not loans:
        return []
    by_loan = await funding_rows.funding_of_loans(conn, loans[0].account_id, [loan.loan_id for loan in loans])
    return [dc_replace(loan, funding=tuple(funder_stakes(by_loan.get(loan.loan_id, [])))) for loan in loans]


def funder_stakes_of_arrays(loan: Mapping[str, Any]) -> list[FunderStake]:
    """A loan's funders from the arrays of server/db/funding.funders_of_loan."""
    ids = loan.get("funder_ids")
    if not ids:
        return []
    columns = ("principal_share_bps", "fee_share_bps", "funded_principal_minor", "principal_minor", "fee_minor",
               "penalty_minor", "exposure_stripe")
    values = {name: loan["funder_" + name] for name in columns}
    return funder_stakes([{"funder_id": funder_id, **{name: values[name][n] for name in columns}}
                          for n, funder_id in enumerate(ids)])


@dataclass
class FundingChanges:
    """What one event does to the funders of the loans it touches: the stakes after,
    the partners' settlement items and exposure moves, and the partner entry. `kind`
    is the event's (the kind of its own entry), which the settlement items carry."""

    kind: EntryKind
    reference_id: UUID
    fundings: list[tuple[Funding, list[FunderStake]]] = field(default_factory=list)

    def add(self, loan_id: UUID, funders: Sequence[FunderStake], owed_before: Owed, steps: Sequence[Step],
            recovery_base_minor: int = 0) -> Funding | None:
        """Book an event's steps on one loan; nothing when the loan is the platform's alone."""
        if not funders:
            return None
        result = funding.fund(loan_id, funders, owed_before, steps, recovery_base_minor)
        self.fundings.append((result, list(funders)))
        return result

    def add_moves(self, loan_id: UUID, funders: Sequence[FunderStake], moves: Sequence[Moved]) -> None:
        """Book partners' moves worked out elsewhere (recoveries) on a loan whose stakes
        they leave as they are."""
        if any(moved.before != moved.after for moved in moves):
            raise InvariantViolation(f"loan {loan_id}: a partner's stake moves outside the split rule")
        owed = Owed()
        for funder in funders:
            owed = owed.added(funder.stake)
        self.fundings.append((Funding(loan_id, tuple(moves), owed), list(funders)))

    @property
    def moves(self) -> list[Moved]:
        return [m for result, _ in self.fundings for m in result.moves]

    @property
    def empty(self) -> bool:
        return not self.fundings

    @property
    def entry(self) -> JournalEntry | None:
        return ledger.partner_shares(EntryKind.PARTNER_SHARES_MOVED, self.moves)

    def arrays(self) -> tuple[Any, ...]:
        """The parameters of server/db/funding.changes_ctes."""
        stakes: list[tuple[UUID, str, int, int, int]] = []
        items: list[tuple[UUID, UUID, str, str, int, int, int, int]] = []
        exposure: list[tuple[str, int, int]] = []
        for result, funders in self.fundings:
            stripes = {f.funder_id: f.exposure_stripe for f in funders}
            after = {m.funder_id: m.after for m in result.moves}
            after[PLATFORM] = result.platform_after
            for funder in funders:
                held = after[funder.funder_id]
                stakes.append((result.loan_id, funder.funder_id, held.principal_minor, held.fee_minor,
                               held.penalty_minor))
            for moved in result.moves:
                principal, fee, penalty = (moved.settled_minor(c)
                                           for c in (Component.PRINCIPAL, Component.FEE, Component.PENALTY))
                recovery = moved.recovery_minor + moved.recovered_fee_minor
                if principal or fee or penalty or recovery:
                    items.append((uuid.uuid4(), result.loan_id, moved.funder_id, self.kind.value, principal, fee,
                                  penalty, recovery))
                delta = moved.after.principal_minor - moved.before.principal_minor
                stripe = stripes[moved.funder_id]
                if delta and stripe is not None:
                    exposure.append((moved.funder_id, stripe, delta))
        return funding_rows.change_arrays(stakes, items, self.reference_id, exposure)


async def apply(conn: asyncpg.Connection, account_id: UUID, changes: FundingChanges, now: datetime) -> None:
    """Write an event's funding changes in a locked account's transaction."""
    if changes.empty:
        return
    await funding_rows.apply_changes(conn, account_id, now, changes.arrays())
    entry = changes.entry
    if entry is not None:
        await ledger_rows.post(conn, account_id, changes.reference_id, entry, now)


def payment_steps(allocated: Allocated, loan_id: UUID) -> tuple[Step, ...]:
    """The steps of an allocation (a payment, or a credit balance used) on one loan."""
    mine = [a for a in allocated.allocations if a.loan_id == loan_id]
    return funding.payment_steps(
        principal_minor=sum(a.amount_minor for a in mine if a.component is Component.PRINCIPAL),
        fee_minor=sum(a.amount_minor for a in mine if a.component is Component.FEE),
        penalty_minor=sum(a.amount_minor for a in mine if a.component is Component.PENALTY),
        waived_fee_minor=sum(w.amount_minor for w in allocated.waivers if w.loan_id == loan_id))


def refund_steps(result: Refund) -> tuple[Step, ...]:
    return funding.refund_steps(
        principal_cut_minor=result.principal_cut_minor,
        principal_returned_minor=sum(line.principal_returned_minor for line in result.lines),
        fee_cut_minor=sum(line.fee_cut_minor for line in result.lines),
        fee_returned_minor=sum(line.fee_returned_minor for line in result.lines),
        penalty_cut_minor=sum(line.penalty_cut_minor for line in result.lines),
        penalty_returned_minor=sum(line.penalty_returned_minor for line in result.lines))


async def book_allocation(conn: asyncpg.Connection, account_id: UUID, loans: Sequence[LoanView],
                          allocated: Allocated, kind: EntryKind, reference_id: UUID, now: datetime) -> None:
    """What an allocation over a locked account's loans did to their funders."""
    touched = [loan for loan in loans if loan.loan_id in {a.loan_id for a in allocated.allocations}
               | {w.loan_id for w in allocated.waivers}]
    if not touched:
        return
    by_loan = await funding_rows.funding_of_loans(conn, account_id, [loan.loan_id for loan in touched])
    changes = FundingChanges(kind, reference_id)
    for loan in touched:
        changes.add(loan.loan_id, funder_stakes(by_loan.get(loan.loan_id, [])), loan.owed,
                    payment_steps(allocated, loan.loan_id))
    await apply(conn, account_id, changes, now)


async def book(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, kind: EntryKind, reference_id: UUID,
               owed_before: Owed, steps: Sequence[Step], now: datetime,
               recovery_base_minor: int = 0) -> FundingChanges | None:
    """One event on one loan of a locked account: read its funders and write what the
    event did to them (nothing when the loan is the platform's alone). Returns what was
    written, None for a loan of the platform's alone."""
    rows = await funding_rows.loan_funding(conn, account_id, loan_id)
    if not rows:
        return None
    changes = FundingChanges(kind, reference_id)
    changes.add(loan_id, funder_stakes(rows), owed_before, steps, recovery_base_minor)
    await apply(conn, account_id, changes, now)
    return changes


async def book_recoveries(conn: asyncpg.Connection, account_id: UUID, recovered: Sequence[Recovery],
                          reference_id: UUID, now: datetime) -> dict[UUID, int]:
    """The partners' parts of a payment's recoveries on charged-off loans of a locked
    account (server/domain/recoveries.py, rule 3): settlement items, and the partner
    entry. Returns each loan's partners' part of what went back to the reserve."""
    if not recovered:
        return {}
    by_loan = await funding_rows.funding_of_loans(conn, account_id, [r.loan_id for r in recovered])
    changes = FundingChanges(EntryKind.RECOVERY_RECEIVED, reference_id)
    reserve_parts: dict[UUID, int] = {}
    for recovery in recovered:
        funders = funder_stakes(by_loan.get(recovery.loan_id, []))
        moves = []
        for funder in funders:
            if funder.funder_id == PLATFORM:
                continue
            share = recoveries.partner_recovery(funder.shares, recovery)
            moves.append(Moved(funder.funder_id, funder.stake, funder.stake, (), share.reserve_minor,
                               share.fee_minor))
        reserve_parts[recovery.loan_id] = sum(m.recovery_minor for m in moves)
        if moves:
            changes.add_moves(recovery.loan_id, funders, moves)
    await apply(conn, account_id, changes, now)
    return reserve_parts


# -- managing partners (python -m server.funding) --------------------------------------


@dataclass(frozen=True)
class PartnerView:
    partner: Partner
    exposure_minor: int
    cap_minor: int


async def list_partners(conn: asyncpg.Connection) -> list[PartnerView]:
    return [PartnerView(partner_from_row(r), r["exposure_minor"], r["cap_minor"])
            for r in await funding_rows.partners(conn)]


def _checked(*, partner_id: str, name: str, principal_share_bps: int, fee_share_bps: int, max_exposure_minor: int,
             grades: Sequence[str], terms: Sequence[int], active: bool, exposure_stripes: int) -> Partner:
    """The partner these settings make, or InvalidArgument naming every bad one."""
    problems = funding.check_partner(partner_id, name, principal_share_bps, fee_share_bps, max_exposure_minor,
                                     grades, terms, exposure_stripes)
    if problems:
        raise InvalidArgument(problems)
    return Partner(partner_id=partner_id, name=name, shares=Shares(principal_share_bps, fee_share_bps),
                   max_exposure_minor=max_exposure_minor, grades=frozenset(Grade(g) for g in grades),
                   terms=frozenset(terms), active=active, exposure_stripes=exposure_stripes)


async def add_partner(conn: asyncpg.Connection, *, partner_id: str, name: str, principal_share_bps: int,
                      fee_share_bps: int, max_exposure_minor: int, grades: Sequence[str], terms: Sequence[int],
                      exposure_stripes: int, now: datetime) -> Partner:
    """Add an active partner with its exposure counters."""
    partner = _checked(partner_id=partner_id, name=name, principal_share_bps=principal_share_bps,
                       fee_share_bps=fee_share_bps, max_exposure_minor=max_exposure_minor, grades=grades, terms=terms,
                       active=True, exposure_stripes=exposure_stripes)
    caps = funding.stripe_caps(partner.max_exposure_minor, partner.exposure_stripes, True)
    async with conn.transaction():
        if not await funding_rows.insert_partner(
                conn, partner_id=partner_id, name=name, principal_share_bps=principal_share_bps,
                fee_share_bps=fee_share_bps, max_exposure_minor=max_exposure_minor,
                grades=sorted(g.value for g in partner.grades), terms=sorted(partner.terms), caps=caps, now=now):
            raise AlreadyExists(f"partner_id: partner {partner_id!r} exists")
    log.info("funding_partner_added", partner_id=partner_id)
    return partner


async def update_partner(conn: asyncpg.Connection, partner_id: str, now: datetime, *, name: str | None = None,
                         principal_share_bps: int | None = None, fee_share_bps: int | None = None,
                         max_exposure_minor: int | None = None, grades: Sequence[str] | None = None,
                         terms: Sequence[int] | None = None, active: bool | None = None) -> Partner:
    """Change the settings given (None keeps one) and the caps of the partner's counters
    with them. Shares apply to loans captured from then on; a loan keeps the shares it
    was funded with. The number of counters is fixed when the partner is added."""
    async with conn.transaction():
        row = await funding_rows.lock_partner(conn, partner_id)
        if row is None:
            raise NotFound("partner_id", partner_id, "funding partner")

        def pick(given: Any, column: str) -> Any:
            return row[column] if given is None else given

        partner = _checked(
            partner_id=partner_id, name=pick(name, "name"),
            principal_share_bps=pick(principal_share_bps, "principal_share_bps"),
            fee_share_bps=pick(fee_share_bps, "fee_share_bps"),
            max_exposure_minor=pick(max_exposure_minor, "max_exposure_minor"), grades=pick(grades, "grades"),
            terms=pick(terms, "terms"), active=pick(active, "active"), exposure_stripes=row["exposure_stripes"])
        await funding_rows.update_partner(
            conn, partner_id=partner_id, name=partner.name, principal_share_bps=partner.shares.principal_share_bps,
            fee_share_bps=partner.shares.fee_share_bps, max_exposure_minor=partner.max_exposure_minor,
            grades=sorted(g.value for g in partner.grades), terms=sorted(partner.terms), active=partner.active,
            caps=funding.stripe_caps(partner.max_exposure_minor, partner.exposure_stripes, partner.active), now=now)
    log.info("funding_partner_updated", partner_id=partner_id, active=partner.active)
    return partner
