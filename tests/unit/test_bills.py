"""Bills: an account's installments due on one date, over all its loans."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.domain.bills import BillLine, bills
from server.domain.loans import InstallmentState

DUE = date(2027, 2, 19)


def line(order: str, due: date, principal: int, fee: int, paid: int = 0, penalty: int = 0) -> BillLine:
    installment = InstallmentState(1, due, principal, fee, principal_paid_minor=paid, penalty_minor=penalty)
    return BillLine(uuid.uuid4(), order, 3, 1092, installment)


def test_installments_due_on_one_date_make_one_bill_with_their_total():
    found = bills([line("b", DUE, 100_000, 1_800), line("a", DUE, 50_000, 900, penalty=51),
                   line("c", DUE + timedelta(days=28), 40_000, 720)])
    assert list(found) == [DUE, DUE + timedelta(days=28)]
    bill = found[DUE]
    assert [x.order_id for x in bill.lines] == ["a", "b"]
    assert (bill.owed_minor, bill.principal_minor, bill.fee_minor, bill.penalty_minor) == (
        152_751, 150_000, 2_700, 51)
    assert bill.days_past_due(DUE) == 0 and bill.days_past_due(DUE + timedelta(days=3)) == 3


def test_a_paid_line_leaves_the_bill_and_a_paid_bill_is_not_listed():
    found = bills([line("a", DUE, 100_000, 0, paid=100_000), line("b", DUE, 50_000, 900),
                   line("c", DUE - timedelta(days=28), 10_000, 0, paid=10_000)])
    assert list(found) == [DUE]
    assert [x.order_id for x in found[DUE].lines] == ["b"]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 10**6), st.integers(0, 10**4), st.booleans()),
                max_size=12))
def test_bills_hold_every_unpaid_line_once_and_sum_to_what_is_owed(rows):
    lines = [line(str(n), DUE + timedelta(days=31 * month), principal, fee, paid=principal if paid else 0)
             for n, (month, principal, fee, paid) in enumerate(rows)]
    found = bills(lines)
    assert sum(bill.owed_minor for bill in found.values()) == sum(x.owed_minor for x in lines)
    listed = [x for bill in found.values() for x in bill.lines]
    assert sorted(x.order_id for x in listed) == sorted(x.order_id for x in lines if x.owed_minor > 0)
    assert all(x.installment.due_date == due for due, bill in found.items() for x in bill.lines)
    assert list(found) == sorted(found)
