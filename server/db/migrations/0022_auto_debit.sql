-- Auto-debit of what falls due from the bound instrument (docs/payments.md, "Auto-debit").
--
-- 1. The customer's consent: an instrument bound with auto_debit on is debited on each
-- due date. Off for every instrument bound before.
ALTER TABLE payment_methods ADD COLUMN auto_debit boolean NOT NULL DEFAULT false;

-- 2. DEBIT payment orders: one per (account, due date, try). The unique index is what
-- keeps two bot replicas, or a pass run again, from asking for the same try twice.
ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_kind_check;
ALTER TABLE payment_orders ADD CONSTRAINT payment_orders_kind_check CHECK (kind IN ('PAYOUT', 'DEBIT'));
ALTER TABLE payment_orders ADD COLUMN due_date date;
ALTER TABLE payment_orders ADD COLUMN attempt smallint CHECK (attempt >= 1);
ALTER TABLE payment_orders ADD CONSTRAINT payment_orders_debit_keyed
    CHECK ((kind = 'DEBIT') = (due_date IS NOT NULL AND attempt IS NOT NULL));
CREATE UNIQUE INDEX payment_orders_one_debit_per_try ON payment_orders (account_id, due_date, attempt)
    WHERE kind = 'DEBIT';

-- Accounts that may have something to debit: their active instrument has auto-debit on.
CREATE INDEX payment_methods_auto_debit ON payment_methods (account_id) WHERE status = 'ACTIVE' AND auto_debit;
