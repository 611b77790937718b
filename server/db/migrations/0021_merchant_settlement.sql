-- Merchant settlement (docs/payments.md, "Merchant settlement").
--
-- 1. The merchant registry: a merchant's category, which sets its settlement fee
-- (MERCHANT_FEE_BPS in server/domain/pricing.py). A merchant that is not here is
-- GENERAL. Small and shared by every account: a reference table on Citus.
CREATE TABLE merchants (
    merchant_id text PRIMARY KEY CHECK (length(merchant_id) BETWEEN 1 AND 128),
    category    text NOT NULL CHECK (category IN ('GENERAL', 'EDUCATION', 'TRAVEL', 'ELECTRONICS')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- 2. A merchant-day reads its captures (loans made that day) and its refunds across
-- every account: by merchant and time, not by account.
CREATE INDEX loans_by_merchant ON loans (merchant_id, created_at);
CREATE INDEX refunds_by_time ON refunds (created_at);
