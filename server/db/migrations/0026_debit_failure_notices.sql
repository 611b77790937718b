-- Notices of a failed auto-debit (docs/payments.md, "Auto-debit"). A notice is a contact
-- attempt like a reminder step: same claims, leases, retries, contact window and caps,
-- and it lists with the account's reminders. It names the DEBIT payment order it tells
-- of; a reminder names none. Its step is AUTO_DEBIT_FAILED_<try>, so the unique
-- (account, due date, step) of migration 0023 already allows one notice per failed try,
-- and the index below says the same of the order itself.
ALTER TABLE contact_attempts ADD COLUMN payment_order_id uuid;
CREATE UNIQUE INDEX contact_attempts_one_per_payment_order ON contact_attempts (account_id, payment_order_id)
    WHERE payment_order_id IS NOT NULL;
