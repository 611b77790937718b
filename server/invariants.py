"""The rules of the books, checked against a live database.

Tests call `check(conn)` after every scenario; operators run `python -m server.invariants`
against production (read-only queries). Each check returns the rows that break it.

Given the payment gateway (`check(conn, gateway)`; `--payment-gateway HOST:PORT` or
PAYMENT_GATEWAY_ADDR for the command), one more rule compares the books with the
processor: the cash that payment orders moved in the ledger is exactly the payments the
gateway reports SUCCEEDED (ListPayments). It covers the cash of gateway orders only
(payouts and auto-debits); money that Repay records from other channels (a bank transfer, a card
payment taken elsewhere) is not a gateway movement and is checked against the
repayments instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

import asyncpg
import grpc

from server.core.settlements import SETTLEMENT_TIME_ZONE
from server.db import ledger as ledger_rows
from server.domain import journal
from server.domain.payments import PaymentKind, PaymentStatus
from server.payments.gateway import PaymentGateway

# A settled merchant-day's bounds: midnight to midnight in the settlement zone
# (server/core/settlements.py, SETTLEMENT_TIME_ZONE).
_DAY_START = f"(s.settlement_date::timestamp AT TIME ZONE '{SETTLEMENT_TIME_ZONE}')"
_DAY_END = f"((s.settlement_date + 1)::timestamp AT TIME ZONE '{SETTLEMENT_TIME_ZONE}')"


def _settlement_date(at: str) -> str:
    """The settlement day of the instant `at`."""
    return f"({at} AT TIME ZONE '{SETTLEMENT_TIME_ZONE}')::date"


def _ledger_matches_schedules(ledger_account: str, unpaid_expression: str) -> str:
    """Accounts whose ledger balance in `ledger_account` differs from what the active
    loans' schedules say is unpaid."""
    return f"""
        SELECT a.account_id::text AS subject, coalesce(p.balance, 0)::bigint AS found,
               coalesce(u.unpaid, 0)::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = '{ledger_account}' GROUP BY account_id) p USING (account_id)
        LEFT JOIN (SELECT i.account_id, sum({unpaid_expression}) AS unpaid
                   FROM installments i JOIN loans l USING (loan_id)
                   WHERE l.status <> 'CHARGED_OFF' GROUP BY i.account_id) u USING (account_id)
        WHERE coalesce(p.balance, 0) <> coalesce(u.unpaid, 0)
    """


def _ledger_balance_is(ledger_account: str, expected_expression: str) -> str:
    """Accounts whose ledger balance in `ledger_account` differs from an expression over
    the accounts row (`a`)."""
    return f"""
        SELECT a.account_id::text AS subject, coalesce(p.balance, 0)::bigint AS found,
               ({expected_expression})::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = '{ledger_account}' GROUP BY account_id) p USING (account_id)
        WHERE coalesce(p.balance, 0) <> ({expected_expression})
    """


# Co-lending (docs/risk.md): what each co-funded loan owes, per component, as its
# funders' stakes see it (nothing once charged off).
_LOAN_OWED = """
    SELECT l.loan_id, l.account_id, l.principal_minor AS loan_principal_minor,
           CASE WHEN l.status = 'CHARGED_OFF' THEN 0
                ELSE sum(i.principal_minor - i.principal_paid_minor) END::bigint AS principal_owed,
           CASE WHEN l.status = 'CHARGED_OFF' THEN 0 ELSE sum(i.fee_minor - i.fee_paid_minor) END::bigint AS fee_owed,
           CASE WHEN l.status = 'CHARGED_OFF' THEN 0
                ELSE sum(i.penalty_minor - i.penalty_paid_minor) END::bigint AS penalty_owed
    FROM loans l JOIN installments i USING (loan_id)
    WHERE EXISTS (SELECT 1 FROM loan_funding f WHERE f.loan_id = l.loan_id)
    GROUP BY l.loan_id, l.account_id
"""


def _ledger_balance_sums(ledger_account: str, table: str, expected_expression: str, where: str = "true") -> str:
    """Accounts whose ledger balance in `ledger_account` differs from the sum of an
    expression over their rows of `table` (aliased `t`) that pass `where`; grouped,
    not correlated, so that it reads each table once."""
    return f"""
        SELECT a.account_id::text AS subject, coalesce(p.balance, 0)::bigint AS found,
               coalesce(e.expected, 0)::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = '{ledger_account}' GROUP BY account_id) p USING (account_id)
        LEFT JOIN (SELECT t.account_id, sum({expected_expression}) AS expected FROM {table} t
                   WHERE {where} GROUP BY t.account_id) e USING (account_id)
        WHERE coalesce(p.balance, 0) <> coalesce(e.expected, 0)
    """


def _partner_ledger_is(ledger_account: str, expected_expression: str) -> str:
    """Accounts whose ledger balance in a partner account differs from an expression
    summed over the partners' rows of loan_funding (`t`) of the account's loans."""
    return _ledger_balance_sums(ledger_account, "loan_funding", expected_expression, "t.funder_id <> 'platform'")


