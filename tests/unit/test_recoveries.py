"""Recoveries after charge-off: the insurer's and the partners' parts, cumulative so
that they add up exactly to the claim and to the partners' shares, whatever the
payments (server/domain/recoveries.py)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain import ledger
from server.domain.errors import InvariantViolation
from server.domain.funding import Owed, Shares
from server.domain.ledger import LedgerAccount
from server.domain.recoveries import WriteOff, partner_recovery, recover

LOAN = uuid.UUID(int=5)


def write_off(principal=300_000, fee=5_400, penalty=7_500, claim=150_000, recovered=Owed()) -> WriteOff:
    return WriteOff(LOAN, Owed(principal, fee, penalty), recovered, claim)


def test_the_insurer_gets_its_share_of_principal_recovered_and_the_whole_claim_at_the_end():
    first = recover(write_off(), Owed(100_001, 0, 0))
    assert first.insurer_minor == 150_000 * 100_001 // 300_000 == 50_000
    assert first.to_reserve_minor == 50_001
    rest = recover(write_off(recovered=first.after), Owed(199_999, 0, 0))
    assert first.insurer_minor + rest.insurer_minor == 150_000


def test_penalties_go_back_to_the_reserve_and_fees_do_not():
    recovery = recover(write_off(), Owed(0, 5_400, 7_500))
    assert recovery.insurer_minor == 0 and recovery.to_reserve_minor == 7_500


def test_recovering_more_than_is_owed_is_a_bug():
    with pytest.raises(InvariantViolation):
        recover(write_off(recovered=Owed(300_000, 0, 0)), Owed(1, 0, 0))
    with pytest.raises(InvariantViolation):
        write_off(recovered=Owed(0, 5_401, 0))
    with pytest.raises(InvariantViolation):
        write_off(claim=300_001)


def test_the_recovery_entry_balances_and_sends_each_part_where_it_belongs():
    entry = ledger.recovery_received(source=LedgerAccount.CASH, principal_minor=100_000, fee_minor=600,
                                     penalty_minor=900, insurer_minor=50_000)
    assert entry.kind is ledger.EntryKind.RECOVERY_RECEIVED
    assert {(p.ledger_account, p.amount_minor) for p in entry.postings} == {
        (LedgerAccount.CASH, 50_900), (LedgerAccount.RISK_RESERVE, -50_900),
        (LedgerAccount.CASH, 50_000), (LedgerAccount.INSURANCE_CLAIM_RECEIVABLE, -50_000),
        (LedgerAccount.CASH, 600), (LedgerAccount.FEE_INCOME, -600)}
    with pytest.raises(InvariantViolation):
        ledger.recovery_received(source=LedgerAccount.FEE_INCOME, principal_minor=1, fee_minor=0, penalty_minor=0,
                                 insurer_minor=0)


@given(principal=st.integers(0, 5_000_000), fee=st.integers(0, 100_000), penalty=st.integers(0, 300_000),
       claim_bps=st.integers(0, 10_000), principal_share_bps=st.integers(1, 7_000),
       fee_share_bps=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 2_000_000), max_size=6))
@settings(max_examples=300)
def test_payments_in_any_pieces_split_to_the_fen_as_one_payment_would(principal, fee, penalty, claim_bps,
                                                                     principal_share_bps, fee_share_bps, cuts):
    claim = principal * claim_bps // 10_000
    shares = Shares(principal_share_bps, fee_share_bps)
    current = write_off(principal, fee, penalty, claim)
    insurer = partner_reserve = partner_fee = 0
    for cut in [*cuts, principal + fee + penalty]:  # the last piece recovers whatever is left
        owed = current.owed
        take_principal = min(cut, owed.principal_minor)
        take_penalty = min(cut - take_principal, owed.penalty_minor)
        take_fee = min(cut - take_principal - take_penalty, owed.fee_minor)
        recovery = recover(current, Owed(take_principal, take_fee, take_penalty))
        part = partner_recovery(shares, recovery)
        assert 0 <= recovery.insurer_minor <= take_principal
        assert part.reserve_minor >= 0 and part.fee_minor >= 0
        assert part.reserve_minor <= recovery.to_reserve_minor and part.fee_minor <= take_fee
        insurer += recovery.insurer_minor
        partner_reserve += part.reserve_minor
        partner_fee += part.fee_minor
        current = write_off(principal, fee, penalty, claim, recovered=recovery.after)
    assert current.owed == Owed()
    assert insurer == claim
    assert partner_reserve == (principal - claim) * principal_share_bps // 10_000 + penalty * fee_share_bps // 10_000
    assert partner_fee == fee * fee_share_bps // 10_000
