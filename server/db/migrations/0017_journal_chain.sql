-- A tamper-evident ledger (docs/ledger.md): the journal entries of each account form a
-- chain. Every entry carries its place in the chain (`sequence`, 1 for the account's
-- first), the SHA-256 of the entry before it (32 zero bytes for the first) and the
-- SHA-256 of its own content, which covers that previous hash; the accounts row keeps
-- the chain's length and last hash, so a writer that holds the row finds the previous
-- hash without another read. A chain never crosses accounts: on Citus it stays on the
-- account's shard, and accounts never wait on each other. Every entry belongs to an
-- account (journal_entries.account_id is NOT NULL): there is no platform chain.

-- The SHA-256 of an entry's canonical bytes, exactly as server.domain.journal encodes
-- them (docs/ledger.md, "Encoding"): the postings come as parallel arrays in line order.
-- Immutable: the epoch of a timestamptz does not depend on the session's time zone.
CREATE FUNCTION journal_entry_sha256(previous_sha256 bytea, entry_id uuid, account_id uuid, sequence bigint,
                                     created_at timestamptz, kind text, reference_id uuid, lines integer[],
                                     ledger_accounts text[], amounts bigint[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(
        convert_to('credit.journal.v1', 'UTF8') || previous_sha256 || uuid_send(entry_id) || uuid_send(account_id)
        || int8send(sequence) || int8send((extract(epoch FROM created_at) * 1000000)::bigint)
        || int4send(octet_length(convert_to(kind, 'UTF8'))) || convert_to(kind, 'UTF8')
        || uuid_send(reference_id) || int4send(coalesce(cardinality(lines), 0))
        || coalesce((SELECT string_agg(int4send(p.line) || int4send(octet_length(convert_to(p.ledger_account, 'UTF8')))
                                       || convert_to(p.ledger_account, 'UTF8') || int8send(p.amount_minor),
                                       ''::bytea ORDER BY p.position)
                     FROM unnest(lines, ledger_accounts, amounts) WITH ORDINALITY
                          AS p (line, ledger_account, amount_minor, position)), ''::bytea))
$$;

ALTER TABLE accounts
    ADD COLUMN journal_length bigint NOT NULL DEFAULT 0 CHECK (journal_length >= 0),
    ADD COLUMN journal_head_sha256 bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
        CHECK (octet_length(journal_head_sha256) = 32);

ALTER TABLE journal_entries
    ADD COLUMN sequence bigint,
    ADD COLUMN previous_sha256 bytea,
    ADD COLUMN entry_sha256 bytea;

-- The entries written before this migration, chained in the order they were made: by
-- time, and by entry id among entries of the same statement (which share their time).
DO $$
DECLARE
    zero CONSTANT bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    r record;
    current_account uuid;
    previous bytea;
    position bigint;
    digest bytea;
BEGIN
    FOR r IN
        SELECT e.entry_id, e.account_id, e.kind, e.reference_id, e.created_at, p.lines, p.ledger_accounts, p.amounts
        FROM journal_entries e
        CROSS JOIN LATERAL (
            SELECT array_agg(x.line ORDER BY x.line) AS lines,
                   array_agg(x.ledger_account ORDER BY x.line) AS ledger_accounts,
                   array_agg(x.amount_minor ORDER BY x.line) AS amounts
            FROM postings x WHERE x.account_id = e.account_id AND x.entry_id = e.entry_id) AS p
        ORDER BY e.account_id, e.created_at, e.entry_id
    LOOP
        IF current_account IS DISTINCT FROM r.account_id THEN
            IF current_account IS NOT NULL THEN
                UPDATE accounts SET journal_length = position, journal_head_sha256 = previous
                WHERE account_id = current_account;
            END IF;
            current_account := r.account_id;
            previous := zero;
            position := 0;
        END IF;
        position := position + 1;
        digest := journal_entry_sha256(previous, r.entry_id, r.account_id, position, r.created_at, r.kind,
                                       r.reference_id, coalesce(r.lines, '{}'), coalesce(r.ledger_accounts, '{}'),
                                       coalesce(r.amounts, '{}'));
        UPDATE journal_entries SET sequence = position, previous_sha256 = previous, entry_sha256 = digest
        WHERE account_id = r.account_id AND entry_id = r.entry_id;
        previous := digest;
    END LOOP;
    IF current_account IS NOT NULL THEN
        UPDATE accounts SET journal_length = position, journal_head_sha256 = previous
        WHERE account_id = current_account;
    END IF;
END;
$$;

ALTER TABLE journal_entries
    ALTER COLUMN sequence SET NOT NULL,
    ALTER COLUMN previous_sha256 SET NOT NULL,
    ALTER COLUMN entry_sha256 SET NOT NULL,
    ADD CONSTRAINT journal_entries_sequence_positive CHECK (sequence >= 1),
    ADD CONSTRAINT journal_entries_hashes_are_sha256
        CHECK (octet_length(previous_sha256) = 32 AND octet_length(entry_sha256) = 32),
    -- One entry per place in an account's chain: two writers that both took the same
    -- previous hash cannot both commit. Also the index of GetAccountJournal's pages.
    ADD CONSTRAINT journal_entries_one_per_sequence UNIQUE (account_id, sequence);
