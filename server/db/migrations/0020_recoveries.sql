-- Recoveries after charge-off (docs/repayment.md, "Recoveries"): what each charged-off
-- loan's customer still owes, as it was written off, and what has been recovered of it;
-- and one row per payment and loan recovered, with the insurer's part.

-- Written off: the unpaid principal and penalties the charge-off wrote off against the
-- reserve, and the unpaid fees of periods due by the charge-off day (fees of later
-- periods are waived, as on an early payoff). The claim is the insured share of the
-- principal claimed back into the reserve. reserve_loss_minor is what the reserve itself
-- carried: the loss, less the claim, less what partners bore net of their part of the
-- claim (the RISK_RESERVE postings of the charge-off). All zero on a loan not charged off.
ALTER TABLE loans
    ADD COLUMN written_off_principal_minor bigint NOT NULL DEFAULT 0 CHECK (written_off_principal_minor >= 0),
    ADD COLUMN written_off_fee_minor bigint NOT NULL DEFAULT 0 CHECK (written_off_fee_minor >= 0),
    ADD COLUMN written_off_penalty_minor bigint NOT NULL DEFAULT 0 CHECK (written_off_penalty_minor >= 0),
    ADD COLUMN insurance_claim_minor bigint NOT NULL DEFAULT 0 CHECK (insurance_claim_minor >= 0),
    ADD COLUMN reserve_loss_minor bigint NOT NULL DEFAULT 0,
    ADD COLUMN recovered_principal_minor bigint NOT NULL DEFAULT 0 CHECK (recovered_principal_minor >= 0),
    ADD COLUMN recovered_fee_minor bigint NOT NULL DEFAULT 0 CHECK (recovered_fee_minor >= 0),
    ADD COLUMN recovered_penalty_minor bigint NOT NULL DEFAULT 0 CHECK (recovered_penalty_minor >= 0),
    ADD CONSTRAINT loans_recovered_within_written_off CHECK (
        recovered_principal_minor <= written_off_principal_minor
        AND recovered_fee_minor <= written_off_fee_minor
        AND recovered_penalty_minor <= written_off_penalty_minor);

-- One payment's recovery on one charged-off loan, by component; insurer_minor is the
-- part of the principal that goes to the insurer, reserve_minor what went back to the
-- reserve net of the insurer's and the partners' parts (theirs are settlement items).
CREATE TABLE recoveries (
    repayment_id     uuid NOT NULL,
    loan_id          uuid NOT NULL,
    account_id       uuid NOT NULL,
    principal_minor  bigint NOT NULL CHECK (principal_minor >= 0),
    fee_minor        bigint NOT NULL CHECK (fee_minor >= 0),
    penalty_minor    bigint NOT NULL CHECK (penalty_minor >= 0),
    insurer_minor    bigint NOT NULL CHECK (insurer_minor >= 0 AND insurer_minor <= principal_minor),
    reserve_minor    bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (repayment_id, loan_id, account_id),
    CHECK (principal_minor + fee_minor + penalty_minor > 0),
    CONSTRAINT recoveries_repayment_fkey
        FOREIGN KEY (repayment_id, account_id) REFERENCES repayments (repayment_id, account_id),
    CONSTRAINT recoveries_loan_fkey FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id)
);
CREATE INDEX recoveries_by_loan ON recoveries (loan_id, created_at);

-- Loans charged off before this migration: what was written off, from their charge-off
-- entries (the loan's LOAN_CHARGED_OFF entry and, when co-funded, the partner entry of
-- the same event, the only PARTNER_SHARES_MOVED entries naming a loan that move the
-- reserve), and the fees due by the day of the charge-off (the loan's last update).
UPDATE loans AS l
SET written_off_principal_minor = w.principal_minor,
    written_off_penalty_minor = w.penalty_minor,
    insurance_claim_minor = w.claim_minor,
    reserve_loss_minor = w.reserve_loss_minor,
    written_off_fee_minor = coalesce((
        SELECT sum(i.fee_minor - i.fee_paid_minor) FROM installments i JOIN accounts a USING (account_id)
        WHERE i.loan_id = l.loan_id AND i.account_id = l.account_id
          AND i.due_date <= (l.updated_at AT TIME ZONE a.time_zone)::date), 0)
FROM (
    SELECT e.account_id, e.reference_id AS loan_id,
           coalesce(-sum(p.amount_minor) FILTER (WHERE e.kind = 'LOAN_CHARGED_OFF'
                                                 AND p.ledger_account = 'PRINCIPAL_RECEIVABLE'), 0) AS principal_minor,
           coalesce(-sum(p.amount_minor) FILTER (WHERE e.kind = 'LOAN_CHARGED_OFF'
                                                 AND p.ledger_account = 'PENALTY_RECEIVABLE'), 0) AS penalty_minor,
           coalesce(sum(p.amount_minor) FILTER (WHERE e.kind = 'LOAN_CHARGED_OFF'
                                                AND p.ledger_account = 'INSURANCE_CLAIM_RECEIVABLE'), 0) AS claim_minor,
           coalesce(sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'RISK_RESERVE'), 0) AS reserve_loss_minor
    FROM journal_entries e
    JOIN postings p ON p.entry_id = e.entry_id AND p.account_id = e.account_id
    WHERE e.kind IN ('LOAN_CHARGED_OFF', 'PARTNER_SHARES_MOVED')
    GROUP BY e.account_id, e.reference_id
) AS w
WHERE l.status = 'CHARGED_OFF' AND l.loan_id = w.loan_id AND l.account_id = w.account_id;
