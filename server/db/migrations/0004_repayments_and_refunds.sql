-- Fees waived on early repayment, kept for the record; fee_minor is what is owed now.
ALTER TABLE installments ADD COLUMN fee_waived_minor bigint NOT NULL DEFAULT 0 CHECK (fee_waived_minor >= 0);

-- Cumulative refunds per loan, never above the principal captured.
ALTER TABLE loans ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0);
ALTER TABLE loans ADD CONSTRAINT loans_refunds_within_principal CHECK (refunded_minor <= principal_minor);

-- Every payment and every use of a credit balance, with where each fen went.
CREATE TABLE repayments (
    repayment_id     uuid PRIMARY KEY,
    account_id       uuid NOT NULL REFERENCES accounts (account_id),
    loan_id          uuid REFERENCES loans (loan_id),
    channel          text NOT NULL,
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    applied_minor    bigint NOT NULL CHECK (applied_minor >= 0),
    unapplied_minor  bigint NOT NULL CHECK (unapplied_minor >= 0),
    waived_fee_minor bigint NOT NULL DEFAULT 0 CHECK (waived_fee_minor >= 0),
    created_at       timestamptz NOT NULL,
    CHECK (applied_minor + unapplied_minor = amount_minor)
);
CREATE INDEX repayments_by_account ON repayments (account_id, created_at);

CREATE TABLE repayment_allocations (
    repayment_id  uuid NOT NULL REFERENCES repayments (repayment_id),
    line          integer NOT NULL,
    account_id    uuid NOT NULL,
    loan_id       uuid NOT NULL REFERENCES loans (loan_id),
    sequence      integer NOT NULL,
    component     text NOT NULL CHECK (component IN ('PENALTY', 'FEE', 'PRINCIPAL')),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (repayment_id, line)
);
CREATE INDEX repayment_allocations_by_loan ON repayment_allocations (loan_id, sequence);

CREATE TABLE refunds (
    refund_id         uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts (account_id),
    loan_id           uuid NOT NULL REFERENCES loans (loan_id),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    returned_minor    bigint NOT NULL CHECK (returned_minor >= 0),
    reason            text NOT NULL,
    created_at        timestamptz NOT NULL
);
CREATE INDEX refunds_by_loan ON refunds (loan_id, created_at);

-- Keyset paging of an account's loans.
CREATE INDEX loans_by_account_page ON loans (account_id, created_at DESC, loan_id DESC);
