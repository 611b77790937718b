-- Every table that a request writes becomes shardable by account_id (deploy/citus.sql
-- distributes them; docs/scaling.md says why). On Citus a table distributed by
-- account_id may only have primary keys and unique constraints that include account_id,
-- and a foreign key between two such tables must include it on both sides: then every
-- statement that names its account reaches one shard. Ids stay random UUIDs, unique by
-- construction; the keys below check them within their account.

-- 1. Idempotency records live in the bucket of the account their request acts on. A
-- request that names no account finds it in its read (Capture and Void by the
-- authorization, Refund and WaivePenalty by the loan); OpenAccount uses the id of the
-- account it will create, derived from the customer (server/domain/accounts.py). The
-- existing records get the account named in their stored reply, so a retry that spans
-- this migration still finds its first reply; a record whose reply names none (there
-- should be none) goes to the nil UUID's bucket.
ALTER TABLE idempotency_records ADD COLUMN account_id uuid;

-- The bytes of the first length-delimited field `wanted` of a serialized protobuf
-- message (a string or an embedded message); NULL when absent or when the bytes are not
-- a well-formed message.
CREATE FUNCTION pg_temp.protobuf_field(message bytea, wanted integer) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    at_byte integer := 0;
    size integer := length(message);
    tag bigint;
    field_size bigint;
    shift integer;
    b integer;
BEGIN
    IF message IS NULL THEN
        RETURN NULL;
    END IF;
    WHILE at_byte < size LOOP
        tag := 0;
        shift := 0;
        LOOP
            IF at_byte >= size OR shift > 56 THEN
                RETURN NULL;
            END IF;
            b := get_byte(message, at_byte);
            at_byte := at_byte + 1;
            tag := tag | ((b & 127)::bigint << shift);
            shift := shift + 7;
            EXIT WHEN b < 128;
        END LOOP;
        CASE tag & 7
            WHEN 0 THEN
                LOOP
                    IF at_byte >= size THEN
                        RETURN NULL;
                    END IF;
                    b := get_byte(message, at_byte);
                    at_byte := at_byte + 1;
                    EXIT WHEN b < 128;
                END LOOP;
            WHEN 1 THEN
                at_byte := at_byte + 8;
            WHEN 5 THEN
                at_byte := at_byte + 4;
            WHEN 2 THEN
                field_size := 0;
                shift := 0;
                LOOP
                    IF at_byte >= size OR shift > 56 THEN
                        RETURN NULL;
                    END IF;
                    b := get_byte(message, at_byte);
                    at_byte := at_byte + 1;
                    field_size := field_size | ((b & 127)::bigint << shift);
                    shift := shift + 7;
                    EXIT WHEN b < 128;
                END LOOP;
                IF at_byte + field_size > size THEN
                    RETURN NULL;
                END IF;
                IF tag >> 3 = wanted THEN
                    RETURN substring(message FROM at_byte + 1 FOR field_size::integer);
                END IF;
                at_byte := at_byte + field_size::integer;
            ELSE
                RETURN NULL;
        END CASE;
    END LOOP;
    RETURN NULL;
END;
$$;

-- A UUID written as text in `value`, or NULL when it is not one.
CREATE FUNCTION pg_temp.uuid_in(value bytea) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN encode(value, 'escape') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN encode(value, 'escape')::uuid END
$$;

