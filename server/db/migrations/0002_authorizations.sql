-- Authorizations and their holds. A hold is PENDING, then exactly one of CAPTURED,
-- VOIDED or EXPIRED; a DECLINED authorization never held anything and is kept for audit.
CREATE TABLE authorizations (
    authorization_id  uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts (account_id),
    merchant_id       text NOT NULL,
    order_id          text NOT NULL,
    status            text NOT NULL
                      CHECK (status IN ('PENDING', 'CAPTURED', 'VOIDED', 'EXPIRED', 'DECLINED')),
    decline_reason    text,
    decline_message   text,
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    captured_minor    bigint NOT NULL DEFAULT 0 CHECK (captured_minor >= 0),
    released_minor    bigint NOT NULL DEFAULT 0 CHECK (released_minor >= 0),
    term_months       integer NOT NULL,
    method            text NOT NULL CHECK (method IN ('FLAT_FEE', 'DECLINING_BALANCE')),
    -- The price locked at approval.
    monthly_rate_bps  integer,
    risk_decision     text NOT NULL,
    risk_score        integer NOT NULL DEFAULT 0,
    risk_reasons      text[] NOT NULL DEFAULT '{}',
    risk_context      jsonb NOT NULL DEFAULT '{}',
    loan_id           uuid,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK (captured_minor + released_minor <= amount_minor),
    CHECK ((status = 'DECLINED') = (decline_reason IS NOT NULL)),
    CHECK ((status = 'DECLINED') OR (monthly_rate_bps IS NOT NULL))
);

-- One live authorization per merchant order: a second Authorize for an order that is
-- held or captured is refused; a declined, voided or expired order may be tried again.
CREATE UNIQUE INDEX authorizations_one_live_per_order
    ON authorizations (merchant_id, order_id) WHERE status IN ('PENDING', 'CAPTURED');
CREATE INDEX authorizations_pending_by_expiry
    ON authorizations (expires_at) WHERE status = 'PENDING';
CREATE INDEX authorizations_by_account ON authorizations (account_id, created_at);
