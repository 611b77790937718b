-- Paying settled merchant-days through the payment gateway (docs/payments.md,
-- "Paying the day").
--
-- 1. Where a merchant is paid: the payee its registration names at the gateway, the
-- merchant id itself unless an operator names another (a merchant whose payee the
-- gateway refused is mended this way, and its failed days asked again).
ALTER TABLE merchants ADD COLUMN payee_id text CHECK (length(payee_id) BETWEEN 1 AND 128);

-- 2. The payment of a REQUESTED day: the payee it was sent to, when it was last asked
-- about at the gateway (the reconciliation's lease; NULL: never, ask now), how many
-- payments the day has had (an operator asks again after a failure, under a new key),
-- and the keys of the failed ones.
ALTER TABLE merchant_settlements
    ADD COLUMN payee_id text CHECK (length(payee_id) BETWEEN 1 AND 128),
    ADD COLUMN submitted_at timestamptz,
    ADD COLUMN payment_attempts integer NOT NULL DEFAULT 0 CHECK (payment_attempts >= 0),
    ADD COLUMN failed_payment_order_ids uuid[] NOT NULL DEFAULT '{}';
UPDATE merchant_settlements SET payee_id = merchant_id, payment_attempts = 1 WHERE status <> 'CARRIED';
ALTER TABLE merchant_settlements
    ADD CONSTRAINT merchant_settlements_payee CHECK ((status = 'CARRIED') = (payee_id IS NULL)),
    ADD CONSTRAINT merchant_settlements_attempts CHECK ((status = 'CARRIED') = (payment_attempts = 0)),
    ADD CONSTRAINT merchant_settlements_completed CHECK ((status IN ('PAID', 'FAILED')) = (completed_at IS NOT NULL));

-- The reconciliation's look for days still waiting on the gateway.
CREATE INDEX merchant_settlements_requested ON merchant_settlements (submitted_at NULLS FIRST)
    WHERE status = 'REQUESTED';
-- A late or repeated result of a payment that FAILED before the day was asked again is
-- found by its old key.
CREATE INDEX merchant_settlements_by_failed_payment ON merchant_settlements USING gin (failed_payment_order_ids);
