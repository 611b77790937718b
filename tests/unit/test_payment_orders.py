"""The rules of payment orders: what requesting and completing an order book, for every
amount, and how a payout's status and instrument are shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import payment_orders
from server.domain.errors import InvariantViolation
from server.domain.ledger import EntryKind, LedgerAccount
from server.domain.payment_orders import OrderKind, OrderStatus, PayoutStatus, completion, requested
from server.domain.payments import PaymentStatus

AMOUNTS = st.integers(min_value=1, max_value=10**12)


def _balances(*entries) -> dict[LedgerAccount, int]:
    totals: dict[LedgerAccount, int] = {}
    for entry in entries:
        for posting in entry.postings:
            totals[posting.ledger_account] = totals.get(posting.ledger_account, 0) + posting.amount_minor
    return {account: amount for account, amount in totals.items() if amount}


@given(AMOUNTS)
def test_a_paid_payout_moves_the_credit_balance_to_cash_through_in_flight(amount):
    asked = requested(OrderKind.PAYOUT, amount)
    paid = completion(OrderKind.PAYOUT, PaymentStatus.SUCCEEDED, amount)
    assert asked.entry.kind is EntryKind.PAYOUT_REQUESTED and paid.entry.kind is EntryKind.PAYOUT_SUCCEEDED
    assert asked.credit_balance_delta_minor == -amount and paid.credit_balance_delta_minor == 0
    # In flight while asked; once paid, the liability to the customer is gone with the cash.
    assert _balances(asked.entry) == {LedgerAccount.CUSTOMER_CREDIT_BALANCE: amount,
                                      LedgerAccount.PAYOUTS_IN_FLIGHT: -amount}
    assert _balances(asked.entry, paid.entry) == {LedgerAccount.CUSTOMER_CREDIT_BALANCE: amount,
                                                  LedgerAccount.CASH: -amount}


@given(AMOUNTS)
def test_a_failed_payout_leaves_the_books_as_they_were(amount):
    asked = requested(OrderKind.PAYOUT, amount)
    failed = completion(OrderKind.PAYOUT, PaymentStatus.FAILED, amount)
    assert failed.entry.kind is EntryKind.PAYOUT_FAILED
    assert asked.credit_balance_delta_minor + failed.credit_balance_delta_minor == 0
    assert _balances(asked.entry, failed.entry) == {}


@pytest.mark.parametrize("status", [PaymentStatus.PENDING, PaymentStatus.UNKNOWN])
def test_only_a_final_result_completes_an_order(status):
    with pytest.raises(InvariantViolation):
        completion(OrderKind.PAYOUT, status, 100)


def test_a_payout_shows_requested_as_pending_and_its_token_by_the_last_four():
    assert [payment_orders.payout_status(s) for s in OrderStatus] == [
        PayoutStatus.PENDING, PayoutStatus.SUCCEEDED, PayoutStatus.FAILED]
    assert payment_orders.last4("card-6222-0200-1234-5678") == "5678"
    assert payment_orders.GATEWAY_KIND.keys() == set(OrderKind)
