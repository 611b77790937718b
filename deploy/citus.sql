-- Distributing the schema on Citus, by account.
--
-- Run once on the coordinator, after every migration (server/db/migrations) has been
-- applied to it and after CREATE EXTENSION citus and citus_add_node for the workers:
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/citus.sql
--
-- Every table that carries account_id is hash-distributed by it and co-located with
-- accounts, so all rows of one account live on one shard and every statement that
-- filters by account_id (the hot path's all do; tests/integration/test_sharding.py)
-- runs on that shard alone, in a single-shard transaction. The small tables that
-- every account reads and operators write are reference tables, copied to every node.
-- schema_migrations, the migration runner's own record, stays a local table of the
-- coordinator, where migrations run.
--
-- Order matters: a table is distributed after every table its foreign keys point to.
-- docs/scaling.md says what changes against a single database.

-- Two rules that a single database keeps with unique indexes across accounts cannot
-- span shards (Citus only accepts unique constraints that include the distribution
-- column). They become rules within an account; the invariant checker
-- (python -m server.invariants) looks across accounts for what they no longer stop.
--
-- One live authorization per merchant order: kept per (account, merchant, order). Two
-- accounts could now hold the same order if an order service sent it under both.
DROP INDEX authorizations_one_live_per_order;
CREATE UNIQUE INDEX authorizations_one_live_per_account_order
    ON authorizations (account_id, merchant_id, order_id) WHERE status IN ('PENDING', 'CAPTURED');
-- One account per customer: the account id is derived from the customer id
-- (server/domain/accounts.py), so the primary key keeps it for every account opened
-- since migration 0013. Accounts opened before keep their random ids: a second
-- OpenAccount for such a customer is no longer refused.
ALTER TABLE accounts DROP CONSTRAINT accounts_customer_id_key;

-- The accounts trigger (it moves the version on every update) and the postings trigger
-- (it checks that an entry balances, reading the entry's own account) touch only rows
-- of the account being written, so they are safe on shards. The statement triggers
-- only refuse changes to an issued statement's rows.
SET citus.enable_unsafe_triggers TO on;

-- Reference tables: small, shared by every account, written by operators.
SELECT create_reference_table('risk_lists');
SELECT create_reference_table('reminder_steps');
-- Co-lending's partners and their exposure counters. A co-funded capture adds to one
-- counter in its write, and a write to a reference table reaches every node: on Citus
-- that capture is a multi-node transaction (docs/scaling.md says what to do past that).
SELECT create_reference_table('funding_partners');
SELECT create_reference_table('partner_exposure');
-- Where the bot's replicas are in the payment gateway's stream of results: one row,
-- moved in the transaction that applies each event to its order, so that transaction
-- spans the order's shard and the reference table (docs/payments.md).
SELECT create_reference_table('payment_event_cursors');
-- The merchant registry: a category per merchant, read when a merchant-day is settled.
SELECT create_reference_table('merchants');

-- The distributed tables, all co-located with accounts.
SELECT create_distributed_table('accounts', 'account_id');
SELECT create_distributed_table('account_events', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('idempotency_records', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('authorizations', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('risk_decisions', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('loans', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('installments', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('journal_entries', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('postings', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('repayments', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('repayment_allocations', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('refunds', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('collection_cases', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('case_events', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('penalty_accruals', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('penalty_waivers', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('promises', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('contact_preferences', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('contact_attempts', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('loan_funding', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('partner_settlement_items', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('statements', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('statement_lines', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('statement_installments', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('statement_deliveries', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('payment_methods', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('payment_orders', 'account_id', colocate_with => 'accounts');
SELECT create_distributed_table('recoveries', 'account_id', colocate_with => 'accounts');
-- A merchant's settled days have no customer account: distributed by merchant, in a
-- co-location group of their own (docs/scaling.md).
SELECT create_distributed_table('merchant_settlements', 'merchant_id', colocate_with => 'none');

-- The function a one-statement write raises its conflict with runs where the statement
-- runs, on the worker that holds the account's shard.
SELECT create_distributed_function('credit_write_conflict(text)');
-- So does the hash of a journal entry that a locked transaction posts (docs/ledger.md):
-- each account's chain is on its account's shard.
SELECT create_distributed_function(
    'journal_entry_sha256(bytea, uuid, uuid, bigint, timestamptz, text, uuid, integer[], text[], bigint[])');
