"""SQL of repayments, their allocations, and refunds."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from server.db import funding, idempotency, ledger, loans
from server.domain.journal import Head
from server.domain.loans import InstallmentState

INSERT_REPAYMENT_WITH_ALLOCATIONS = """
WITH repayment AS (
    INSERT INTO repayments (repayment_id, account_id, loan_id, channel, amount_minor, applied_minor,
                            unapplied_minor, waived_fee_minor, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING repayment_id, account_id
)
INSERT INTO repayment_allocations (repayment_id, line, account_id, loan_id, sequence, component, amount_minor)
SELECT repayment.repayment_id, a.line, repayment.account_id, a.loan_id, a.sequence, a.component, a.amount_minor
FROM repayment, unnest($10::integer[], $11::uuid[], $12::integer[], $13::text[], $14::bigint[])
                AS a (line, loan_id, sequence, component, amount_minor)
"""

INSERT_REFUND = """
INSERT INTO refunds (refund_id, account_id, loan_id, amount_minor, returned_minor, reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

ADD_TO_CREDIT_BALANCE = """
UPDATE accounts SET credit_balance_minor = credit_balance_minor + $2, updated_at = $3 WHERE account_id = $1
"""

# Repay, read: the account with its version and the written-off debt its charged-off
# loans still owe (a payment that may recover it takes the locked mode), the request's
# idempotency record, and the loans in scope with their installments, one row per installment (one row in all when
# there is none); all within the account, a loan of another account is not in scope.
# $1 account, $2-$4 caller, method, key; by loan, $5 the loan.
_REPAY_READ = """
SELECT a.account_id, a.customer_id, a.status, a.risk_grade, a.credit_limit_minor, a.temporary_limit_minor,
       a.temporary_limit_expires_at, a.held_minor, a.outstanding_principal_minor, a.credit_balance_minor,
       a.currency, a.locale, a.time_zone, a.created_at, a.updated_at, a.version, a.statement_day,
       a.payment_due_days, a.journal_length, a.journal_head_sha256,
       r.request_sha256 AS replay_sha256, r.response AS replay_response,
       l.loan_id, l.account_id AS loan_account_id, l.authorization_id AS loan_authorization_id,
       l.status AS loan_status, l.principal_minor AS loan_principal_minor, l.term_months AS loan_term_months,
       l.method AS loan_method, l.monthly_rate_bps AS loan_monthly_rate_bps, l.apr_bps AS loan_apr_bps,
       l.merchant_id AS loan_merchant_id, l.order_id AS loan_order_id, l.currency AS loan_currency,
       l.start_date AS loan_start_date, l.refunded_minor AS loan_refunded_minor,
       l.created_at AS loan_created_at, l.updated_at AS loan_updated_at, l.provision_minor AS loan_provision_minor,
       l.written_off_principal_minor AS loan_written_off_principal_minor,
       l.written_off_fee_minor AS loan_written_off_fee_minor,
       l.written_off_penalty_minor AS loan_written_off_penalty_minor,
       l.insurance_claim_minor AS loan_insurance_claim_minor,
       l.recovered_principal_minor AS loan_recovered_principal_minor,
       l.recovered_fee_minor AS loan_recovered_fee_minor,
       l.recovered_penalty_minor AS loan_recovered_penalty_minor,
       wo.written_off_owed_minor,
       fs.funder_ids, fs.funder_principal_share_bps, fs.funder_fee_share_bps, fs.funder_funded_principal_minor,
       fs.funder_principal_minor, fs.funder_fee_minor, fs.funder_penalty_minor, fs.funder_exposure_stripe,
       i.sequence, i.due_date, i.principal_minor, i.fee_minor, i.principal_paid_minor, i.fee_paid_minor,
       i.penalty_minor, i.penalty_paid_minor, i.fee_waived_minor
FROM (SELECT 1) AS one
LEFT JOIN accounts a ON a.account_id = $1
LEFT JOIN LATERAL (
    SELECT coalesce(sum(w.written_off_principal_minor + w.written_off_fee_minor + w.written_off_penalty_minor
                        - w.recovered_principal_minor - w.recovered_fee_minor - w.recovered_penalty_minor), 0)::bigint
           AS written_off_owed_minor
    FROM loans w WHERE w.account_id = a.account_id AND w.status = 'CHARGED_OFF') AS wo ON true
LEFT JOIN idempotency_records r ON r.account_id = $1 AND r.caller = $2 AND r.method = $3
                                AND r.idempotency_key = $4 AND r.response IS NOT NULL
LEFT JOIN loans l ON l.account_id = a.account_id AND {loans}
LEFT JOIN LATERAL ({funders}) AS fs ON true
LEFT JOIN installments i ON i.account_id = l.account_id AND i.loan_id = l.loan_id
ORDER BY l.created_at, l.loan_id, i.sequence
"""
REPAY_READ_BY_ACCOUNT = _REPAY_READ.format(loans="l.status = 'ACTIVE'", funders=funding.funders_of_loan())
REPAY_READ_BY_LOAN = _REPAY_READ.format(loans="l.loan_id = $5", funders=funding.funders_of_loan())

# The funders of each loan in scope, as the arrays of server/db/funding.funders_of_loan.
_FUNDER_FIELDS = ("funder_ids", "funder_principal_share_bps", "funder_fee_share_bps", "funder_funded_principal_minor",
                  "funder_principal_minor", "funder_fee_minor", "funder_penalty_minor", "funder_exposure_stripe")
_LOAN_FIELDS = ("account_id", "authorization_id", "status", "principal_minor", "term_months", "method",
                "monthly_rate_bps", "apr_bps", "merchant_id", "order_id", "currency", "start_date", "refunded_minor",
                "created_at", "updated_at", "provision_minor", "written_off_principal_minor", "written_off_fee_minor",
                "written_off_penalty_minor", "insurance_claim_minor", "recovered_principal_minor",
                "recovered_fee_minor", "recovered_penalty_minor")

# Repay, write (a Write, see server/core/commands.py): the account's principal and credit
# balance if its version is unchanged, the installments paid, the loans paid off, the
# repayment with its allocations, and the ledger entries.
# $6 account, $7 version, $8 principal repaid, $9 unapplied, $10 now, $11-$19 the
# installments, $20 loans paid off, $21-$26 the repayment, $27-$31 its allocations,
# $32-$41 the entries, chained after the account's head as read.
_REPAY_CTES = """
account AS (
    UPDATE accounts
    SET outstanding_principal_minor = outstanding_principal_minor - $8::bigint,
        credit_balance_minor = credit_balance_minor + $9::bigint,
        updated_at = CASE WHEN $8::bigint <> 0 OR $9::bigint <> 0 THEN $10 ELSE updated_at END,
        """ + ledger.head_assignments(32) + """
    WHERE account_id = $6 AND version = $7 AND EXISTS (SELECT 1 FROM claim)
    RETURNING account_id
),
paid AS (
    UPDATE installments AS i
    """ + loans.set_installment_state() + """
    FROM account, unnest($11::uuid[], $12::integer[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
                         $17::bigint[], $18::bigint[], $19::bigint[])
         AS u (loan_id, sequence, principal_minor, fee_minor, principal_paid_minor, fee_paid_minor, penalty_minor,
               penalty_paid_minor, fee_waived_delta_minor)
    WHERE i.account_id = $6 AND i.loan_id = u.loan_id AND i.sequence = u.sequence
    RETURNING 1
),
paid_off AS (
    UPDATE loans SET status = 'PAID_OFF', updated_at = $10
    FROM account WHERE loans.account_id = $6 AND loans.loan_id = ANY($20::uuid[]) AND loans.status = 'ACTIVE'
    RETURNING 1
),
repayment AS (
    INSERT INTO repayments (repayment_id, account_id, loan_id, channel, amount_minor, applied_minor,
                            unapplied_minor, waived_fee_minor, created_at)
    SELECT $21, $6, $22, $23, $24, $25, $9, $26, $10 FROM account
    RETURNING repayment_id
),
allocations AS (
    INSERT INTO repayment_allocations (repayment_id, line, account_id, loan_id, sequence, component, amount_minor)
    SELECT repayment.repayment_id, a.line, $6, a.loan_id, a.sequence, a.component, a.amount_minor
    FROM repayment, unnest($27::integer[], $28::uuid[], $29::integer[], $30::text[], $31::bigint[])
                    AS a (line, loan_id, sequence, component, amount_minor)
),""" + ledger.entries_ctes("account", account="$6", now="$10", first=32)
# Every installment and loan decided on was still as read: none is written twice.
_REPAY_ALSO = ("(SELECT count(*) FROM paid) = cardinality($12::integer[])"
               " AND (SELECT count(*) FROM paid_off) = cardinality($20::uuid[])")
REPAY_WRITE = idempotency.write_statement(_REPAY_CTES, done="repayment", detail="account changed since it was read",
                                          also=_REPAY_ALSO)

# Repay of loans some of which are co-funded: REPAY_WRITE, and what the payment did to
# their funders (server/db/funding.changes_ctes), every stake decided on written.
# $42-$58 the funding changes (server/core/funding.FundingChanges.arrays).
REPAY_WRITE_CO_FUNDED = idempotency.write_statement(
    _REPAY_CTES + "," + funding.changes_ctes("account", account="$6", now="$10", first=42),
    done="repayment", detail="account changed since it was read",
    also=_REPAY_ALSO + " AND (SELECT count(*) FROM funding_stakes) = cardinality($42::uuid[])")


async def repay_read(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID | None,
                     key) -> tuple[asyncpg.Record, list[tuple[dict, list[asyncpg.Record]]]]:
    """The one read of Repay for the idempotency `key` (server.core.commands.Key): the
    first row (account and idempotency columns) and the loans in scope, oldest first,
    each as a dict of its columns with its installment rows."""
    if loan_id is None:
        rows = await conn.fetch(REPAY_READ_BY_ACCOUNT, account_id, key.caller, key.method, key.idempotency_key)
    else:
        rows = await conn.fetch(REPAY_READ_BY_LOAN, account_id, key.caller, key.method, key.idempotency_key,
                                loan_id)
    loans: list[tuple[dict, list[asyncpg.Record]]] = []
    for row in rows:
        if row["loan_id"] is None:
            continue
        if not loans or loans[-1][0]["loan_id"] != row["loan_id"]:
            loan = {"loan_id": row["loan_id"], **{name: row["loan_" + name] for name in _LOAN_FIELDS},
                    **{name: row[name] for name in _FUNDER_FIELDS}}
            loans.append((loan, []))
        if row["sequence"] is not None:
            loans[-1][1].append(row)
    return rows[0], loans


def repay_args(*, account_id: UUID, version: int, principal_minor: int, unapplied_minor: int,
               installments: list[tuple[UUID, InstallmentState, int]], paid_off: list[UUID], repayment_id: UUID,
               loan_id: UUID | None, channel: str, amount_minor: int, applied_minor: int, waived_fee_minor: int,
               allocations, head: Head, entries: list, now: datetime) -> tuple:
    """The arguments ($6 on) of REPAY_WRITE: `installments` are (loan_id, InstallmentState
    after, fee waived now) triples, `entries` (reference_id, JournalEntry) pairs chained
    after the account's `head`."""
    allocations = list(allocations)
    _, entry_arrays = ledger.entry_arrays(account_id, head, entries, now)
    return (
        account_id, version, principal_minor, unapplied_minor, now,
        [loan for loan, _, _ in installments], [i.sequence for _, i, _ in installments],
        [i.principal_minor for _, i, _ in installments], [i.fee_minor for _, i, _ in installments],
        [i.principal_paid_minor for _, i, _ in installments], [i.fee_paid_minor for _, i, _ in installments],
        [i.penalty_minor for _, i, _ in installments], [i.penalty_paid_minor for _, i, _ in installments],
        [waived for _, _, waived in installments],
        paid_off,
        repayment_id, loan_id, channel, amount_minor, applied_minor, waived_fee_minor,
        list(range(1, len(allocations) + 1)), [a.loan_id for a in allocations], [a.sequence for a in allocations],
        [a.component.value for a in allocations], [a.amount_minor for a in allocations],
        *entry_arrays)


async def insert(conn: asyncpg.Connection, *, repayment_id: UUID, account_id: UUID, loan_id: UUID | None,
                 channel: str, amount_minor: int, applied_minor: int, unapplied_minor: int,
                 waived_fee_minor: int, allocations, now: datetime) -> None:
    allocations = list(allocations)
    await conn.execute(
        INSERT_REPAYMENT_WITH_ALLOCATIONS, repayment_id, account_id, loan_id, channel, amount_minor, applied_minor,
        unapplied_minor, waived_fee_minor, now,
        list(range(1, len(allocations) + 1)), [a.loan_id for a in allocations], [a.sequence for a in allocations],
        [a.component.value for a in allocations], [a.amount_minor for a in allocations])


async def insert_refund(conn: asyncpg.Connection, *, refund_id: UUID, account_id: UUID, loan_id: UUID,
                        amount_minor: int, returned_minor: int, reason: str, now: datetime) -> None:
    await conn.execute(INSERT_REFUND, refund_id, account_id, loan_id, amount_minor, returned_minor, reason, now)


async def add_to_credit_balance(conn: asyncpg.Connection, account_id: UUID, delta_minor: int, now: datetime) -> None:
    await conn.execute(ADD_TO_CREDIT_BALANCE, account_id, delta_minor, now)
