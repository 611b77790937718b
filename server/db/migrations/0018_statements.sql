-- Monthly statements (docs/statements.md). A statement closes one billing period of an
-- account: its numbers, one line per ledger movement it shows, and the installments
-- its bill asks for. Issued once per (account, statement date), by whichever bot
-- replica holds the account's row lock; never changed after: a correction is a new
-- ledger entry, shown on the next statement. How its email went lives apart, in
-- statement_deliveries, which the bot updates.
CREATE TABLE statements (
    account_id              uuid NOT NULL REFERENCES accounts (account_id),
    statement_date          date NOT NULL,
    -- The local dates [period_start, statement_date) it closes.
    period_start            date NOT NULL,
    -- Local midnight at the start of statement_date, in the account's zone.
    cutoff_at               timestamptz NOT NULL,
    payment_due_date        date NOT NULL,
    time_zone               text NOT NULL,
    opening_minor           bigint NOT NULL,
    purchases_minor         bigint NOT NULL CHECK (purchases_minor >= 0),
    fees_minor              bigint NOT NULL CHECK (fees_minor >= 0),
    penalties_minor         bigint NOT NULL CHECK (penalties_minor >= 0),
    payments_minor          bigint NOT NULL CHECK (payments_minor >= 0),
    refunds_minor           bigint NOT NULL CHECK (refunds_minor >= 0),
    waivers_minor           bigint NOT NULL CHECK (waivers_minor >= 0),
    written_off_minor       bigint NOT NULL CHECK (written_off_minor >= 0),
    adjustments_minor       bigint NOT NULL,
    closing_minor           bigint NOT NULL,
    principal_owed_minor    bigint NOT NULL,
    fee_owed_minor          bigint NOT NULL,
    penalty_owed_minor      bigint NOT NULL,
    credit_balance_minor    bigint NOT NULL CHECK (credit_balance_minor >= 0),
    credit_limit_minor      bigint NOT NULL,
    available_minor         bigint NOT NULL,
    amount_due_minor        bigint NOT NULL CHECK (amount_due_minor >= 0),
    issued_at               timestamptz NOT NULL,
    PRIMARY KEY (account_id, statement_date),
    CHECK (period_start < statement_date),
    CHECK (closing_minor = opening_minor + purchases_minor + fees_minor + penalties_minor + adjustments_minor
                           - payments_minor - refunds_minor - waivers_minor - written_off_minor),
    CHECK (closing_minor = principal_owed_minor + fee_owed_minor + penalty_owed_minor - credit_balance_minor)
);

-- One line per movement: a journal entry's effect on what the customer owes, by kind
-- (an entry may give two lines: a repayment and the fees it waived). amount_minor is
-- signed: positive raises the balance. A (entry, kind) is on one statement only: the
-- first issued after it was booked.
CREATE TABLE statement_lines (
    account_id      uuid NOT NULL,
    statement_date  date NOT NULL,
    line            integer NOT NULL CHECK (line >= 1),
    kind            text NOT NULL CHECK (kind IN ('PURCHASE', 'FEE', 'PENALTY', 'PAYMENT', 'REFUND', 'FEE_WAIVED',
                                                  'PENALTY_WAIVED', 'WRITTEN_OFF', 'ADJUSTMENT')),
    entry_id        uuid NOT NULL,
    entry_kind      text NOT NULL,
    reference_id    uuid NOT NULL,
    booked_at       timestamptz NOT NULL,
    amount_minor    bigint NOT NULL CHECK (amount_minor <> 0),
    loan_id         uuid,
    merchant_id     text,
    order_id        text,
    term_months     integer,
    method          text,
    apr_bps         integer,
    PRIMARY KEY (account_id, statement_date, line),
    UNIQUE (account_id, entry_id, kind),
    FOREIGN KEY (account_id, statement_date) REFERENCES statements (account_id, statement_date)
);

-- The bill: the account's unpaid installments falling due by the statement's payment
-- due date, as they stood when it was issued.
CREATE TABLE statement_installments (
    account_id      uuid NOT NULL,
    statement_date  date NOT NULL,
    loan_id         uuid NOT NULL,
    sequence        integer NOT NULL,
    order_id        text NOT NULL,
    due_date        date NOT NULL,
    principal_minor bigint NOT NULL CHECK (principal_minor >= 0),
    fee_minor       bigint NOT NULL CHECK (fee_minor >= 0),
    penalty_minor   bigint NOT NULL CHECK (penalty_minor >= 0),
    owed_minor      bigint NOT NULL CHECK (owed_minor > 0),
    PRIMARY KEY (account_id, statement_date, loan_id, sequence),
    FOREIGN KEY (account_id, statement_date) REFERENCES statements (account_id, statement_date),
    CHECK (owed_minor = principal_minor + fee_minor + penalty_minor)
);

-- An issued statement is a record sent to the customer: what it says never changes.
CREATE FUNCTION refuse_statement_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'statement of % dated % is issued and cannot change (%)',
        OLD.account_id, OLD.statement_date, TG_OP USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER statements_immutable BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();
CREATE TRIGGER statement_lines_immutable BEFORE UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();
CREATE TRIGGER statement_installments_immutable BEFORE UPDATE OR DELETE ON statement_installments
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();

-- The statement's email: claimed by a bot under a lease (as contact attempts are), sent
-- once with a stable Message-ID, retried on 4xx with backoff.
CREATE TABLE statement_deliveries (
    account_id      uuid NOT NULL,
    statement_date  date NOT NULL,
    status          text NOT NULL CHECK (status IN ('PENDING', 'SENDING', 'SENT', 'FAILED', 'SUPPRESSED')),
    reason          text CHECK (reason IN ('NO_CONTACT_ADDRESS', 'SMTP_TEMPORARY', 'SMTP_TEMPORARY_EXHAUSTED',
                                           'SMTP_PERMANENT')),
    tries           integer NOT NULL DEFAULT 0,
    next_try_at     timestamptz,
    lease_until     timestamptz,
    lease_owner     uuid,
    message_id      text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (account_id, statement_date),
    FOREIGN KEY (account_id, statement_date) REFERENCES statements (account_id, statement_date)
);
CREATE INDEX statement_deliveries_to_send ON statement_deliveries (created_at)
    WHERE status IN ('PENDING', 'SENDING');