CHECKS: dict[str, str] = {
    "journal entries balance": """
        SELECT entry_id::text AS subject, sum(amount_minor)::bigint AS found, 0::bigint AS expected
        FROM postings GROUP BY entry_id HAVING sum(amount_minor) <> 0
    """,
    "held equals the sum of pending holds": """
        SELECT a.account_id::text AS subject, a.held_minor AS found,
               coalesce(h.pending, 0)::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS pending FROM authorizations
                   WHERE status = 'PENDING' GROUP BY account_id) h USING (account_id)
        WHERE a.held_minor <> coalesce(h.pending, 0)
    """,
    "outstanding principal equals the loans' unpaid principal": """
        SELECT a.account_id::text AS subject, a.outstanding_principal_minor AS found,
               coalesce(u.unpaid, 0)::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT i.account_id, sum(i.principal_minor - i.principal_paid_minor) AS unpaid
                   FROM installments i JOIN loans l USING (loan_id)
                   WHERE l.status = 'ACTIVE' GROUP BY i.account_id) u USING (account_id)
        WHERE a.outstanding_principal_minor <> coalesce(u.unpaid, 0)
    """,
    "principal receivable equals unpaid principal on the schedules":
        _ledger_matches_schedules("PRINCIPAL_RECEIVABLE", "i.principal_minor - i.principal_paid_minor"),
    "fee receivable equals unpaid fees on the schedules":
        _ledger_matches_schedules("FEE_RECEIVABLE", "i.fee_minor - i.fee_paid_minor"),
    "penalty receivable equals unpaid penalties on the schedules":
        _ledger_matches_schedules("PENALTY_RECEIVABLE", "i.penalty_minor - i.penalty_paid_minor"),
    "unearned fee income mirrors the fee receivable":
        _ledger_matches_schedules("UNEARNED_FEE_INCOME", "i.fee_paid_minor - i.fee_minor"),
    "the customer credit balance equals the ledger's":
        _ledger_balance_is("CUSTOMER_CREDIT_BALANCE", "-a.credit_balance_minor"),
    # Merchant payments move cash too, each account its part: they are checked against
    # the days they paid below.
    "cash equals the money customers paid in less the payouts made": """
        SELECT a.account_id::text AS subject, coalesce(c.balance, 0)::bigint AS found, x.expected::bigint
        FROM accounts a
        LEFT JOIN (SELECT p.account_id, sum(p.amount_minor) AS balance FROM postings p
                   JOIN journal_entries e ON e.account_id = p.account_id AND e.entry_id = p.entry_id
                   WHERE p.ledger_account = 'CASH' AND e.kind <> 'MERCHANT_PAID' GROUP BY 1) c USING (account_id)
        CROSS JOIN LATERAL (
            SELECT (SELECT coalesce(sum(r.amount_minor), 0) FROM repayments r
                    WHERE r.account_id = a.account_id AND r.channel <> 'CREDIT_BALANCE')
                 - (SELECT coalesce(sum(o.amount_minor), 0) FROM payment_orders o
                    WHERE o.account_id = a.account_id AND o.kind = 'PAYOUT' AND o.status = 'SUCCEEDED')
                   AS expected) x
        WHERE coalesce(c.balance, 0) <> x.expected
    """,
    "payouts in flight in the ledger are the REQUESTED payout orders":
        _ledger_balance_sums("PAYOUTS_IN_FLIGHT", "payment_orders", "-t.amount_minor",
                             "t.kind = 'PAYOUT' AND t.status = 'REQUESTED'"),
    "each payout order set its amount aside once": """
        SELECT o.order_id::text AS subject, coalesce(e.n, 0)::bigint AS found, 1::bigint AS expected
        FROM payment_orders o
        LEFT JOIN (SELECT account_id, reference_id, count(*) AS n FROM journal_entries
                   WHERE kind = 'PAYOUT_REQUESTED' GROUP BY 1, 2) e
             ON e.account_id = o.account_id AND e.reference_id = o.order_id
        WHERE o.kind = 'PAYOUT' AND coalesce(e.n, 0) <> 1
    """,
    "each final payment order is booked exactly once, as its result": """
        SELECT o.order_id::text || ' (' || o.status || ')' AS subject, coalesce(e.n, 0)::bigint AS found,
               (CASE WHEN o.status = 'REQUESTED' THEN 0 ELSE 1 END)::bigint AS expected
        FROM payment_orders o
        LEFT JOIN (SELECT account_id, reference_id, count(*) AS n,
                          count(*) FILTER (WHERE kind = 'PAYOUT_SUCCEEDED') AS succeeded
                   FROM journal_entries WHERE kind IN ('PAYOUT_SUCCEEDED', 'PAYOUT_FAILED') GROUP BY 1, 2) e
             ON e.account_id = o.account_id AND e.reference_id = o.order_id
        WHERE o.kind = 'PAYOUT'
          AND (coalesce(e.n, 0) <> CASE WHEN o.status = 'REQUESTED' THEN 0 ELSE 1 END
               OR coalesce(e.succeeded, 0) <> CASE WHEN o.status = 'SUCCEEDED' THEN 1 ELSE 0 END)
    """,
    "each succeeded debit order is exactly one auto-debit repayment of its amount, any other none": """
        SELECT o.order_id::text || ' (' || o.status || ')' AS subject, count(r.repayment_id)::bigint AS found,
               (CASE WHEN o.status = 'SUCCEEDED' THEN 1 ELSE 0 END)::bigint AS expected
        FROM payment_orders o
        LEFT JOIN repayments r ON r.account_id = o.account_id AND r.repayment_id = o.order_id
                               AND r.channel = 'AUTO_DEBIT' AND r.amount_minor = o.amount_minor
        WHERE o.kind = 'DEBIT'
        GROUP BY o.order_id, o.status
        HAVING count(r.repayment_id) <> CASE WHEN o.status = 'SUCCEEDED' THEN 1 ELSE 0 END
    """,
    "each auto-debit repayment is a succeeded debit order": """
        SELECT r.repayment_id::text AS subject, count(o.order_id)::bigint AS found, 1::bigint AS expected
        FROM repayments r
        LEFT JOIN payment_orders o ON o.account_id = r.account_id AND o.order_id = r.repayment_id
                                   AND o.kind = 'DEBIT' AND o.status = 'SUCCEEDED'
        WHERE r.channel = 'AUTO_DEBIT'
        GROUP BY r.repayment_id
        HAVING count(o.order_id) <> 1
    """,
    "each repayment's allocations and recoveries add up to what it applied": """
        SELECT r.repayment_id::text AS subject, (coalesce(x.total, 0) + coalesce(v.total, 0))::bigint AS found,
               r.applied_minor AS expected
        FROM repayments r
        LEFT JOIN (SELECT repayment_id, sum(amount_minor) AS total FROM repayment_allocations GROUP BY 1) x
             USING (repayment_id)
        LEFT JOIN (SELECT repayment_id, sum(principal_minor + fee_minor + penalty_minor) AS total FROM recoveries
                   GROUP BY 1) v USING (repayment_id)
        WHERE coalesce(x.total, 0) + coalesce(v.total, 0) <> r.applied_minor
    """,
    # Recoveries after charge-off (docs/repayment.md, "Recoveries").
    "recoveries never exceed what was written off": """
        SELECT l.loan_id::text || ' ' || c.component AS subject, c.recovered AS found, c.written_off AS expected
        FROM loans l
        CROSS JOIN LATERAL (VALUES
            ('principal', l.recovered_principal_minor, l.written_off_principal_minor),
            ('fee', l.recovered_fee_minor, l.written_off_fee_minor),
            ('penalty', l.recovered_penalty_minor, l.written_off_penalty_minor))
            AS c (component, recovered, written_off)
        WHERE c.recovered > c.written_off OR c.recovered < 0
    """,
    "only charged-off loans have debt written off": """
        SELECT l.loan_id::text || ' (' || l.status || ')' AS subject,
               (l.written_off_principal_minor + l.written_off_fee_minor + l.written_off_penalty_minor
                + l.insurance_claim_minor + abs(l.reserve_loss_minor))::bigint AS found, 0::bigint AS expected
        FROM loans l
        WHERE l.status <> 'CHARGED_OFF' AND (l.written_off_principal_minor + l.written_off_fee_minor
              + l.written_off_penalty_minor + l.insurance_claim_minor + abs(l.reserve_loss_minor)) <> 0
    """,
    "a loan's recoveries add up to what it records as recovered": """
        SELECT l.loan_id::text || ' ' || c.component AS subject, c.summed AS found, c.recorded AS expected
        FROM loans l
        LEFT JOIN (SELECT loan_id, sum(principal_minor) AS principal, sum(fee_minor) AS fee,
                          sum(penalty_minor) AS penalty FROM recoveries GROUP BY loan_id) v USING (loan_id)
        CROSS JOIN LATERAL (VALUES
            ('principal', coalesce(v.principal, 0)::bigint, l.recovered_principal_minor),
            ('fee', coalesce(v.fee, 0)::bigint, l.recovered_fee_minor),
            ('penalty', coalesce(v.penalty, 0)::bigint, l.recovered_penalty_minor)) AS c (component, summed, recorded)
        WHERE c.summed <> c.recorded
    """,
    "the risk reserve is the provisions not released, less losses, plus recoveries": """
        SELECT a.account_id::text AS subject, coalesce(-p.balance, 0)::bigint AS found,
               (coalesce(l.provisions, 0) - coalesce(l.losses, 0) + coalesce(v.recovered, 0))::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = 'RISK_RESERVE' GROUP BY account_id) p USING (account_id)
        LEFT JOIN (SELECT account_id,
                          sum(provision_minor) FILTER (WHERE status IN ('ACTIVE', 'CHARGED_OFF')) AS provisions,
                          sum(reserve_loss_minor) FILTER (WHERE status = 'CHARGED_OFF') AS losses
                   FROM loans GROUP BY account_id) l USING (account_id)
        LEFT JOIN (SELECT account_id, sum(reserve_minor) AS recovered FROM recoveries GROUP BY account_id) v
             USING (account_id)
        WHERE coalesce(-p.balance, 0) <> coalesce(l.provisions, 0) - coalesce(l.losses, 0) + coalesce(v.recovered, 0)
    """,
    "insurance claims are the claims made less the insurer's part of recoveries": """
        SELECT a.account_id::text AS subject, coalesce(p.balance, 0)::bigint AS found,
               (coalesce(l.claims, 0) - coalesce(v.insurer, 0))::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = 'INSURANCE_CLAIM_RECEIVABLE' GROUP BY account_id) p USING (account_id)
        LEFT JOIN (SELECT account_id, sum(insurance_claim_minor) AS claims FROM loans GROUP BY account_id) l
             USING (account_id)
        LEFT JOIN (SELECT account_id, sum(insurer_minor) AS insurer FROM recoveries GROUP BY account_id) v
             USING (account_id)
        WHERE coalesce(p.balance, 0) <> coalesce(l.claims, 0) - coalesce(v.insurer, 0)
    """,
    "loans are paid off exactly when nothing is owed": """
        SELECT l.loan_id::text || ' (' || l.status || ')' AS subject, o.owed::bigint AS found,
               0::bigint AS expected
        FROM loans l
        JOIN (SELECT loan_id, sum(principal_minor + fee_minor + penalty_minor - principal_paid_minor
                                  - fee_paid_minor - penalty_paid_minor) AS owed
              FROM installments GROUP BY loan_id) o USING (loan_id)
        WHERE (l.status IN ('PAID_OFF', 'CANCELLED') AND o.owed <> 0) OR (l.status = 'ACTIVE' AND o.owed = 0)
    """,
    "a refunded loan's schedule holds exactly the principal not refunded": """
        SELECT l.loan_id::text AS subject, coalesce(sum(i.principal_minor), 0)::bigint AS found,
               (l.principal_minor - l.refunded_minor)::bigint AS expected
        FROM loans l JOIN installments i USING (loan_id)
        GROUP BY l.loan_id, l.principal_minor, l.refunded_minor
        HAVING coalesce(sum(i.principal_minor), 0) <> l.principal_minor - l.refunded_minor
    """,
    "a loan's refunds add up to what it records as refunded": """
        SELECT l.loan_id::text AS subject, coalesce(r.total, 0)::bigint AS found, l.refunded_minor AS expected
        FROM loans l LEFT JOIN (SELECT loan_id, sum(amount_minor) AS total FROM refunds GROUP BY loan_id) r
             USING (loan_id)
        WHERE coalesce(r.total, 0) <> l.refunded_minor
    """,
    # A settled day's part moves on to MERCHANT_SETTLEMENT_IN_FLIGHT, still owed, less the
    # account's share of the fee (MERCHANT_FEE_INCOME); a payment moves it on as cash.
    "merchants are owed, were paid and paid fees the principal captured less refunds": """
        SELECT a.account_id::text AS subject, coalesce(m.balance, 0)::bigint AS found, x.expected::bigint
        FROM accounts a
        LEFT JOIN (SELECT p.account_id, sum(p.amount_minor) AS balance FROM postings p
                   JOIN journal_entries e ON e.account_id = p.account_id AND e.entry_id = p.entry_id
                   WHERE p.ledger_account IN ('MERCHANT_PAYABLE', 'MERCHANT_SETTLEMENT_IN_FLIGHT',
                                              'MERCHANT_FEE_INCOME')
                      OR (p.ledger_account = 'CASH' AND e.kind = 'MERCHANT_PAID')
                   GROUP BY 1) m USING (account_id)
        CROSS JOIN LATERAL (SELECT -coalesce(sum(l.principal_minor - l.refunded_minor), 0) AS expected
                            FROM loans l WHERE l.account_id = a.account_id) x
        WHERE coalesce(m.balance, 0) <> x.expected
    """,
    "no credit balance sits beside an active loan that owes something": """
        SELECT a.account_id::text AS subject, a.credit_balance_minor AS found, 0::bigint AS expected
        FROM accounts a
        WHERE a.credit_balance_minor > 0 AND EXISTS (
            SELECT 1 FROM loans l JOIN installments i USING (loan_id)
            WHERE l.account_id = a.account_id AND l.status = 'ACTIVE'
              AND i.principal_minor + i.fee_minor + i.penalty_minor
                  > i.principal_paid_minor + i.fee_paid_minor + i.penalty_paid_minor)
    """,
    "no credit balance sits beside written-off debt": """
        SELECT a.account_id::text AS subject, a.credit_balance_minor AS found, 0::bigint AS expected
        FROM accounts a
        WHERE a.credit_balance_minor > 0 AND EXISTS (
            SELECT 1 FROM loans l
            WHERE l.account_id = a.account_id AND l.status = 'CHARGED_OFF'
              AND l.written_off_principal_minor + l.written_off_fee_minor + l.written_off_penalty_minor
                  > l.recovered_principal_minor + l.recovered_fee_minor + l.recovered_penalty_minor)
    """,
    "captured authorizations have a loan of the captured amount": """
        SELECT au.authorization_id::text AS subject, coalesce(l.principal_minor, 0) AS found,
               au.captured_minor AS expected
        FROM authorizations au LEFT JOIN loans l ON l.authorization_id = au.authorization_id
        WHERE au.status = 'CAPTURED' AND (l.loan_id IS NULL OR l.principal_minor <> au.captured_minor)
    """,
    "a co-funded loan's funders lent its principal": """
        SELECT l.loan_id::text AS subject, sum(f.funded_principal_minor)::bigint AS found,
               l.principal_minor AS expected
        FROM loans l JOIN loan_funding f USING (loan_id)
        GROUP BY l.loan_id, l.principal_minor
        HAVING sum(f.funded_principal_minor) <> l.principal_minor
    """,
    "the platform lends at least 30 % of each co-funded loan": """
        SELECT l.loan_id::text AS subject, f.funded_principal_minor AS found,
               ceil(l.principal_minor * 0.3)::bigint AS expected
        FROM loans l JOIN loan_funding f USING (loan_id)
        WHERE f.funder_id = 'platform' AND f.funded_principal_minor * 10 < l.principal_minor * 3
    """,
    "each partner's stake is its share of what the loan owes": f"""
        SELECT o.loan_id::text || ' ' || f.funder_id || ' ' || c.component AS subject, c.found, c.expected
        FROM ({_LOAN_OWED}) o JOIN loan_funding f USING (loan_id)
        CROSS JOIN LATERAL (VALUES
            ('principal', f.principal_minor, div(o.principal_owed * f.principal_share_bps, 10000)::bigint),
            ('fee', f.fee_minor, div(o.fee_owed * f.fee_share_bps, 10000)::bigint),
            ('penalty', f.penalty_minor, div(o.penalty_owed * f.fee_share_bps, 10000)::bigint))
            AS c (component, found, expected)
        WHERE f.funder_id <> 'platform' AND c.found <> c.expected
    """,
    "a co-funded loan's stakes add up to what it owes": f"""
        SELECT o.loan_id::text || ' ' || c.component AS subject, c.found, c.expected
        FROM ({_LOAN_OWED}) o
        JOIN (SELECT loan_id, sum(principal_minor) AS principal, sum(fee_minor) AS fee,
                     sum(penalty_minor) AS penalty
              FROM loan_funding GROUP BY loan_id) s USING (loan_id)
        CROSS JOIN LATERAL (VALUES ('principal', s.principal::bigint, o.principal_owed::bigint),
                                   ('fee', s.fee::bigint, o.fee_owed::bigint),
                                   ('penalty', s.penalty::bigint, o.penalty_owed::bigint))
            AS c (component, found, expected)
        WHERE c.found <> c.expected
    """,
    "partners' principal held in the ledger is their stakes":
        _partner_ledger_is("PARTNER_PRINCIPAL_HELD", "-t.principal_minor"),
    "partners' fees held in the ledger are their stakes": _partner_ledger_is("PARTNER_FEE_HELD", "-t.fee_minor"),
    "partners' penalties held in the ledger are their stakes":
        _partner_ledger_is("PARTNER_PENALTY_HELD", "-t.penalty_minor"),
    "partner funding is the principal partners lent":
        _partner_ledger_is("PARTNER_FUNDING", "t.funded_principal_minor"),
    "what the platform owes partners is what it collected for them":
        _ledger_balance_sums("PARTNER_SETTLEMENT_PAYABLE", "partner_settlement_items",
                             "-(t.principal_minor + t.fee_minor + t.penalty_minor + t.recovery_minor)"),
    "a partner's exposure counters add up to its principal owed": """
        SELECT p.partner_id AS subject, coalesce(x.exposure, 0)::bigint AS found,
               coalesce(f.owed, 0)::bigint AS expected
        FROM funding_partners p
        LEFT JOIN (SELECT partner_id, sum(exposure_minor) AS exposure FROM partner_exposure GROUP BY 1) x
             USING (partner_id)
        LEFT JOIN (SELECT funder_id AS partner_id, sum(principal_minor) AS owed FROM loan_funding GROUP BY 1) f
             USING (partner_id)
        WHERE coalesce(x.exposure, 0) <> coalesce(f.owed, 0)
    """,
    # Merchant settlement (docs/payments.md): a settled day owes the merchant nothing more
    # in any customer account, and what left MERCHANT_PAYABLE is the day's figures.
    "every settled merchant-day's MERCHANT_PAYABLE is zero": f"""
        SELECT subject, found, 0::bigint AS expected FROM (
            SELECT s.merchant_id || ' ' || s.settlement_date::text AS subject,
                   (SELECT coalesce(sum(p.amount_minor), 0) FROM postings p
                    JOIN journal_entries e ON e.account_id = p.account_id AND e.entry_id = p.entry_id
                    WHERE p.ledger_account = 'MERCHANT_PAYABLE' AND (
                        (e.kind = 'LOAN_CAPTURED' AND (e.account_id, e.reference_id) IN (
                            SELECT l.account_id, l.loan_id FROM loans l
                            WHERE l.merchant_id = s.merchant_id AND l.created_at >= {_DAY_START}
                              AND l.created_at < {_DAY_END}))
                        OR (e.kind = 'LOAN_REFUNDED' AND (e.account_id, e.reference_id) IN (
                            SELECT r.account_id, r.refund_id FROM refunds r
                            JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
                            WHERE l.merchant_id = s.merchant_id AND r.created_at >= {_DAY_START}
                              AND r.created_at < {_DAY_END}))
                        OR (e.kind = 'MERCHANT_DAY_SETTLED' AND e.reference_id = s.settlement_id))
                   )::bigint AS found
            FROM merchant_settlements s) t
        WHERE found <> 0
    """,
    "a settled merchant-day moved its captures less refunds out of MERCHANT_PAYABLE": """
        SELECT s.merchant_id || ' ' || s.settlement_date::text AS subject,
               coalesce(m.moved, 0)::bigint AS found, (s.captured_minor - s.refunded_minor)::bigint AS expected
        FROM merchant_settlements s
        LEFT JOIN (SELECT e.reference_id, sum(p.amount_minor) AS moved
                   FROM journal_entries e
                   JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
                   WHERE e.kind = 'MERCHANT_DAY_SETTLED' AND p.ledger_account = 'MERCHANT_PAYABLE'
                   GROUP BY 1) m ON m.reference_id = s.settlement_id
        WHERE coalesce(m.moved, 0) <> s.captured_minor - s.refunded_minor
    """,
    "a settled merchant-day earned its fee and put the rest in flight": """
        SELECT s.merchant_id || ' ' || s.settlement_date::text || ' ' || c.part AS subject,
               c.found::bigint, c.expected::bigint
        FROM merchant_settlements s
        LEFT JOIN (SELECT e.reference_id,
                          sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'MERCHANT_FEE_INCOME') AS fee,
                          sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'MERCHANT_SETTLEMENT_IN_FLIGHT')
                              AS in_flight
                   FROM journal_entries e
                   JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
                   WHERE e.kind = 'MERCHANT_DAY_SETTLED' GROUP BY 1) m ON m.reference_id = s.settlement_id
        CROSS JOIN LATERAL (SELECT CASE WHEN s.fee_booked THEN s.fee_minor ELSE 0 END AS earned) f
        CROSS JOIN LATERAL (VALUES
            ('fee', coalesce(m.fee, 0), -f.earned),
            ('in flight', coalesce(m.in_flight, 0), -(s.captured_minor - s.refunded_minor - f.earned)))
            AS c (part, found, expected)
        WHERE c.found <> c.expected
    """,
    # Each merchant payment completes once: a PAID day's payment is booked, as cash out
    # of flight, for exactly what the day paid; no other day's, and no earlier failed
    # key's, moves anything.
    "each merchant-day's payment is booked once, for what it paid": """
        SELECT s.merchant_id || ' ' || s.settlement_date::text || ' (' || s.status || ')' AS subject,
               coalesce(c.cash, 0)::bigint AS found, (-s.paid_minor)::bigint AS expected
        FROM merchant_settlements s
        LEFT JOIN (SELECT e.reference_id, sum(p.amount_minor) AS cash FROM journal_entries e
                   JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
                   WHERE e.kind = 'MERCHANT_PAID' AND p.ledger_account = 'CASH' GROUP BY 1) c
             ON c.reference_id = s.payment_order_id
        WHERE coalesce(c.cash, 0) <> -s.paid_minor
    """,
    # Per account: what a day put in flight there leaves it when the day that pays it (the
    # first day from it on that is not CARRIED) is PAID, and only then.
    "an account's merchant payments in flight are its days not paid yet": """
        SELECT a.account_id::text AS subject, coalesce(b.balance, 0)::bigint AS found,
               coalesce(x.expected, 0)::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = 'MERCHANT_SETTLEMENT_IN_FLIGHT' GROUP BY 1) b USING (account_id)
        LEFT JOIN (SELECT e.account_id, sum(p.amount_minor) AS expected
                   FROM merchant_settlements s
                   JOIN journal_entries e ON e.reference_id = s.settlement_id AND e.kind = 'MERCHANT_DAY_SETTLED'
                   JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
                   WHERE p.ledger_account = 'MERCHANT_SETTLEMENT_IN_FLIGHT'
                     AND coalesce((SELECT c.status FROM merchant_settlements c
                                   WHERE c.merchant_id = s.merchant_id AND c.settlement_date >= s.settlement_date
                                     AND c.status <> 'CARRIED'
                                   ORDER BY c.settlement_date LIMIT 1), 'CARRIED') <> 'PAID'
                   GROUP BY 1) x USING (account_id)
        WHERE coalesce(b.balance, 0) <> coalesce(x.expected, 0)
    """,
    # Per account, from the captures and refunds themselves: what is still payable is the
    # merchant-days not settled yet.
    "an account's MERCHANT_PAYABLE is its merchant-days not settled yet": f"""
        SELECT a.account_id::text AS subject, coalesce(b.balance, 0)::bigint AS found,
               (-coalesce(c.unsettled, 0) + coalesce(r.unsettled, 0))::bigint AS expected
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS balance FROM postings
                   WHERE ledger_account = 'MERCHANT_PAYABLE' GROUP BY 1) b USING (account_id)
        LEFT JOIN (SELECT l.account_id, sum(l.principal_minor) AS unsettled FROM loans l
                   WHERE NOT EXISTS (SELECT 1 FROM merchant_settlements s WHERE s.merchant_id = l.merchant_id
                                     AND s.settlement_date = {_settlement_date("l.created_at")})
                   GROUP BY 1) c USING (account_id)
        LEFT JOIN (SELECT r.account_id, sum(r.amount_minor) AS unsettled FROM refunds r
                   JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
                   WHERE NOT EXISTS (SELECT 1 FROM merchant_settlements s WHERE s.merchant_id = l.merchant_id
                                     AND s.settlement_date = {_settlement_date("r.created_at")})
                   GROUP BY 1) r USING (account_id)
        WHERE coalesce(b.balance, 0) <> -coalesce(c.unsettled, 0) + coalesce(r.unsettled, 0)
    """,
    "a merchant payment is booked in an account at most once": """
        SELECT e.account_id::text || ' ' || e.reference_id::text AS subject, count(*)::bigint AS found,
               1::bigint AS expected
        FROM journal_entries e WHERE e.kind = 'MERCHANT_PAID'
        GROUP BY e.account_id, e.reference_id HAVING count(*) > 1
    """,
    "every merchant payment booked is a paid day's": """
        SELECT e.reference_id::text AS subject, count(*)::bigint AS found, 0::bigint AS expected
        FROM journal_entries e
        WHERE e.kind = 'MERCHANT_PAID' AND NOT EXISTS (
            SELECT 1 FROM merchant_settlements s WHERE s.payment_order_id = e.reference_id AND s.status = 'PAID')
        GROUP BY e.reference_id
    """,
    # What is in flight for a merchant is what it is still owed: every settled day's net
    # of what it carried in, less what was paid (a CARRIED day's net is still owed, or
    # owing, until a later day pays it).
    "what is in flight for a merchant is what it is still owed": """
        SELECT d.merchant_id AS subject, coalesce(f.in_flight, 0)::bigint AS found, (-d.owed)::bigint AS expected
        FROM (SELECT merchant_id,
                     sum(net_minor - carried_in_minor - paid_minor + CASE WHEN fee_booked THEN 0 ELSE fee_minor END)
                         AS owed
              FROM merchant_settlements GROUP BY 1) d
        LEFT JOIN (SELECT s.merchant_id, sum(p.amount_minor) AS in_flight
                   FROM merchant_settlements s
                   JOIN journal_entries e ON e.reference_id IN (s.settlement_id, s.payment_order_id)
                   JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
                   WHERE e.kind IN ('MERCHANT_DAY_SETTLED', 'MERCHANT_PAID')
                     AND p.ledger_account = 'MERCHANT_SETTLEMENT_IN_FLIGHT'
                   GROUP BY 1) f USING (merchant_id)
        WHERE coalesce(f.in_flight, 0) <> -d.owed
    """,
    # The notice of a failed auto-debit (docs/collections.md) tells of a failed try of its
    # own bill, under that try's step.
    "a debit-failure notice names a FAILED debit of its bill": """
        SELECT a.attempt_id::text AS subject, 0::bigint AS found, 1::bigint AS expected
        FROM contact_attempts a
        WHERE (a.payment_order_id IS NOT NULL AND (a.channel <> 'EMAIL' OR NOT EXISTS (
                  SELECT 1 FROM payment_orders o
                  WHERE o.order_id = a.payment_order_id AND o.account_id = a.account_id AND o.kind = 'DEBIT'
                    AND o.status = 'FAILED' AND o.due_date = a.due_date
                    AND a.step_code = 'AUTO_DEBIT_FAILED_' || o.attempt)))
           OR (a.payment_order_id IS NULL AND a.step_code LIKE 'AUTO\\_DEBIT\\_FAILED\\_%')
    """,
    # Two rules that one database enforces with unique indexes across accounts, and a
    # database sharded by account only within each account (docs/scaling.md): checked
    # here across all of them.
    "a merchant order has one live authorization": """
        SELECT merchant_id || ' ' || order_id AS subject, count(*)::bigint AS found, 1::bigint AS expected
        FROM authorizations WHERE status IN ('PENDING', 'CAPTURED')
        GROUP BY merchant_id, order_id HAVING count(*) > 1
    """,
    "a customer has one account": """
        SELECT customer_id AS subject, count(*)::bigint AS found, 1::bigint AS expected
        FROM accounts GROUP BY customer_id HAVING count(*) > 1
    """,
}


