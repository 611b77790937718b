-- Settled merchant-days (docs/payments.md, "Merchant settlement").
--
-- One row per (merchant, settlement day), written in the transaction that books the
-- day out of every customer account's MERCHANT_PAYABLE: inserting it is what makes a
-- day settle once across bot replicas. The figures are the rule's
-- (server/domain/merchant_settlement.py); net_minor includes what the merchant's
-- previous settled day carried in. A day whose net is zero or less is CARRIED (nothing
-- to pay, its net is the next day's carried_in_minor); a positive net is REQUESTED, to
-- be paid under payment_order_id (the gateway's idempotency key), then PAID or FAILED.
-- Distributed by merchant_id on Citus: a merchant's days and their payments live
-- together, beside no customer account.
CREATE TABLE merchant_settlements (
    merchant_id      text NOT NULL CHECK (length(merchant_id) BETWEEN 1 AND 128),
    settlement_date  date NOT NULL,
    settlement_id    uuid NOT NULL,
    category         text NOT NULL CHECK (category IN ('GENERAL', 'EDUCATION', 'TRAVEL', 'ELECTRONICS')),
    fee_bps          integer NOT NULL CHECK (fee_bps >= 0),
    captured_minor   bigint NOT NULL CHECK (captured_minor >= 0),
    refunded_minor   bigint NOT NULL CHECK (refunded_minor >= 0),
    fee_minor        bigint NOT NULL CHECK (fee_minor >= 0),
    carried_in_minor bigint NOT NULL CHECK (carried_in_minor <= 0),
    net_minor        bigint NOT NULL CHECK (net_minor = captured_minor - refunded_minor - fee_minor + carried_in_minor),
    paid_minor       bigint NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    status           text NOT NULL CHECK (status IN ('CARRIED', 'REQUESTED', 'PAID', 'FAILED')),
    payment_order_id uuid,
    gateway_payment_id text,
    failure_reason   text CHECK (failure_reason IN ('INSUFFICIENT_FUNDS', 'INSTRUMENT_INVALID',
                                                    'MERCHANT_INVALID', 'DECLINED')),
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    PRIMARY KEY (merchant_id, settlement_date),
    CHECK ((status = 'CARRIED') = (net_minor <= 0)),
    CHECK ((status = 'CARRIED') = (payment_order_id IS NULL)),
    CHECK ((status = 'PAID') = (paid_minor > 0)),
    CHECK (status <> 'PAID' OR paid_minor = net_minor),
    CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);
CREATE UNIQUE INDEX merchant_settlements_by_payment_order ON merchant_settlements (payment_order_id, merchant_id);
