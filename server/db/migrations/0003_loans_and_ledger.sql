-- Loans created at capture, with their installment schedules.
CREATE TABLE loans (
    loan_id           uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts (account_id),
    authorization_id  uuid NOT NULL UNIQUE REFERENCES authorizations (authorization_id),
    status            text NOT NULL
                      CHECK (status IN ('ACTIVE', 'PAID_OFF', 'CANCELLED', 'CHARGED_OFF')),
    principal_minor   bigint NOT NULL CHECK (principal_minor > 0),
    term_months       integer NOT NULL,
    method            text NOT NULL CHECK (method IN ('FLAT_FEE', 'DECLINING_BALANCE')),
    monthly_rate_bps  integer NOT NULL,
    apr_bps           integer NOT NULL,
    merchant_id       text NOT NULL,
    order_id          text NOT NULL,
    currency          text NOT NULL,
    start_date        date NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX loans_by_account ON loans (account_id, created_at);

-- Each period of a loan, with what has been paid of each component.
CREATE TABLE installments (
    loan_id                 uuid NOT NULL REFERENCES loans (loan_id),
    sequence                integer NOT NULL CHECK (sequence >= 1),
    account_id              uuid NOT NULL REFERENCES accounts (account_id),
    due_date                date NOT NULL,
    principal_minor         bigint NOT NULL CHECK (principal_minor >= 0),
    fee_minor               bigint NOT NULL CHECK (fee_minor >= 0),
    principal_paid_minor    bigint NOT NULL DEFAULT 0 CHECK (principal_paid_minor >= 0),
    fee_paid_minor          bigint NOT NULL DEFAULT 0 CHECK (fee_paid_minor >= 0),
    penalty_minor           bigint NOT NULL DEFAULT 0 CHECK (penalty_minor >= 0),
    penalty_paid_minor      bigint NOT NULL DEFAULT 0 CHECK (penalty_paid_minor >= 0),
    PRIMARY KEY (loan_id, sequence),
    CHECK (principal_paid_minor <= principal_minor),
    CHECK (fee_paid_minor <= fee_minor),
    CHECK (penalty_paid_minor <= penalty_minor)
);
CREATE INDEX installments_by_due_date ON installments (due_date);

-- The ledger: one journal entry per business event, postings sum to zero per entry
-- (debits positive, credits negative). Checked again by a deferred trigger at commit so
-- that no code path can leave an unbalanced entry behind.
CREATE TABLE journal_entries (
    entry_id      uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (account_id),
    kind          text NOT NULL,
    reference_id  uuid NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX journal_entries_by_account ON journal_entries (account_id, created_at);
CREATE INDEX journal_entries_by_reference ON journal_entries (reference_id);

CREATE TABLE postings (
    entry_id        uuid NOT NULL REFERENCES journal_entries (entry_id),
    line            integer NOT NULL,
    account_id      uuid NOT NULL,
    ledger_account  text NOT NULL,
    amount_minor    bigint NOT NULL CHECK (amount_minor <> 0),
    PRIMARY KEY (entry_id, line)
);
CREATE INDEX postings_by_account ON postings (account_id, ledger_account);

CREATE FUNCTION check_journal_entry_balances() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
BEGIN
    SELECT coalesce(sum(amount_minor), 0) INTO total FROM postings WHERE entry_id = NEW.entry_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'journal entry % does not balance: postings sum to %', NEW.entry_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER postings_balance
    AFTER INSERT OR UPDATE ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION check_journal_entry_balances();