# Every payment order with the cash its entries moved (debits positive), and the time of
# the snapshot they were read in; a merchant-day's payment (its current key, and the
# keys of its failed payments) is an order too, its cash booked across accounts.
_ORDERS_WITH_CASH = """
    SELECT o.order_id::text AS order_id, o.kind, o.status, o.amount_minor,
           coalesce(c.cash, 0)::bigint AS cash_minor
    FROM payment_orders o
    LEFT JOIN (SELECT e.account_id, e.reference_id, sum(p.amount_minor) AS cash
               FROM journal_entries e JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
               WHERE p.ledger_account = 'CASH' GROUP BY 1, 2) c
         ON c.account_id = o.account_id AND c.reference_id = o.order_id
    UNION ALL
    SELECT k.order_id::text, 'MERCHANT',
           CASE WHEN k.order_id <> s.payment_order_id THEN 'FAILED'
                WHEN s.status = 'PAID' THEN 'SUCCEEDED' ELSE s.status END,
           s.net_minor, coalesce(c.cash, 0)::bigint
    FROM merchant_settlements s
    CROSS JOIN LATERAL unnest(s.failed_payment_order_ids || s.payment_order_id) AS k (order_id)
    LEFT JOIN (SELECT e.reference_id, sum(p.amount_minor) AS cash
               FROM journal_entries e JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
               WHERE p.ledger_account = 'CASH' AND e.kind = 'MERCHANT_PAID' GROUP BY 1) c
         ON c.reference_id = k.order_id
    WHERE k.order_id IS NOT NULL
"""
GATEWAY_RULE = "the cash of payment orders in the ledger is the gateway's SUCCEEDED payments"
# Which way each kind of payment moves our cash.
_CASH_SIGN = {PaymentKind.PAYOUT: -1, PaymentKind.MERCHANT: -1, PaymentKind.DEBIT: 1}


