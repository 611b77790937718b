-- One bill a month. Every account has a statement day (1 to 28, so that every month
-- has one) and a number of days after each statement date on which its bill falls due;
-- loans captured from now on fall due on those days (server/domain/billing.py). An
-- account opened before takes the day it opened, in its own zone, capped at 28; its
-- loans keep the dates they were given.
ALTER TABLE accounts
    ADD COLUMN statement_day smallint,
    ADD COLUMN payment_due_days smallint NOT NULL DEFAULT 20
        CHECK (payment_due_days BETWEEN 1 AND 27);

UPDATE accounts
SET statement_day = least(extract(day FROM created_at AT TIME ZONE time_zone)::int, 28);

ALTER TABLE accounts
    ALTER COLUMN statement_day SET NOT NULL,
    ADD CONSTRAINT accounts_statement_day_check CHECK (statement_day BETWEEN 1 AND 28);
