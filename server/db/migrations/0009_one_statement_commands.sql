-- Checkout and repayment commands read everything they need in one statement, decide in
-- Python without holding a lock, and write everything in one statement that applies only
-- if the account has not changed since it was read. The version is that check: every
-- update of an account row moves it, whoever makes the update, so no writer can forget.
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bump_account_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER accounts_version
    BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION bump_account_version();

-- A one-statement write that lost a race undoes itself by raising serialization_failure
-- (SQLSTATE 40001) from its last SELECT: the statement, its idempotency record included,
-- rolls back as a whole and the caller reads again.
CREATE FUNCTION credit_write_conflict(detail text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'write conflict: %', detail USING ERRCODE = 'serialization_failure';
END;
$$;