# Checked in Python, entry by entry, with the encoding auditors use (server/domain/journal.py),
# not with the database's own copy of it.
CHAIN_RULE = "each account's journal is an unbroken hash chain"


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str
    found: int | str
    expected: int | str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject} has {self.found}, expected {self.expected}"


async def check(conn: asyncpg.Connection, gateway: PaymentGateway | None = None) -> list[Violation]:
    """Every violation of every rule, read in one consistent snapshot; with `gateway`,
    the books against the gateway's payments too (read after the snapshot)."""
    violations = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for rule, sql in CHECKS.items():
            for row in await conn.fetch(sql):
                violations.append(Violation(rule, row["subject"], row["found"], row["expected"]))
        violations += [Violation(CHAIN_RULE, _subject(b), b.found, b.expected) for b in await chain_breaks(conn)]
        orders = {r["order_id"]: r for r in await conn.fetch(_ORDERS_WITH_CASH)}
        as_of = await conn.fetchval("SELECT now()")
    if gateway is not None:
        violations += await gateway_differences(orders, as_of, gateway)
    return violations


async def gateway_differences(orders: dict[str, asyncpg.Record], as_of, gateway: PaymentGateway) -> list[Violation]:
    """Payment orders whose booked cash is not what the gateway says moved. The gateway
    is read after the snapshot: a payment it took after the snapshot began is left out,
    and so is an order still REQUESTED (its result is in flight, PAYOUTS_IN_FLIGHT
    holds it); an order is booked SUCCEEDED only after the gateway said so."""
    succeeded: dict[str, int] = {}
    token = ""
    while True:
        page = await gateway.list_payments(page_size=100, page_token=token, status=PaymentStatus.SUCCEEDED)
        for payment in page.payments:
            if payment.created_at < as_of:
                succeeded[payment.idempotency_key] = _CASH_SIGN[payment.kind] * payment.amount_minor
        token = page.next_page_token
        if not token:
            break
    violations = []
    for key, cash_minor in sorted(succeeded.items()):
        order = orders.get(key)
        if order is None:
            violations.append(Violation(GATEWAY_RULE, f"gateway payment {key} (no such order)", 0, cash_minor))
        elif order["status"] != "REQUESTED" and order["cash_minor"] != cash_minor:
            violations.append(Violation(GATEWAY_RULE, f"order {key} ({order['status']})", order["cash_minor"],
                                        cash_minor))
    for key, order in sorted(orders.items()):
        if key not in succeeded and order["cash_minor"] != 0:
            violations.append(Violation(GATEWAY_RULE, f"order {key} ({order['status']}, not SUCCEEDED at the gateway)",
                                        order["cash_minor"], 0))
    return violations


