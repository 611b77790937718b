-- Credit lines: one account per customer, its limits and the running totals that the
-- limit arithmetic needs. Totals are kept on the row so that an authorization reads
-- and updates one locked row; the invariant checker proves them against the details.
CREATE TABLE accounts (
    account_id                   uuid PRIMARY KEY,
    customer_id                  text NOT NULL UNIQUE,
    status                       text NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    risk_grade                   text NOT NULL CHECK (risk_grade IN ('A', 'B', 'C', 'D', 'E')),
    credit_limit_minor           bigint NOT NULL DEFAULT 0 CHECK (credit_limit_minor >= 0),
    temporary_limit_minor        bigint NOT NULL DEFAULT 0 CHECK (temporary_limit_minor >= 0),
    temporary_limit_expires_at   timestamptz,
    held_minor                   bigint NOT NULL DEFAULT 0 CHECK (held_minor >= 0),
    outstanding_principal_minor  bigint NOT NULL DEFAULT 0 CHECK (outstanding_principal_minor >= 0),
    credit_balance_minor         bigint NOT NULL DEFAULT 0 CHECK (credit_balance_minor >= 0),
    currency                     text NOT NULL DEFAULT 'CNY',
    contact_name                 text NOT NULL,
    contact_email                text NOT NULL,
    contact_phone                text NOT NULL,
    locale                       text NOT NULL,
    time_zone                    text NOT NULL,
    created_at                   timestamptz NOT NULL,
    updated_at                   timestamptz NOT NULL,
    CHECK ((temporary_limit_minor = 0) OR (temporary_limit_expires_at IS NOT NULL))
);

-- Every change to a credit line, with who asked and why: limit changes, temporary
-- raises, freezes.
CREATE TABLE account_events (
    event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts (account_id),
    kind         text NOT NULL,
    reason       text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL
);
CREATE INDEX account_events_by_account ON account_events (account_id, event_id);

-- The first reply to each mutating request, by method and key. Inserted first in the
-- request's transaction: a concurrent duplicate waits on the unique key until the first
-- commits (then reads its reply) or rolls back (then runs itself).
CREATE TABLE idempotency_records (
    method           text NOT NULL,
    idempotency_key  text NOT NULL,
    request_sha256   bytea NOT NULL,
    response         bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, idempotency_key)
);
