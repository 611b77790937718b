-- Reminders per bill. Every installment of an account due on one day is on one bill, and
-- a reminder step is taken once per bill: one contact attempt per (account, due date,
-- step), which names no loan. Attempts made before were per installment: they keep their
-- loan and sequence, and are given the due date of their installment, so a review counts
-- them as taken for that day's bill and no step is taken twice.
ALTER TABLE contact_attempts ADD COLUMN due_date date;
UPDATE contact_attempts a SET due_date = i.due_date
FROM installments i
WHERE i.loan_id = a.loan_id AND i.sequence = a.sequence AND i.account_id = a.account_id;
-- An installment never goes away, so every attempt finds its own; this only guards the
-- NOT NULL below against a row that did not.
UPDATE contact_attempts a
SET due_date = a.planned_for - coalesce((SELECT s.offset_days FROM reminder_steps s WHERE s.step_code = a.step_code), 0)
WHERE a.due_date IS NULL;
ALTER TABLE contact_attempts ALTER COLUMN due_date SET NOT NULL;
ALTER TABLE contact_attempts ALTER COLUMN loan_id DROP NOT NULL, ALTER COLUMN sequence DROP NOT NULL;

-- Constraints are added apart from their columns: a distributed table (deploy/citus.sql)
-- takes no ADD COLUMN with a constraint.
ALTER TABLE contact_attempts
    ADD CONSTRAINT contact_attempts_per_bill_or_installment CHECK ((loan_id IS NULL) = (sequence IS NULL));
CREATE UNIQUE INDEX contact_attempts_one_per_bill_step ON contact_attempts (account_id, due_date, step_code)
    WHERE loan_id IS NULL;
