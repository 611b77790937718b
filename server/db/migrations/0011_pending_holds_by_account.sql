-- Authorize books the account's holds past their expiry in its own write, and first
-- sums them in its read. Planned once per connection (generic plans), that sum walked
-- all of the account's pending holds through the live-by-account index: 1.6 ms per
-- Authorize on an account holding 8,000 of them, and growing. This index finds the
-- expired ones of one account directly.
CREATE INDEX authorizations_pending_by_account
    ON authorizations (account_id, expires_at) INCLUDE (amount_minor)
    WHERE status = 'PENDING';
