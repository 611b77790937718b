-- Paying settled merchant-days through the payment gateway (docs/payments.md,
-- "Paying the day").
--
-- 1. Where a merchant is paid: the payee its registration names at the gateway, the
-- merchant id itself unless an operator names another (a merchant whose payee the
-- gateway refused is mended this way, and its failed days asked again).
-- An identifier as the gateway takes one: 1 to 128 printable ASCII characters, no spaces.
ALTER TABLE merchants ADD COLUMN payee_id text CHECK (payee_id ~ '^[!-~]{1,128}$');

-- 2. The payment of a REQUESTED day: the payee it was sent to, when it was last asked
-- about at the gateway (the reconciliation's lease; NULL: never, ask now), how many
-- payments the day has had (an operator asks again after a failure, under a new key),
-- and the keys of the failed ones.
--
-- 3. A day settled before the fee was booked when a day settles (its whole part went in
-- flight) has fee_booked false: the bot books its fee, per account, before any of the
-- merchant's days is paid (server/core/merchant_settlements.py, book_unbooked_fees).
-- Such a day still REQUESTED was never sent and may have been paid by other means: it
-- is held (submitted_at 'infinity', never claimed) until an operator releases it
-- (python -m server.merchants release).
ALTER TABLE merchant_settlements
    ADD COLUMN payee_id text CHECK (payee_id ~ '^[!-~]{1,128}$'),
    ADD COLUMN submitted_at timestamptz,
    ADD COLUMN payment_attempts integer NOT NULL DEFAULT 0 CHECK (payment_attempts >= 0),
    ADD COLUMN failed_payment_order_ids uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN fee_booked boolean NOT NULL DEFAULT true;
UPDATE merchant_settlements SET fee_booked = (fee_minor = 0);
UPDATE merchant_settlements SET payee_id = merchant_id, payment_attempts = 1, submitted_at = 'infinity'
WHERE status <> 'CARRIED';
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
