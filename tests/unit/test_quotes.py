"""Quotes offer exactly what Authorize would approve, or say why nothing: the account's
status, then the product table, then the available limit, in Authorize's order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import authorizations as holds
from server.domain.accounts import AccountStatus, CreditLine
from server.domain.authorizations import Approval, DeclineReason
from server.domain.pricing import DEFAULT_PRODUCT_TABLE, Grade, RepaymentMethod
from server.domain.quotes import UnavailableReason, offers

NOW = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)
FLAT, DECLINING = RepaymentMethod.FLAT_FEE, RepaymentMethod.DECLINING_BALANCE

# What Authorize says for the same cause.
DECLINE_OF = {
    UnavailableReason.ACCOUNT_CLOSED: DeclineReason.ACCOUNT_CLOSED,
    UnavailableReason.ACCOUNT_FROZEN: DeclineReason.ACCOUNT_FROZEN,
    UnavailableReason.NO_PRODUCT: DeclineReason.TERM_NOT_OFFERED,
    UnavailableReason.INSUFFICIENT_AVAILABLE: DeclineReason.INSUFFICIENT_LIMIT,
}


def line(status=AccountStatus.ACTIVE, grade=Grade.B, limit=100_000, held=0, outstanding=0):
    return CreditLine(status, grade, limit, 0, None, held, outstanding)


def quote(credit, amount, method=None):
    return offers(credit, DEFAULT_PRODUCT_TABLE, amount, method, NOW)


def test_an_active_account_with_room_gets_every_fitting_plan_and_no_reason():
    offered = quote(line(), 50_000)
    assert [(o.product.term_months, o.product.method) for o in offered.offers] == [
        (1, FLAT), (3, DECLINING), (3, FLAT), (6, DECLINING), (6, FLAT)]
    assert (offered.unavailable_reason, offered.message) == (None, "")
    assert [o.product.method for o in quote(line(), 50_000, DECLINING).offers] == [DECLINING, DECLINING]


@pytest.mark.parametrize("credit, amount, method, reason", [
    (line(status=AccountStatus.FROZEN, limit=10**9), 50_000, None, UnavailableReason.ACCOUNT_FROZEN),
    (line(status=AccountStatus.CLOSED, limit=10**9), 50_000, None, UnavailableReason.ACCOUNT_CLOSED),
    # A closed account says closed even where no product fits either.
    (line(status=AccountStatus.CLOSED), 10**12, DECLINING, UnavailableReason.ACCOUNT_CLOSED),
    (line(), 100_001, None, UnavailableReason.INSUFFICIENT_AVAILABLE),
    (line(held=60_000, outstanding=30_000), 10_001, None, UnavailableReason.INSUFFICIENT_AVAILABLE),
    # The 1-month plan is flat fee only; 3 months needs 100.00.
    (line(), 9_999, DECLINING, UnavailableReason.NO_PRODUCT),
    # Above the limit and no product either: the product is the reason, as in Authorize.
    (line(limit=1_000), 5_000, DECLINING, UnavailableReason.NO_PRODUCT),
])
def test_no_plan_is_offered_with_the_reason_that_matters(credit, amount, method, reason):
    offered = quote(credit, amount, method)
    assert offered.offers == ()
    assert offered.unavailable_reason is reason
    assert offered.message


@given(status=st.sampled_from(AccountStatus), grade=st.sampled_from(Grade), limit=st.integers(0, 2_000_000),
       used=st.integers(0, 2_000_000), amount=st.integers(1, 3_000_000),
       method=st.sampled_from([None, FLAT, DECLINING]))
def test_a_quote_offers_exactly_what_authorize_approves_and_its_reason_is_authorizes(
        status, grade, limit, used, amount, method):
    credit = line(status=status, grade=grade, limit=limit, held=used)
    offered = quote(credit, amount, method)
    methods = [method] if method else list(RepaymentMethod)
    decisions = {(p.term_months, p.method): holds.decide(credit, DEFAULT_PRODUCT_TABLE, amount, p.term_months,
                                                         p.method, NOW)
                 for p in DEFAULT_PRODUCT_TABLE if p.method in methods}
    approved = {key for key, decision in decisions.items() if isinstance(decision, Approval)}
    assert {(o.product.term_months, o.product.method) for o in offered.offers} == approved
    assert (offered.unavailable_reason is None) == bool(approved)
    if offered.unavailable_reason is not None:
        # Authorize declines every plan it could be asked for with the quote's reason,
        # but for plans that do not fit the amount or grade at all (TERM_NOT_OFFERED).
        reasons = {decision.reason for decision in decisions.values() if not isinstance(decision, Approval)}
        assert DECLINE_OF[offered.unavailable_reason] in reasons
        assert reasons <= {DECLINE_OF[offered.unavailable_reason], DeclineReason.TERM_NOT_OFFERED}
        if offered.unavailable_reason in (UnavailableReason.ACCOUNT_FROZEN, UnavailableReason.ACCOUNT_CLOSED):
            assert reasons == {DECLINE_OF[offered.unavailable_reason]}