def _subject(broken: journal.Break) -> str:
    where = f"entry {broken.entry_id} (sequence {broken.sequence})" if broken.entry_id else "head"
    return f"account {broken.account_id} {where}: {broken.problem}"


async def chain_breaks(conn: asyncpg.Connection) -> list[journal.Break]:
    """Every break in every account's chain; inside a transaction (the entries are read
    through a cursor), one account's entries in memory at a time."""
    heads = await ledger_rows.heads(conn)
    breaks: list[journal.Break] = []
    account_id = None
    links: list[tuple[journal.Link, bytes]] = []
    async for row in ledger_rows.chains(conn):
        if row["account_id"] != account_id:
            if account_id is not None:
                breaks += journal.verify(account_id, links, heads.pop(account_id, journal.Head(0, journal.GENESIS)))
            account_id, links = row["account_id"], []
        links.append(ledger_rows.link_of(row))
    if account_id is not None:
        breaks += journal.verify(account_id, links, heads.pop(account_id, journal.Head(0, journal.GENESIS)))
    # Accounts without a single entry: their head must still be the empty chain's.
    for other, head in heads.items():
        breaks += journal.verify(other, [], head)
    return breaks


async def _main(dsn: str, gateway_addr: str | None) -> int:
    conn = await asyncpg.connect(dsn)
    channel = grpc.aio.insecure_channel(gateway_addr) if gateway_addr else None
    try:
        violations = await check(conn, PaymentGateway(channel) if channel is not None else None)
    finally:
        await conn.close()
        if channel is not None:
            await channel.close()
    for violation in violations:
        print(violation)
    rules = len(CHECKS) + 1 + (1 if gateway_addr else 0)
    print(f"{rules} rules checked, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m server.invariants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payment-gateway", default=os.environ.get("PAYMENT_GATEWAY_ADDR") or None,
                        metavar="HOST:PORT", help="also compare the books with this PaymentGatewayService "
                                                  "(default PAYMENT_GATEWAY_ADDR; unset: not compared)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL: set it to the database to check")
    sys.exit(asyncio.run(_main(url, args.payment_gateway)))
