-- Co-lending (docs/risk.md, "Co-lending"): funding partners, each partner's exposure
-- in a few counter rows, each co-funded loan's funders with their stakes, and what the
-- platform collected for each partner, event by event, for the daily settlement.

-- Managed with `python -m server.funding`; every server reads it at start.
CREATE TABLE funding_partners (
    partner_id           text PRIMARY KEY CHECK (partner_id ~ '^[A-Za-z0-9_-]{1,64}$' AND partner_id <> 'platform'),
    name                 text NOT NULL,
    -- The platform keeps at least 30 % of every co-funded loan's principal.
    principal_share_bps  integer NOT NULL CHECK (principal_share_bps BETWEEN 1 AND 7000),
    -- Its share of fee and penalty income.
    fee_share_bps        integer NOT NULL CHECK (fee_share_bps BETWEEN 0 AND 10000),
    max_exposure_minor   bigint NOT NULL CHECK (max_exposure_minor >= 0),
    grades               text[] NOT NULL CHECK (cardinality(grades) > 0 AND grades <@ ARRAY['A', 'B', 'C', 'D', 'E']),
    terms                integer[] NOT NULL CHECK (cardinality(terms) > 0 AND terms <@ ARRAY[1, 3, 6, 12, 24]),
    active               boolean NOT NULL DEFAULT true,
    -- How many rows of partner_exposure hold its exposure; fixed when it is added.
    exposure_stripes     integer NOT NULL CHECK (exposure_stripes BETWEEN 1 AND 64),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);

-- A partner's exposure (its share of principal still owed) spread over its stripes, so
-- that concurrent captures seldom wait on one row. A capture adds to one row only while
-- that row stays within its cap; the caps add up to the maximum exposure (an inactive
-- partner's are 0), so the rows' sum never passes it. Repayments, refunds and
-- charge-offs take their part off the row the loan was funded from.
CREATE TABLE partner_exposure (
    partner_id      text NOT NULL REFERENCES funding_partners (partner_id),
    stripe          integer NOT NULL CHECK (stripe >= 0),
    exposure_minor  bigint NOT NULL DEFAULT 0,
    cap_minor       bigint NOT NULL CHECK (cap_minor >= 0),
    PRIMARY KEY (partner_id, stripe)
);

-- The funders of a co-funded loan, the platform ('platform') among them, each with its
-- shares and its stake: its part of the principal, fees and penalties still owed
-- (server/domain/funding.py). A loan without rows is the platform's alone.
CREATE TABLE loan_funding (
    loan_id                 uuid NOT NULL,
    funder_id               text NOT NULL,
    account_id              uuid NOT NULL,
    principal_share_bps     integer NOT NULL CHECK (principal_share_bps BETWEEN 0 AND 10000),
    fee_share_bps           integer NOT NULL CHECK (fee_share_bps BETWEEN 0 AND 10000),
    funded_principal_minor  bigint NOT NULL CHECK (funded_principal_minor >= 0),
    principal_minor         bigint NOT NULL CHECK (principal_minor >= 0),
    fee_minor               bigint NOT NULL CHECK (fee_minor >= 0),
    penalty_minor           bigint NOT NULL DEFAULT 0 CHECK (penalty_minor >= 0),
    -- The partner_exposure row the loan was funded from; NULL for the platform.
    exposure_stripe         integer,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    PRIMARY KEY (loan_id, funder_id, account_id),
    CONSTRAINT loan_funding_loan_fkey FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id)
);
CREATE INDEX loan_funding_by_funder ON loan_funding (funder_id, created_at);

-- What one event collected for a partner on one loan (or gave back: negative), by
-- component: the lines of its daily settlement.
CREATE TABLE partner_settlement_items (
    item_id          uuid NOT NULL,
    account_id       uuid NOT NULL,
    loan_id          uuid NOT NULL,
    partner_id       text NOT NULL,
    kind             text NOT NULL,
    reference_id     uuid NOT NULL,
    principal_minor  bigint NOT NULL,
    fee_minor        bigint NOT NULL,
    penalty_minor    bigint NOT NULL,
    recovery_minor   bigint NOT NULL CHECK (recovery_minor >= 0),
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (item_id, account_id),
    CONSTRAINT partner_settlement_items_loan_fkey
        FOREIGN KEY (loan_id, account_id) REFERENCES loans (loan_id, account_id)
);
CREATE INDEX partner_settlement_items_by_partner ON partner_settlement_items (partner_id, created_at);
