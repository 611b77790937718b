-- Contact attempts speak enums end to end: the values of channel, reason and outcome
-- are those of server/domain/reminders.py, checked here as status already was.
-- planned_for is the day a step is for (the installment's due date plus the step's
-- offset), so an account's attempts list in step order. Cases keep when their lateness
-- figures were computed and the penalty owed then, so a list of cases shows one
-- consistent snapshot.

ALTER TABLE contact_attempts
    ADD CONSTRAINT contact_attempts_channel_known CHECK (channel IN ('EMAIL', 'VOICE')),
    ADD CONSTRAINT contact_attempts_reason_known CHECK (reason IN (
        'PAID', 'PROMISE_ACTIVE', 'OPTED_OUT', 'WRONG_NUMBER', 'NO_CONTACT_ADDRESS',
        'CHANNEL_UNAVAILABLE', 'OUTSIDE_CONTACT_WINDOW', 'FREQUENCY_CAP', 'SUPERSEDED',
        'SMTP_TEMPORARY', 'SMTP_TEMPORARY_EXHAUSTED', 'SMTP_PERMANENT', 'CALL_FAILED')),
    ADD CONSTRAINT contact_attempts_outcome_known CHECK (outcome IN (
        'DELIVERED', 'REJECTED', 'UNDELIVERED', 'PROMISE_TO_PAY', 'CLAIMS_PAID', 'DISPUTE',
        'REQUEST_AGENT', 'REFUSED', 'WRONG_PERSON', 'NO_ANSWER', 'ANSWERING_MACHINE'));

ALTER TABLE contact_attempts ADD COLUMN planned_for date;
UPDATE contact_attempts a
SET planned_for = i.due_date + coalesce((SELECT s.offset_days FROM reminder_steps s WHERE s.step_code = a.step_code), 0)
FROM installments i
WHERE i.loan_id = a.loan_id AND i.sequence = a.sequence AND i.account_id = a.account_id;
UPDATE contact_attempts SET planned_for = created_at::date WHERE planned_for IS NULL;
ALTER TABLE contact_attempts ALTER COLUMN planned_for SET NOT NULL;

DROP INDEX contact_attempts_by_account;
CREATE INDEX contact_attempts_in_step_order ON contact_attempts (account_id, planned_for, step_code, attempt_id);

-- Constraints are added apart from their columns: a distributed table (deploy/citus.sql)
-- takes no ADD COLUMN with a constraint.
ALTER TABLE collection_cases
    ADD COLUMN penalty_owed_minor bigint NOT NULL DEFAULT 0,
    ADD COLUMN reviewed_at timestamptz;
ALTER TABLE collection_cases
    ADD CONSTRAINT collection_cases_penalty_owed_nonnegative CHECK (penalty_owed_minor >= 0);
-- The snapshot of existing cases: the penalty owed on their active loans now, and the
-- last time they were written.
UPDATE collection_cases c
SET penalty_owed_minor = coalesce((
        SELECT sum(i.penalty_minor - i.penalty_paid_minor)
        FROM installments i JOIN loans l ON l.loan_id = i.loan_id AND l.account_id = i.account_id
        WHERE i.account_id = c.account_id AND l.status = 'ACTIVE'), 0),
    reviewed_at = c.updated_at;
ALTER TABLE collection_cases ALTER COLUMN reviewed_at SET NOT NULL;
