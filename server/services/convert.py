"""Between core views and credit.v1 messages. Proto enum names are the domain's names
behind the enum's prefix (ACCOUNT_STATUS_ + ACTIVE), so one rule maps both ways."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from google.protobuf.timestamp_pb2 import Timestamp

from credit.v1 import checkout_pb2, collections_pb2, common_pb2, credit_line_pb2, repayment_pb2, risk_pb2
from server.core.checkout import Quote
from server.core.journal import JournalEntryView, JournalPage
from server.core.merchant_settlements import MerchantDayView
from server.core.portfolio import PortfolioView, StressView
from server.core.repayments import PayoffQuote, RepaymentView
from server.core.risk import DecisionRecordView, ReservePoolView
from server.core.settlements import SETTLEMENT_TIME_ZONE, PartnerSettlement
from server.core.statements import Statement
from server.core.views import AccountView, AuthorizationView, LoanView
from server.domain.accounts import AccountStatus
from server.domain.authorizations import AuthorizationStatus, DeclineReason
from server.domain.cases import EscalationReason, PromiseSource
from server.domain.ledger import EntryKind, LedgerAccount
from server.domain.loans import Bucket, InstallmentStatus, LoanStatus
from server.domain.losses import ExpectedLoss, Scenario
from server.domain.merchant_settlement import SettlementStatus
from server.domain.money import CURRENCY
from server.domain.payment_orders import PaymentMethodKind, PaymentMethodStatus, PayoutStatus
from server.domain.payments import FailureReason
from server.domain.pricing import Grade, MerchantCategory, Plan, RepaymentMethod
from server.domain.quotes import UnavailableReason
from server.domain.recoveries import WriteOff
from server.domain.reminders import AttemptKind, AttemptStatus, Channel, Outcome, Reason
from server.domain.risk import Decision, Facts, ListKind, ListLevel
from server.domain.statements import LineKind
from server.domain.waterfall import Component

if TYPE_CHECKING:
    # Types only: server.core.payouts reaches the payment gateway's client, which
    # converts its messages with this module.
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

    from server.core.payouts import PaymentMethodView, PayoutView

# A proto enum's number type (the generated stubs make one per enum).
Number = TypeVar("Number", bound=int)


def to_proto_enum(proto_enum: _EnumTypeWrapper[Number], prefix: str, value: enum.Enum | str | None) -> Number:
    if value is None:
        return cast(Number, 0)  # every proto3 enum's first value, "unspecified"
    return proto_enum.Value(prefix + (value.value if isinstance(value, enum.Enum) else value))


def from_proto_enum(proto_enum: _EnumTypeWrapper[Any], prefix: str,
                    domain_enum: type[enum.Enum]) -> dict[int, enum.Enum]:
    """Every non-zero number of a proto enum, mapped to the domain member of that name."""
    return {number: domain_enum(name.removeprefix(prefix))
            for name, number in proto_enum.items() if number != 0}


# Every domain enum that the API shows, with its proto enum and prefix: the names match
# behind the prefix, both ways, and tests/unit/test_contract.py round-trips every value.
# A new enum in a reply joins this table.
ENUMS: tuple[tuple[type[enum.Enum], _EnumTypeWrapper[Any], str], ...] = (
    (AccountStatus, common_pb2.AccountStatus, "ACCOUNT_STATUS_"),
    (Grade, common_pb2.RiskGrade, "RISK_GRADE_"),
    (RepaymentMethod, common_pb2.RepaymentMethod, "REPAYMENT_METHOD_"),
    (InstallmentStatus, common_pb2.InstallmentStatus, "INSTALLMENT_STATUS_"),
    (LoanStatus, common_pb2.LoanStatus, "LOAN_STATUS_"),
    (Bucket, common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_"),
    (AuthorizationStatus, checkout_pb2.AuthorizationStatus, "AUTHORIZATION_STATUS_"),
    (DeclineReason, checkout_pb2.DeclineReason, "DECLINE_REASON_"),
    (Decision, checkout_pb2.RiskDecision, "RISK_DECISION_"),
    (UnavailableReason, checkout_pb2.QuoteUnavailableReason, "QUOTE_UNAVAILABLE_REASON_"),
    (Component, repayment_pb2.AllocationComponent, "ALLOCATION_COMPONENT_"),
    (Channel, collections_pb2.ContactChannel, "CONTACT_CHANNEL_"),
    (AttemptKind, collections_pb2.ContactAttemptKind, "CONTACT_ATTEMPT_KIND_"),
    (AttemptStatus, collections_pb2.ContactAttemptStatus, "CONTACT_ATTEMPT_STATUS_"),
    (Reason, collections_pb2.ContactAttemptReason, "CONTACT_ATTEMPT_REASON_"),
    (Outcome, collections_pb2.ContactOutcome, "CONTACT_OUTCOME_"),
    (PromiseSource, collections_pb2.PromiseSource, "PROMISE_SOURCE_"),
    (EscalationReason, collections_pb2.EscalationReason, "ESCALATION_REASON_"),
    (ListKind, risk_pb2.RiskListKind, "RISK_LIST_KIND_"),
    (ListLevel, risk_pb2.RiskListLevel, "RISK_LIST_LEVEL_"),
    (EntryKind, repayment_pb2.JournalEntryKind, "JOURNAL_ENTRY_KIND_"),
    (LedgerAccount, repayment_pb2.LedgerAccount, "LEDGER_ACCOUNT_"),
    (LineKind, repayment_pb2.StatementLineKind, "STATEMENT_LINE_KIND_"),
    (PaymentMethodKind, repayment_pb2.PaymentMethodKind, "PAYMENT_METHOD_KIND_"),
    (PaymentMethodStatus, repayment_pb2.PaymentMethodStatus, "PAYMENT_METHOD_STATUS_"),
    (PayoutStatus, repayment_pb2.PayoutStatus, "PAYOUT_STATUS_"),
    (FailureReason, repayment_pb2.PayoutFailureReason, "PAYOUT_FAILURE_REASON_"),
    (MerchantCategory, checkout_pb2.MerchantCategory, "MERCHANT_CATEGORY_"),
    (SettlementStatus, checkout_pb2.MerchantSettlementStatus, "MERCHANT_SETTLEMENT_STATUS_"),
    (FailureReason, checkout_pb2.MerchantPaymentFailureReason, "MERCHANT_PAYMENT_FAILURE_REASON_"),
)
PAYMENT_METHOD_KINDS = from_proto_enum(repayment_pb2.PaymentMethodKind, "PAYMENT_METHOD_KIND_", PaymentMethodKind)
METHODS = from_proto_enum(common_pb2.RepaymentMethod, "REPAYMENT_METHOD_", RepaymentMethod)
GRADES = from_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", Grade)
LOAN_STATUSES = from_proto_enum(common_pb2.LoanStatus, "LOAN_STATUS_", LoanStatus)
# Customers pay through these; CREDIT_BALANCE and AUTO_DEBIT are the service's own
# bookkeeping.
PAYMENT_CHANNELS = {number: name.removeprefix("PAYMENT_CHANNEL_")
                    for name, number in repayment_pb2.PaymentChannel.items()
                    if number != 0 and name not in ("PAYMENT_CHANNEL_CREDIT_BALANCE", "PAYMENT_CHANNEL_AUTO_DEBIT")}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    message = Timestamp()
    message.FromDatetime(value)
    return message


def account(view: AccountView) -> credit_line_pb2.Account:
    temporary = view.temporary_limit_in_force_minor
    return credit_line_pb2.Account(
        account_id=str(view.account_id),
        customer_id=view.customer_id,
        status=to_proto_enum(common_pb2.AccountStatus, "ACCOUNT_STATUS_", view.status),
        risk_grade=to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", view.line.risk_grade),
        credit_limit_minor=view.line.credit_limit_minor,
        temporary_limit_minor=temporary,
        temporary_limit_expires_at=timestamp(view.line.temporary_limit_expires_at) if temporary else None,
        effective_limit_minor=view.effective_limit_minor,
        held_minor=view.line.held_minor,
        outstanding_principal_minor=view.line.outstanding_principal_minor,
        available_minor=view.available_minor,
        credit_balance_minor=view.credit_balance_minor,
        currency=view.currency,
        time_zone=view.time_zone,
        locale=view.locale,
        created_at=timestamp(view.created_at),
        updated_at=timestamp(view.updated_at),
        statement_day=view.billing.statement_day,
        payment_due_days=view.billing.payment_due_days,
        next_statement_date=view.next_statement_date.isoformat(),
    )


def plan(value: Plan) -> common_pb2.InstallmentPlan:
    return common_pb2.InstallmentPlan(
        term_months=value.term_months,
        method=to_proto_enum(common_pb2.RepaymentMethod, "REPAYMENT_METHOD_", value.method),
        monthly_rate_bps=value.monthly_rate_bps,
        apr_bps=value.apr_bps,
        principal_minor=value.principal_minor,
        total_fee_minor=value.total_fee_minor,
        total_repayment_minor=value.total_repayment_minor,
        currency=CURRENCY,
        installments=[
            common_pb2.Installment(
                sequence=i.sequence,
                due_date=i.due_date.isoformat(),
                principal_minor=i.principal_minor,
                fee_minor=i.fee_minor,
                amount_minor=i.amount_minor,
            )
            for i in value.installments
        ],
    )


def quote(value: Quote) -> checkout_pb2.QuoteInstallmentsResponse:
    return checkout_pb2.QuoteInstallmentsResponse(
        plans=[plan(p) for p in value.plans],
        available_minor=value.account.available_minor,
        unavailable_reason=to_proto_enum(checkout_pb2.QuoteUnavailableReason, "QUOTE_UNAVAILABLE_REASON_",
                                         value.unavailable_reason),
        unavailable_message=value.unavailable_message,
    )


def authorization(view: AuthorizationView) -> checkout_pb2.Authorization:
    return checkout_pb2.Authorization(
        authorization_id=str(view.authorization_id),
        account_id=str(view.account_id),
        merchant_id=view.merchant_id,
        order_id=view.order_id,
        status=to_proto_enum(checkout_pb2.AuthorizationStatus, "AUTHORIZATION_STATUS_", view.status),
        decline_reason=to_proto_enum(checkout_pb2.DeclineReason, "DECLINE_REASON_", view.decline_reason),
        decline_message=view.decline_message,
        amount_minor=view.amount_minor,
        captured_minor=view.captured_minor,
        released_minor=view.released_minor,
        term_months=view.term_months,
        plan=plan(view.plan) if view.plan else None,
        expires_at=timestamp(view.expires_at),
        loan_id=str(view.loan_id) if view.loan_id else "",
        risk=checkout_pb2.RiskAssessment(
            decision=to_proto_enum(checkout_pb2.RiskDecision, "RISK_DECISION_", view.risk.decision),
            score=view.risk.score,
            reasons=list(view.risk.reasons),
        ) if view.risk else None,
        created_at=timestamp(view.created_at),
    )


def loan(view: LoanView) -> common_pb2.Loan:
    return common_pb2.Loan(
        loan_id=str(view.loan_id),
        account_id=str(view.account_id),
        authorization_id=str(view.authorization_id),
        status=to_proto_enum(common_pb2.LoanStatus, "LOAN_STATUS_", view.status),
        principal_minor=view.principal_minor,
        term_months=view.term_months,
        method=to_proto_enum(common_pb2.RepaymentMethod, "REPAYMENT_METHOD_", view.method),
        monthly_rate_bps=view.monthly_rate_bps,
        apr_bps=view.apr_bps,
        outstanding_principal_minor=view.outstanding_principal_minor,
        total_fee_minor=view.total_fee_minor,
        days_past_due=view.days_past_due,
        bucket=to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", view.bucket),
        merchant_id=view.merchant_id,
        order_id=view.order_id,
        currency=view.currency,
        created_at=timestamp(view.created_at),
        installments=[
            common_pb2.Installment(
                sequence=i.sequence,
                due_date=i.due_date.isoformat(),
                principal_minor=i.principal_minor,
                fee_minor=i.fee_minor,
                amount_minor=i.amount_minor,
                paid_minor=i.paid_minor,
                penalty_minor=i.penalty_minor,
                status=to_proto_enum(common_pb2.InstallmentStatus, "INSTALLMENT_STATUS_",
                                     i.status(view.today, view.status)),
                fee_waived_minor=i.fee_waived_minor,
                owed_minor=i.owed_minor,
            )
            for i in view.installments
        ],
        refunded_minor=view.refunded_minor,
        funding=[
            common_pb2.FundingPart(
                funder_id=f.funder_id, principal_share_bps=f.shares.principal_share_bps,
                fee_share_bps=f.shares.fee_share_bps, funded_principal_minor=f.funded_principal_minor,
                principal_owed_minor=f.stake.principal_minor, fee_owed_minor=f.stake.fee_minor,
                penalty_owed_minor=f.stake.penalty_minor)
            for f in view.funding_parts
        ],
        write_off=write_off(view.write_off) if view.write_off is not None else None,
    )


def repayment(view: RepaymentView) -> repayment_pb2.Repayment:
    return repayment_pb2.Repayment(
        repayment_id=str(view.repayment_id),
        account_id=str(view.account_id),
        loan_id=str(view.loan_id) if view.loan_id else "",
        channel=to_proto_enum(repayment_pb2.PaymentChannel, "PAYMENT_CHANNEL_", view.channel),
        amount_minor=view.amount_minor,
        applied_minor=view.applied_minor,
        unapplied_minor=view.unapplied_minor,
        waived_fee_minor=view.waived_fee_minor,
        allocations=[
            repayment_pb2.Allocation(
                loan_id=str(a.loan_id), sequence=a.sequence, amount_minor=a.amount_minor,
                component=to_proto_enum(repayment_pb2.AllocationComponent, "ALLOCATION_COMPONENT_", a.component))
            for a in view.allocations
        ],
        account=account(view.account),
        created_at=timestamp(view.created_at),
        recoveries=[
            repayment_pb2.Recovery(
                loan_id=str(r.loan_id), amount_minor=r.amount_minor,
                component=to_proto_enum(repayment_pb2.AllocationComponent, "ALLOCATION_COMPONENT_", r.component))
            for r in view.recoveries
        ],
        recovered_minor=view.recovered_minor,
    )


def write_off(value: WriteOff) -> common_pb2.WriteOff:
    written_off, recovered = value.written_off, value.recovered
    return common_pb2.WriteOff(
        principal_minor=written_off.principal_minor, fee_minor=written_off.fee_minor,
        penalty_minor=written_off.penalty_minor, written_off_minor=written_off.total_minor,
        recovered_principal_minor=recovered.principal_minor, recovered_fee_minor=recovered.fee_minor,
        recovered_penalty_minor=recovered.penalty_minor, recovered_minor=recovered.total_minor,
        owed_minor=value.owed.total_minor, insurance_claim_minor=value.insurance_claim_minor)


def payoff(quote: PayoffQuote) -> repayment_pb2.QuotePayoffResponse:
    return repayment_pb2.QuotePayoffResponse(
        loan_id=str(quote.loan_id),
        as_of=quote.as_of.isoformat(),
        payoff_minor=quote.payoff_minor,
        principal_minor=quote.principal_minor,
        fee_minor=quote.fee_minor,
        penalty_minor=quote.penalty_minor,
        waived_fee_minor=quote.waived_fee_minor,
    )


def risk_decision_record(view: DecisionRecordView) -> risk_pb2.RiskDecisionRecord:
    return risk_pb2.RiskDecisionRecord(
        decision_id=str(view.decision_id),
        account_id=str(view.account_id),
        authorization_id=str(view.authorization_id),
        decision=to_proto_enum(checkout_pb2.RiskDecision, "RISK_DECISION_", view.decision),
        score=view.score,
        reasons=list(view.reasons),
        inputs=risk_facts(view.inputs),
        rule_results=[risk_pb2.RiskRuleResult(rule=r.rule, fired=r.fired, score=r.score, detail=r.detail)
                      for r in view.rule_results],
        ruleset_version=view.ruleset_version,
        created_at=timestamp(view.created_at),
    )


def risk_facts(facts: Facts) -> risk_pb2.RiskFacts:
    return risk_pb2.RiskFacts(
        amount_minor=facts.amount_minor,
        grade=to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", facts.grade),
        device_id=facts.device_id,
        ip_address=facts.ip_address,
        blocked=[to_proto_enum(risk_pb2.RiskListKind, "RISK_LIST_KIND_", ListKind(kind)) for kind in facts.blocked],
        merchant_level=to_proto_enum(risk_pb2.RiskListLevel, "RISK_LIST_LEVEL_",
                                     ListLevel(facts.merchant_level) if facts.merchant_level else None),
        account_approvals_last_hour=facts.account_approvals_last_hour,
        account_amount_last_day_minor=facts.account_amount_last_day_minor,
        device_authorizations_last_hour=facts.device_authorizations_last_hour,
        device_accounts_last_30_days=facts.device_accounts_last_30_days,
        ip_accounts_last_day=facts.ip_accounts_last_day,
        device_known_for_account=facts.device_known_for_account,
        captured_count=facts.captured_count,
        largest_captured_minor=facts.largest_captured_minor,
    )


def reserve_pool(view: ReservePoolView) -> risk_pb2.ReservePool:
    return risk_pb2.ReservePool(
        balance_minor=view.balance_minor,
        provisioned_minor=view.provisioned_minor,
        released_minor=view.released_minor,
        written_off_minor=view.written_off_minor,
        insurance_claims_minor=view.insurance_claims_minor,
        outstanding_principal_minor=view.outstanding_principal_minor,
        coverage_bps=view.coverage_bps,
        recovered_minor=view.recovered_minor,
    )


# -- portfolio report and stress tests -----------------------------------------------------

def portfolio_report(view: PortfolioView) -> risk_pb2.PortfolioReport:
    totals, book = view.totals, view.book
    return risk_pb2.PortfolioReport(
        as_of_date=view.as_of.isoformat(),
        totals=risk_pb2.PortfolioTotals(
            accounts_with_debt=totals.accounts_with_debt, live_loans=totals.live_loans,
            outstanding_principal_minor=totals.outstanding_principal_minor, fees_owed_minor=totals.fees_owed_minor,
            penalties_owed_minor=totals.penalties_owed_minor, reserve_balance_minor=totals.reserve_balance_minor),
        exposure=[risk_pb2.ExposureCell(
            grade=to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", e.grade),
            bucket=to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", e.bucket),
            loans=e.loans, outstanding_principal_minor=e.principal_minor) for e in book.exposure],
        vintages=[risk_pb2.Vintage(
            capture_month=v.capture_month.strftime("%Y-%m"), loans=v.loans, principal_minor=v.principal_minor,
            points=[risk_pb2.VintagePoint(months_on_book=p.months_on_book, observed_on=p.observed_on.isoformat(),
                                          bad_principal_minor=p.bad_principal_minor, bad_share_bps=p.share_bps)
                    for p in v.points]) for v in book.vintages],
        roll_rates=[risk_pb2.RollRate(
            month=r.month.strftime("%Y-%m"),
            from_bucket=to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", r.from_bucket),
            to_bucket=to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", r.to_bucket),
            principal_minor=r.principal_minor, from_principal_minor=r.from_principal_minor, share_bps=r.share_bps)
            for r in book.roll_rates],
        expected_loss=expected_loss(view.expected_loss),
        current_only=list(view.current_only),
        generated_at=timestamp(view.generated_at),
    )


def expected_loss(loss: ExpectedLoss) -> risk_pb2.ExpectedLoss:
    return risk_pb2.ExpectedLoss(
        policy_version=loss.policy_version, scorecard_version=loss.scorecard_version, scenario=loss.scenario,
        lgd_bps=loss.lgd_bps,
        grades=[risk_pb2.GradeLoss(grade=to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", g.grade), score=g.score,
                                   pd_bps=g.pd_bps, exposure_minor=g.exposure_minor,
                                   expected_loss_minor=g.expected_loss_minor) for g in loss.grades],
        buckets=[risk_pb2.BucketLossRate(
            bucket=to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", b.bucket),
            not_cure_rate_bps=b.not_cure_rate_bps, observed=b.observed, loss_rate_bps=b.loss_rate_bps)
            for b in loss.buckets],
        exposure_minor=loss.exposure_minor, expected_loss_minor=loss.expected_loss_minor,
        insurance_share_bps=loss.insurance_share_bps, insured_loss_minor=loss.insured_loss_minor,
        net_expected_loss_minor=loss.net_expected_loss_minor, reserve_balance_minor=loss.reserve_balance_minor,
        coverage_bps=loss.coverage_bps, shortfall_minor=loss.shortfall_minor,
    )


def stress_scenario(scenario: Scenario) -> risk_pb2.StressScenario:
    message = risk_pb2.StressScenario(
        name=scenario.name, description=scenario.description,
        pd_multipliers=[risk_pb2.GradeMultiplier(grade=to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", grade),
                                                 multiplier_bps=multiplier)
                        for grade, multiplier in sorted(scenario.pd_multiplier_bps.items())],
        roll_rate_multiplier_bps=scenario.roll_rate_multiplier_bps)
    if scenario.lgd_bps is not None:
        message.lgd_bps = scenario.lgd_bps
    return message


def stress_result(view: StressView) -> risk_pb2.StressTestResult:
    return risk_pb2.StressTestResult(
        as_of_date=view.as_of.isoformat(), scenario=stress_scenario(view.scenario),
        policy=expected_loss(view.policy), stressed=expected_loss(view.stressed), current_only=list(view.current_only))


# -- co-lending -------------------------------------------------------------------------------

def merchant_settlement(view: MerchantDayView) -> checkout_pb2.MerchantSettlement:
    day = view.settlement
    reply = checkout_pb2.MerchantSettlement(
        merchant_id=view.merchant_id,
        date=view.day.isoformat(),
        time_zone=SETTLEMENT_TIME_ZONE,
        category=to_proto_enum(checkout_pb2.MerchantCategory, "MERCHANT_CATEGORY_", day.category),
        fee_bps=day.fee_bps,
        captured_minor=day.captured_minor,
        refunded_minor=day.refunded_minor,
        fee_minor=day.fee_minor,
        net_minor=day.day_net_minor,
        captures=day.captures,
        refunds=day.refunds,
        carried_in_minor=day.carried_in_minor,
    )
    settled = view.settled
    if settled is None:
        return reply  # not settled: the settlement's fields stay unset
    reply.status = to_proto_enum(checkout_pb2.MerchantSettlementStatus, "MERCHANT_SETTLEMENT_STATUS_", settled.status)
    reply.paid_minor = settled.paid_minor
    reply.payment_order_id = str(settled.payment_order_id or "")
    reply.failure_reason = to_proto_enum(checkout_pb2.MerchantPaymentFailureReason,
                                         "MERCHANT_PAYMENT_FAILURE_REASON_", settled.failure_reason)
    reply.gateway_payment_id = settled.gateway_payment_id or ""
    if settled.completed_at is not None:
        reply.completed_at.FromDatetime(settled.completed_at)
    reply.payment_attempts = settled.payment_attempts
    reply.payee_id = settled.payee_id or ""
    return reply


def partner_settlement(view: PartnerSettlement) -> risk_pb2.PartnerSettlement:
    return risk_pb2.PartnerSettlement(
        partner_id=view.partner_id,
        date=view.day.isoformat(),
        time_zone=SETTLEMENT_TIME_ZONE,
        principal_minor=view.principal_minor,
        fee_minor=view.fee_minor,
        penalty_minor=view.penalty_minor,
        recovery_minor=view.recovery_minor,
        collected_minor=view.collected_minor,
        funded_principal_minor=view.funded_principal_minor,
        loans_funded=view.loans_funded,
        net_transfer_minor=view.net_transfer_minor,
        items=view.items,
    )


def journal_entry(view: JournalEntryView) -> repayment_pb2.JournalEntry:
    link = view.link
    return repayment_pb2.JournalEntry(
        entry_id=str(link.entry_id), account_id=str(link.account_id), sequence=link.sequence,
        kind=to_proto_enum(repayment_pb2.JournalEntryKind, "JOURNAL_ENTRY_KIND_", link.kind),
        reference_id=str(link.reference_id), created_at=timestamp(link.created_at),
        postings=[repayment_pb2.JournalPosting(
            line=line.line, ledger_account=to_proto_enum(repayment_pb2.LedgerAccount, "LEDGER_ACCOUNT_",
                                                         line.ledger_account),
            amount_minor=line.amount_minor) for line in link.lines],
        previous_sha256=link.previous_sha256, entry_sha256=view.entry_sha256)


def journal_page(page: JournalPage) -> repayment_pb2.GetAccountJournalResponse:
    return repayment_pb2.GetAccountJournalResponse(entries=[journal_entry(e) for e in page.entries],
                                                   next_page_token=page.next_page_token)


def statement(view: Statement) -> repayment_pb2.Statement:
    k = view.sections
    return repayment_pb2.Statement(
        account_id=str(view.account_id),
        statement_date=view.statement_date.isoformat(),
        period_start=view.period_start.isoformat(),
        cutoff_at=timestamp(view.cutoff_at),
        payment_due_date=view.payment_due_date.isoformat(),
        time_zone=view.time_zone,
        opening_minor=view.opening_minor,
        purchases_minor=k.purchases_minor,
        fees_minor=k.fees_minor,
        penalties_minor=k.penalties_minor,
        payments_minor=k.payments_minor,
        refunds_minor=k.refunds_minor,
        waivers_minor=k.waivers_minor,
        written_off_minor=k.written_off_minor,
        adjustments_minor=k.adjustments_minor,
        closing_minor=view.closing_minor,
        principal_owed_minor=view.owed.principal_minor,
        fee_owed_minor=view.owed.fee_minor,
        penalty_owed_minor=view.owed.penalty_minor,
        credit_balance_minor=view.owed.credit_balance_minor,
        credit_limit_minor=view.credit_limit_minor,
        available_minor=view.available_minor,
        amount_due_minor=view.amount_due_minor,
        issued_at=timestamp(view.issued_at),
        lines=[
            repayment_pb2.StatementLine(
                line=line.line,
                kind=to_proto_enum(repayment_pb2.StatementLineKind, "STATEMENT_LINE_KIND_", line.kind),
                booked_at=timestamp(line.booked_at),
                amount_minor=line.amount_minor,
                entry_id=str(line.entry_id),
                reference_id=str(line.reference_id),
                loan_id=str(line.loan_id) if line.loan_id else "",
                merchant_id=line.merchant_id,
                order_id=line.order_id,
                term_months=line.term_months,
                method=to_proto_enum(common_pb2.RepaymentMethod, "REPAYMENT_METHOD_", line.method or None),
                apr_bps=line.apr_bps,
            )
            for line in view.lines
        ],
        installments=[
            repayment_pb2.StatementInstallment(
                loan_id=str(i.loan_id), sequence=i.sequence, order_id=i.order_id, due_date=i.due_date.isoformat(),
                principal_minor=i.principal_minor, fee_minor=i.fee_minor, penalty_minor=i.penalty_minor,
                owed_minor=i.owed_minor)
            for i in view.installments
        ],
    )


def payment_method(view: PaymentMethodView) -> repayment_pb2.PaymentMethod:
    return repayment_pb2.PaymentMethod(
        payment_method_id=str(view.payment_method_id), account_id=str(view.account_id),
        kind=to_proto_enum(repayment_pb2.PaymentMethodKind, "PAYMENT_METHOD_KIND_", view.kind),
        status=to_proto_enum(repayment_pb2.PaymentMethodStatus, "PAYMENT_METHOD_STATUS_", view.status),
        token_last4=view.token_last4, display_hint=view.display_hint, created_at=timestamp(view.created_at),
        auto_debit=view.auto_debit)


def payout(view: PayoutView) -> repayment_pb2.Payout:
    return repayment_pb2.Payout(
        payout_id=str(view.payout_id), account_id=str(view.account_id), amount_minor=view.amount_minor,
        status=to_proto_enum(repayment_pb2.PayoutStatus, "PAYOUT_STATUS_", view.status),
        failure_reason=to_proto_enum(repayment_pb2.PayoutFailureReason, "PAYOUT_FAILURE_REASON_",
                                     view.failure_reason),
        payment_method_id=str(view.payment_method_id), created_at=timestamp(view.created_at),
        completed_at=timestamp(view.completed_at), account=account(view.account))