-- The account id of a customer, exactly as server.domain.accounts.account_id_of_customer
-- derives it: SHA-256 of the namespace's 16 bytes and the customer id in UTF-8, its first
-- 16 bytes with the version (8) and variant bits of RFC 9562.
CREATE FUNCTION pg_temp.account_id_of_customer(customer_id text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT (substr(h, 1, 12) || '8' || substr(h, 14, 3)
            || substr('89ab', (('x' || substr(h, 17, 1))::bit(4)::integer & 3) + 1, 1)
            || substr(h, 18, 15))::uuid
    FROM (SELECT encode(sha256(decode('ebb7e51092174342' || '8f44151760c43c71', 'hex')
                               || convert_to(customer_id, 'UTF8')), 'hex') AS h) AS digest
$$;

-- Where each method's reply names its account: Account and ContactPreferences in field 1;
-- Authorization, Loan and Promise in field 2; Repayment in field 7 (or its Account, 6);
-- AssessCreditResponse in its Account (6).
UPDATE idempotency_records
SET account_id = pg_temp.uuid_in(CASE
    WHEN method IN ('OpenAccount', 'AdjustLimit', 'GrantTemporaryLimit', 'FreezeAccount', 'UnfreezeAccount',
                    'SetContactPreferences')
        THEN pg_temp.protobuf_field(response, 1)
    WHEN method IN ('Authorize', 'Capture', 'Void', 'Refund', 'WaivePenalty', 'RecordPromiseToPay')
        THEN pg_temp.protobuf_field(response, 2)
    WHEN method = 'Repay'
        THEN coalesce(pg_temp.protobuf_field(response, 7),
                      pg_temp.protobuf_field(pg_temp.protobuf_field(response, 6), 1))
    WHEN method = 'AssessCredit'
        THEN pg_temp.protobuf_field(pg_temp.protobuf_field(response, 6), 1)
END);

-- OpenAccount's bucket is the id derived from the request's customer, not the (random)
-- id that accounts opened before this migration have.
UPDATE idempotency_records AS r
SET account_id = pg_temp.account_id_of_customer(a.customer_id)
FROM accounts a
WHERE r.method = 'OpenAccount' AND a.account_id = r.account_id;

UPDATE idempotency_records SET account_id = '00000000-0000-0000-0000-000000000000' WHERE account_id IS NULL;

DROP FUNCTION pg_temp.protobuf_field(bytea, integer);
DROP FUNCTION pg_temp.uuid_in(bytea);
DROP FUNCTION pg_temp.account_id_of_customer(text);

ALTER TABLE idempotency_records ALTER COLUMN account_id SET NOT NULL;
ALTER TABLE idempotency_records DROP CONSTRAINT idempotency_records_pkey;
ALTER TABLE idempotency_records ADD PRIMARY KEY (account_id, caller, method, idempotency_key);

-- 2. Primary keys and unique constraints that include account_id. The key's leading
-- columns stay what they were, so a look-up by id alone still uses it. Foreign keys to
-- keys that change are dropped first and come back with account_id on both sides.
ALTER TABLE loans DROP CONSTRAINT loans_authorization_id_fkey;
ALTER TABLE risk_decisions DROP CONSTRAINT risk_decisions_authorization_id_fkey;
ALTER TABLE installments DROP CONSTRAINT installments_loan_id_fkey;
ALTER TABLE repayments DROP CONSTRAINT repayments_loan_id_fkey;
ALTER TABLE repayment_allocations DROP CONSTRAINT repayment_allocations_loan_id_fkey,
                                  DROP CONSTRAINT repayment_allocations_repayment_id_fkey;
ALTER TABLE refunds DROP CONSTRAINT refunds_loan_id_fkey;
ALTER TABLE penalty_accruals DROP CONSTRAINT penalty_accruals_loan_id_fkey;
ALTER TABLE penalty_waivers DROP CONSTRAINT penalty_waivers_loan_id_fkey;
ALTER TABLE contact_attempts DROP CONSTRAINT contact_attempts_loan_id_fkey;
ALTER TABLE postings DROP CONSTRAINT postings_entry_id_fkey;

ALTER TABLE authorizations DROP CONSTRAINT authorizations_pkey,
                           ADD PRIMARY KEY (authorization_id, account_id);
ALTER TABLE loans DROP CONSTRAINT loans_pkey,
                  ADD PRIMARY KEY (loan_id, account_id),
                  DROP CONSTRAINT loans_authorization_id_key,
                  ADD CONSTRAINT loans_one_per_authorization UNIQUE (authorization_id, account_id);
ALTER TABLE installments DROP CONSTRAINT installments_pkey,
                         ADD PRIMARY KEY (loan_id, sequence, account_id);
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_pkey,
                            ADD PRIMARY KEY (entry_id, account_id);
ALTER TABLE postings DROP CONSTRAINT postings_pkey,
                     ADD PRIMARY KEY (entry_id, line, account_id);
ALTER TABLE repayments DROP CONSTRAINT repayments_pkey,
                       ADD PRIMARY KEY (repayment_id, account_id);
ALTER TABLE repayment_allocations DROP CONSTRAINT repayment_allocations_pkey,
                                  ADD PRIMARY KEY (repayment_id, line, account_id);
ALTER TABLE refunds DROP CONSTRAINT refunds_pkey,
                    ADD PRIMARY KEY (refund_id, account_id);
ALTER TABLE penalty_accruals DROP CONSTRAINT penalty_accruals_pkey,
                             ADD PRIMARY KEY (loan_id, sequence, accrual_date, account_id);
ALTER TABLE penalty_waivers DROP CONSTRAINT penalty_waivers_pkey,
                            ADD PRIMARY KEY (waiver_id, account_id);
ALTER TABLE promises DROP CONSTRAINT promises_pkey,
                     ADD PRIMARY KEY (promise_id, account_id);
ALTER TABLE contact_attempts DROP CONSTRAINT contact_attempts_pkey,
                             ADD PRIMARY KEY (attempt_id, account_id),
                             DROP CONSTRAINT contact_attempts_loan_id_sequence_step_code_key,
                             ADD CONSTRAINT contact_attempts_one_per_step UNIQUE (loan_id, sequence, step_code, account_id);
ALTER TABLE risk_decisions DROP CONSTRAINT risk_decisions_pkey,
                           ADD PRIMARY KEY (decision_id, account_id);
-- Events are only ever read by account: the key is the index those reads used.
ALTER TABLE account_events DROP CONSTRAINT account_events_pkey,
                           ADD PRIMARY KEY (account_id, event_id);
DROP INDEX account_events_by_account;
ALTER TABLE case_events DROP CONSTRAINT case_events_pkey,
                        ADD PRIMARY KEY (account_id, event_id);
DROP INDEX case_events_by_account;

ALTER TABLE loans ADD CONSTRAINT loans_authorization_fkey
    FOREIGN KEY (authorization_id, account_id) REFERENCES authorizations (authorization_id, account_id);
ALTER TABLE risk_decisions ADD CONSTRAINT risk_decisions_authorization_fkey
    FOREIGN KEY (authorization_id, account_id) REFERENCES authorizations (authorization_id, account_id);
ALTER TABLE installments ADD CONSTRAINT installments_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE repayments ADD CONSTRAINT repayments_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE repayment_allocations ADD CONSTRAINT repayment_allocations_repayment_fkey
    FOREIGN KEY (repayment_id, account_id) REFERENCES repayments (repayment_id, account_id);
ALTER TABLE repayment_allocations ADD CONSTRAINT repayment_allocations_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE refunds ADD CONSTRAINT refunds_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE penalty_accruals ADD CONSTRAINT penalty_accruals_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE penalty_waivers ADD CONSTRAINT penalty_waivers_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE contact_attempts ADD CONSTRAINT contact_attempts_loan_fkey
    FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id);
ALTER TABLE postings ADD CONSTRAINT postings_entry_fkey
    FOREIGN KEY (entry_id, account_id) REFERENCES journal_entries (entry_id, account_id);

-- 3. The balance check reads the entry's postings within its account: on Citus the
-- trigger runs beside the shard it checks.
CREATE OR REPLACE FUNCTION check_journal_entry_balances() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
BEGIN
    SELECT coalesce(sum(amount_minor), 0) INTO total FROM postings
    WHERE account_id = NEW.account_id AND entry_id = NEW.entry_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'journal entry % does not balance: postings sum to %', NEW.entry_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

-- 4. Two rules stay global on one node, each by a unique index that does not include
-- account_id: one live authorization per merchant order
-- (authorizations_one_live_per_order) and one account per customer
-- (accounts_customer_id_key). deploy/citus.sql replaces them with their per-account
-- form; docs/scaling.md says what that costs.
