"""Prometheus metrics of the collections bot, served on METRICS_LISTEN_ADDR (see
server/metrics.py for the server's, and docs/operations.md for what they mean)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

BOT = CollectorRegistry(auto_describe=True)

PASS_SECONDS = Histogram("credit_bot_pass_duration_seconds", "Time a collections pass took.",
                         buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=BOT)
PASSES = Counter("credit_bot_passes", "Collections passes, by result (ok, failed).", ("result",), registry=BOT)
ACCOUNTS_REVIEWED = Counter("credit_bot_accounts_reviewed", "Accounts reviewed by collections passes.", registry=BOT)
ACCOUNT_REVIEWS_FAILED = Counter("credit_bot_account_reviews_failed", "Account reviews that failed and were rolled "
                                 "back (the pass went on with the other accounts).", registry=BOT)
PENALTIES_BOOKED = Counter("credit_bot_penalty_days", "Daily penalties booked (one per loan and day).", registry=BOT)
PENALTIES_BOOKED_MINOR = Counter("credit_bot_penalty_minor", "Penalty amounts booked, in fen.", registry=BOT)
REMINDERS = Counter("credit_bot_reminders", "Reminder attempts finished, by channel and outcome.",
                    ("channel", "outcome"), registry=BOT)
CHANNEL_FAILURES = Counter("credit_bot_channel_failures", "Failed sends, by channel (email: the SMTP server; "
                           "voice: the voice gateway) and what failed (the email delivery result, or call_failed).",
                           ("channel", "error"), registry=BOT)
STATEMENTS_ISSUED = Counter("credit_bot_statements_issued", "Monthly statements issued.", registry=BOT)
STATEMENT_EMAILS = Counter("credit_bot_statement_emails", "Statement emails finished, by outcome (SENT, "
                           "TEMPORARY_FAILURE, PERMANENT_FAILURE, SUPPRESSED, lease_lost).", ("outcome",),
                           registry=BOT)
BOT_DB_ERRORS = Counter("credit_db_errors", "Database failures that ended a pass, by kind and exception class.",
                        ("kind", "error"), registry=BOT)


PAYMENT_RESULTS = Counter("credit_bot_payment_results", "Payment results the payments task handled, by source "
                          "(event: the gateway's stream; lookup: a sweep's look-up by key; debit: the answer to an "
                          "auto-debit; merchant: paying or looking up a settled merchant-day) and what applying "
                          "did (completed, already_final, not_final, unknown_order, mismatch, ...).",
                          ("source", "outcome"), registry=BOT)
