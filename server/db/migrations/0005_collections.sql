-- Collections: cases, penalties, promises, contact preferences, the reminder strategy
-- and every contact attempt.

-- One case per account that has ever been late; its bucket as of the last pass.
CREATE TABLE collection_cases (
    account_id         uuid PRIMARY KEY REFERENCES accounts (account_id),
    bucket             text NOT NULL
                       CHECK (bucket IN ('CURRENT', 'M1', 'M2', 'M3', 'M4_PLUS', 'CHARGED_OFF')),
    days_past_due      integer NOT NULL CHECK (days_past_due >= 0),
    overdue_minor      bigint NOT NULL DEFAULT 0 CHECK (overdue_minor >= 0),
    escalated_at       timestamptz,
    escalation_reason  text,
    needs_payment_check boolean NOT NULL DEFAULT false,
    opened_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX collection_cases_by_bucket ON collection_cases (bucket, account_id);

-- Bucket changes and other case events, for the record.
CREATE TABLE case_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (account_id),
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX case_events_by_account ON case_events (account_id, event_id);

-- One row per installment per calendar day of penalty: the primary key makes a day
-- impossible to book twice, whatever the number of passes or bot replicas.
CREATE TABLE penalty_accruals (
    loan_id       uuid NOT NULL REFERENCES loans (loan_id),
    sequence      integer NOT NULL,
    accrual_date  date NOT NULL,
    account_id    uuid NOT NULL,
    base_minor    bigint NOT NULL CHECK (base_minor > 0),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (loan_id, sequence, accrual_date)
);

CREATE TABLE penalty_waivers (
    waiver_id     uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (account_id),
    loan_id       uuid NOT NULL REFERENCES loans (loan_id),
    sequence      integer NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL
);

-- Promises to pay: one ACTIVE per account, at most 7 days ahead (checked by the code).
CREATE TABLE promises (
    promise_id     uuid PRIMARY KEY,
    account_id     uuid NOT NULL REFERENCES accounts (account_id),
    promised_date  date NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    status         text NOT NULL CHECK (status IN ('ACTIVE', 'KEPT', 'BROKEN', 'CANCELLED')),
    source         text NOT NULL,
    paid_before_minor bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    resolved_at    timestamptz
);
CREATE UNIQUE INDEX promises_one_active_per_account ON promises (account_id) WHERE status = 'ACTIVE';

CREATE TABLE contact_preferences (
    account_id     uuid PRIMARY KEY REFERENCES accounts (account_id),
    email_opt_out  boolean NOT NULL DEFAULT false,
    voice_opt_out  boolean NOT NULL DEFAULT false,
    -- Set when a call reached someone who is not the customer: that number is never called again.
    phone_blocked  boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL
);

-- The reminder strategy, as data: operators change it with SQL, no code change.
-- offset_days is relative to the installment's due date (negative: before it).
CREATE TABLE reminder_steps (
    step_code    text PRIMARY KEY,
    offset_days  integer NOT NULL CHECK (offset_days BETWEEN -30 AND 180),
    channel      text NOT NULL CHECK (channel IN ('EMAIL', 'VOICE')),
    template     text NOT NULL,
    escalates    boolean NOT NULL DEFAULT false,
    enabled      boolean NOT NULL DEFAULT true
);
INSERT INTO reminder_steps (step_code, offset_days, channel, template, escalates) VALUES
    ('D-3_EMAIL', -3, 'EMAIL', 'upcoming', false),
    ('D-1_EMAIL', -1, 'EMAIL', 'upcoming', false),
    ('D0_VOICE', 0, 'VOICE', 'due_today', false),
    ('D+1_EMAIL', 1, 'EMAIL', 'overdue', false),
    ('D+3_VOICE', 3, 'VOICE', 'overdue', false),
    ('D+7_VOICE', 7, 'VOICE', 'overdue', false),
    ('D+7_EMAIL', 7, 'EMAIL', 'overdue', false),
    ('D+15_VOICE', 15, 'VOICE', 'overdue', false),
    ('D+30_EMAIL', 30, 'EMAIL', 'final', true);

-- Every reminder step taken for an installment: at most one row per (installment, step).
-- PENDING: to send; DEFERRED: due but waiting (contact window, frequency cap); SENDING:
-- claimed by a bot until lease_until; SENT / FAILED: outcome; SUPPRESSED: decided not
-- to send (reason says why); SKIPPED: superseded by a later step after downtime.
CREATE TABLE contact_attempts (
    attempt_id      uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (account_id),
    loan_id         uuid NOT NULL REFERENCES loans (loan_id),
    sequence        integer NOT NULL,
    step_code       text NOT NULL,
    channel         text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('PENDING', 'DEFERRED', 'SENDING', 'SENT', 'FAILED', 'SUPPRESSED', 'SKIPPED')),
    reason          text,
    tries           integer NOT NULL DEFAULT 0,
    next_try_at     timestamptz,
    lease_until     timestamptz,
    message_id      text,
    outcome         text,
    detail          jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (loan_id, sequence, step_code)
);
CREATE INDEX contact_attempts_by_account ON contact_attempts (account_id, created_at);
CREATE INDEX contact_attempts_to_send ON contact_attempts (next_try_at)
    WHERE status IN ('PENDING', 'SENDING');
