"""The rules of a statement: which lines a journal entry gives, how sections add up, the
cut-off, which statements are due, and the email's rendering."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collections_bot.channels.email import build_statement_message
from server.core.statements import Delivery, Statement, StatementLine, StatementMail
from server.domain import ledger
from server.domain.billing import BillingCycle
from server.domain.errors import InvariantViolation
from server.domain.reminders import AttemptStatus
from server.domain.statements import (
    CATCH_UP_MAX,
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
from server.services.fields import Fields

amounts = st.integers(min_value=0, max_value=10_000_000)
NOW = datetime(2027, 2, 1, 3, tzinfo=UTC)


def read(entry: ledger.JournalEntry) -> EntryPostings:
    return EntryPostings(uuid.uuid4(), entry.kind.value, uuid.uuid4(), NOW,
                         tuple((p.ledger_account, p.amount_minor) for p in entry.postings))


def kinds(entry: ledger.JournalEntry) -> dict[LineKind, int]:
    return {line.kind: line.amount_minor for line in lines_of(read(entry))}


@given(principal=amounts.filter(bool), fee=amounts)
def test_a_capture_is_a_purchase_and_its_schedules_fees(principal, fee):
    assert kinds(ledger.loan_captured(principal, fee)) == {LineKind.PURCHASE: principal,
                                                          **({LineKind.FEE: fee} if fee else {})}


@given(principal=amounts, fee=amounts, penalty=amounts, unapplied=amounts, waived=amounts)
def test_a_repayment_is_the_cash_received_and_the_fees_it_waived(principal, fee, penalty, unapplied, waived):
    cash = principal + fee + penalty + unapplied
    if not cash and not waived:
        return
    entry = ledger.repayment_received(principal_minor=principal, fee_minor=fee, penalty_minor=penalty,
                                      unapplied_minor=unapplied, waived_fee_minor=waived)
    expected = {}
    if cash:
        expected[LineKind.PAYMENT] = -cash
    if waived:
        expected[LineKind.FEE_WAIVED] = -waived
    assert kinds(entry) == expected


@given(principal=amounts, fee=amounts, penalty=amounts, waived=amounts)
def test_a_credit_balance_applied_moves_nothing_but_the_fees_it_waived(principal, fee, penalty, waived):
    if not (principal or fee or penalty or waived):
        return
    entry = ledger.credit_balance_applied(principal_minor=principal, fee_minor=fee, penalty_minor=penalty,
                                          waived_fee_minor=waived)
    assert kinds(entry) == ({LineKind.FEE_WAIVED: -waived} if waived else {})


@given(parts=st.lists(amounts, min_size=6, max_size=6).filter(any))
def test_a_refund_lowers_the_balance_by_all_it_took_off(parts):
    entry = ledger.loan_refunded(principal_unpaid_minor=parts[0], principal_returned_minor=parts[1],
                                 fee_unpaid_minor=parts[2], fee_returned_minor=parts[3],
                                 penalty_unpaid_minor=parts[4], penalty_returned_minor=parts[5])
    assert kinds(entry) == {LineKind.REFUND: -sum(parts)}


@given(amount=amounts.filter(bool))
def test_penalties_waivers_and_charge_offs(amount):
    assert kinds(ledger.penalty_assessed(amount)) == {LineKind.PENALTY: amount}
    assert kinds(ledger.penalty_waived(amount)) == {LineKind.PENALTY_WAIVED: -amount}
    assert kinds(ledger.loan_charged_off(principal_minor=amount, fee_minor=1, penalty_minor=2,
                                         insurance_claim_minor=amount)) == {LineKind.WRITTEN_OFF: -(amount + 3)}
    # Entries on the lender's own accounts leave the customer's balance alone.
    assert kinds(ledger.reserve_provisioned(amount)) == {}


def test_an_unknown_kind_of_entry_is_an_adjustment_never_lost():
    entry = EntryPostings(uuid.uuid4(), "SOMETHING_NEW", uuid.uuid4(), NOW,
                          ((ledger.LedgerAccount.FEE_RECEIVABLE, -70), (ledger.LedgerAccount.FEE_INCOME, 70)))
    assert [(line.kind, line.amount_minor) for line in lines_of(entry)] == [(LineKind.ADJUSTMENT, -70)]


def test_a_line_against_its_kinds_direction_is_a_bug():
    backwards = EntryPostings(uuid.uuid4(), ledger.EntryKind.PENALTY_ASSESSED.value, uuid.uuid4(), NOW,
                              ((ledger.LedgerAccount.PENALTY_RECEIVABLE, -5), (ledger.LedgerAccount.PENALTY_INCOME, 5)))
    with pytest.raises(InvariantViolation):
        lines_of(backwards)


@given(st.lists(st.tuples(st.sampled_from(list(LineKind)), st.integers(1, 10**7)), max_size=30),
       st.integers(-10**7, 10**7))
def test_sections_add_up_to_the_lines_and_must_tie_to_the_ledger(signed, opening):
    raising = {LineKind.PURCHASE, LineKind.FEE, LineKind.PENALTY}

    def signed_amount(kind: LineKind, amount: int) -> int:
        if kind is LineKind.ADJUSTMENT:
            return amount if amount % 2 else -amount  # adjustments go either way
        return amount if kind in raising else -amount

    lines = [Line(kind, uuid.uuid4(), "X", uuid.uuid4(), NOW, signed_amount(kind, amount)) for kind, amount in signed]
    sections = Sections.of(lines)
    assert sections.net_minor == sum(line.amount_minor for line in lines)
    assert all(getattr(sections, name) >= 0 for name in vars(sections) if name != "adjustments_minor")
    closing = opening + sections.net_minor
    owed = Owed(principal_minor=closing, fee_minor=0, penalty_minor=0, credit_balance_minor=0)
    assert check_ties(opening, sections, owed) == closing
    with pytest.raises(InvariantViolation, match="does not tie"):
        check_ties(opening + 1, sections, owed)


def test_the_ledgers_balance_nets_the_credit_balance():
    owed = Owed.of({ledger.LedgerAccount.PRINCIPAL_RECEIVABLE: 1_000, ledger.LedgerAccount.FEE_RECEIVABLE: 30,
                    ledger.LedgerAccount.PENALTY_RECEIVABLE: 5, ledger.LedgerAccount.CUSTOMER_CREDIT_BALANCE: -200})
    assert (owed.credit_balance_minor, owed.balance_minor) == (200, 835)


def test_the_cut_off_is_local_midnight_at_the_start_of_the_statement_date():
    assert cutoff(date(2027, 2, 15), "Asia/Shanghai") == datetime(2027, 2, 14, 16, tzinfo=UTC)
    assert cutoff(date(2027, 7, 1), "America/New_York") == datetime(2027, 7, 1, 4, tzinfo=UTC)


def test_due_statements_follow_the_cycle_from_the_last_one_or_the_opening_day():
    cycle = BillingCycle(15)
    assert due_statement_dates(cycle, None, date(2027, 1, 15), date(2027, 2, 14)) == []
    assert due_statement_dates(cycle, None, date(2027, 1, 15), date(2027, 2, 15)) == [date(2027, 2, 15)]
    assert due_statement_dates(cycle, None, date(2027, 1, 10), date(2027, 1, 15)) == [date(2027, 1, 15)]
    assert due_statement_dates(cycle, date(2027, 2, 15), date(2027, 1, 15), date(2027, 5, 20)) == [
        date(2027, 3, 15), date(2027, 4, 15), date(2027, 5, 15)]
    # The statement day moved from the 15th to the 20th: the open period closes on the 20th.
    assert due_statement_dates(BillingCycle(20), date(2027, 2, 15), date(2027, 1, 15), date(2027, 2, 20)) == [
        date(2027, 2, 20)]
    # Two years away: caught up a bounded number at a time, oldest first.
    caught_up = due_statement_dates(cycle, date(2025, 1, 15), date(2025, 1, 1), date(2027, 1, 15))
    assert len(caught_up) == CATCH_UP_MAX and caught_up[0] == date(2025, 2, 15)


def test_only_a_statement_with_something_to_say_is_emailed():
    installment = DueInstallment(uuid.uuid4(), 1, "o", date(2027, 2, 15), 100, 0, 0)
    assert not worth_sending(0, 0, [], [])
    assert worth_sending(0, 0, [], [installment]) and worth_sending(5, 0, [], []) and worth_sending(0, -5, [], [])


def test_a_period_is_a_month_or_a_date():
    f = Fields()
    assert f.statement_period("2027-02") == (None, date(2027, 2, 1))
    assert f.statement_period("2027-02-15") == (date(2027, 2, 15), None)
    for bad in ("2027-13", "2027-2", "", "2027-02-30", "02-2027"):
        f = Fields()
        assert f.statement_period(bad) == (None, None)
        assert [v.field for v in f.violations] == ["period"]


def test_the_email_escapes_what_it_shows_in_html_and_formats_amounts():
    account_id = uuid.uuid4()
    statement = Statement(
        account_id=account_id, statement_date=date(2027, 2, 15), period_start=date(2027, 1, 15),
        cutoff_at=cutoff(date(2027, 2, 15), "Asia/Shanghai"), payment_due_date=date(2027, 3, 7),
        time_zone="Asia/Shanghai", opening_minor=0,
        sections=Sections(purchases_minor=123_456, payments_minor=100), closing_minor=123_356,
        owed=Owed(123_356, 0, 0, 0), credit_limit_minor=1_000_000, available_minor=876_544,
        amount_due_minor=41_152, issued_at=NOW,
        lines=(StatementLine(LineKind.PURCHASE, uuid.uuid4(), "LOAN_CAPTURED", uuid.uuid4(), NOW, 123_456, line=1,
                             loan_id=uuid.uuid4(), merchant_id="m", order_id="<b>order</b>", term_months=3,
                             method="FLAT_FEE", apr_bps=1077),
               StatementLine(LineKind.PAYMENT, uuid.uuid4(), "REPAYMENT_RECEIVED", uuid.uuid4(), NOW, -100, line=2)))
    delivery = Delivery(account_id, date(2027, 2, 15), AttemptStatus.SENDING, None, 1, "<statement.x@d>", None, {})
    message = build_statement_message(StatementMail(delivery, statement, "Li <Lei>", "li@example.com", "en"),
                                      mail_from="bills@credit.example")
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert "&lt;b&gt;order&lt;/b&gt;" in html and "<b>order</b>" not in html and "Li &lt;Lei&gt;" in html
    assert "<b>order</b>" in text
    for part in (html, text):
        assert "CNY 1,234.56" in part and "CNY -1.00" in part and "CNY 411.52" in part
        assert "3 months, APR 10.77 %" in part
        assert "2027-02-14" in part  # the period's last day
    assert message["Message-ID"] == "<statement.x@d>" and message["Subject"].startswith("Your statement of 2027-02-15")
    # The language survives the content being set (every email the bot writes is composed alike).
    assert message["Content-Language"] == "en" and message.as_string().count("Content-Language: en") == 1
