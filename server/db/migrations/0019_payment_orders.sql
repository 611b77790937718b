-- Money out (and, later, in) through the payment gateway (docs/payments.md).
--
-- 1. Bound instruments: the processor's token of a customer's card or wallet, encrypted
-- like contact data (server/contact_crypto.py, column name as associated data) and
-- re-encrypted by python -m server.rotate_contact_keys. An account has at most one
-- ACTIVE instrument; a new binding REPLACES it. Rows are never deleted: a payment order
-- keeps naming the instrument it was sent to, so that a retry sends the same request.
CREATE TABLE payment_methods (
    payment_method_id uuid NOT NULL,
    account_id        uuid NOT NULL REFERENCES accounts (account_id),
    kind              text NOT NULL CHECK (kind IN ('CARD', 'WALLET')),
    status            text NOT NULL CHECK (status IN ('ACTIVE', 'REPLACED')),
    token             text NOT NULL,
    token_last4       text NOT NULL,
    display_hint      text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    replaced_at       timestamptz,
    PRIMARY KEY (payment_method_id, account_id),
    CHECK ((status = 'REPLACED') = (replaced_at IS NOT NULL))
);
CREATE UNIQUE INDEX payment_methods_one_active_per_account ON payment_methods (account_id) WHERE status = 'ACTIVE';

-- 2. Payment orders: our side of every payment through the gateway. The order id is the
-- payment's idempotency key at the gateway. REQUESTED moves exactly once, by a
-- conditional update, to SUCCEEDED or FAILED, in the transaction that books it.
-- PAYOUT is the only kind so far; DEBIT and MERCHANT join with their own bookings.
CREATE TABLE payment_orders (
    order_id           uuid NOT NULL,
    account_id         uuid NOT NULL REFERENCES accounts (account_id),
    kind               text NOT NULL CHECK (kind IN ('PAYOUT')),
    status             text NOT NULL CHECK (status IN ('REQUESTED', 'SUCCEEDED', 'FAILED')),
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           text NOT NULL DEFAULT 'CNY',
    payment_method_id  uuid NOT NULL,
    gateway_payment_id text,
    failure_reason     text CHECK (failure_reason IN ('INSUFFICIENT_FUNDS', 'INSTRUMENT_INVALID',
                                                      'MERCHANT_INVALID', 'DECLINED')),
    created_at         timestamptz NOT NULL,
    -- When the gateway was last asked for it (by the request, or by a reconciliation).
    submitted_at       timestamptz,
    completed_at       timestamptz,
    PRIMARY KEY (order_id, account_id),
    FOREIGN KEY (payment_method_id, account_id) REFERENCES payment_methods (payment_method_id, account_id),
    CHECK ((status = 'REQUESTED') = (completed_at IS NULL)),
    CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);
CREATE INDEX payment_orders_by_account ON payment_orders (account_id, created_at);
-- What a reconciliation sweeps: orders still waiting for their result, oldest first.
CREATE INDEX payment_orders_requested ON payment_orders (created_at) WHERE status = 'REQUESTED';

-- 3. How far the bot has read the gateway's stream of results (WatchPayments): the
-- sequence of the last event handled, moved in the transaction that applies it.
CREATE TABLE payment_event_cursors (
    consumer      text PRIMARY KEY,
    last_sequence bigint NOT NULL CHECK (last_sequence >= 0),
    updated_at    timestamptz NOT NULL
);
