-- The risk facts count an account's live (PENDING or CAPTURED) authorizations of the
-- last hour and day. Without an index that says "live, by account, by time", the
-- planner ANDed the account index with the one-live-per-order index, which walks every
-- live authorization of every account: milliseconds per Authorize, growing with the
-- book. This index answers both facts from one account's recent entries.
CREATE INDEX authorizations_live_by_account
    ON authorizations (account_id, created_at) INCLUDE (amount_minor)
    WHERE status IN ('PENDING', 'CAPTURED');
