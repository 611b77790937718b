-- Real-time risk: the device and address of each authorization as columns (the
-- velocity and sharing rules count by them), risk lists, and every decision with its
-- inputs and rule results for audit.
ALTER TABLE authorizations ADD COLUMN device_id text;
ALTER TABLE authorizations ADD COLUMN ip_address text;
CREATE INDEX authorizations_by_device ON authorizations (device_id, created_at) WHERE device_id IS NOT NULL;
CREATE INDEX authorizations_by_ip ON authorizations (ip_address, created_at) WHERE ip_address IS NOT NULL;

-- Operators' lists: BLOCK entries for accounts, devices and addresses; MERCHANT risk
-- levels (MEDIUM, HIGH).
CREATE TABLE risk_lists (
    kind        text NOT NULL CHECK (kind IN ('ACCOUNT', 'DEVICE', 'IP', 'MERCHANT')),
    value       text NOT NULL,
    level       text NOT NULL CHECK (level IN ('BLOCK', 'HIGH', 'MEDIUM')),
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

CREATE TABLE risk_decisions (
    decision_id       uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts (account_id),
    authorization_id  uuid NOT NULL REFERENCES authorizations (authorization_id),
    decision          text NOT NULL CHECK (decision IN ('APPROVE', 'REVIEW', 'DECLINE')),
    score             integer NOT NULL,
    reasons           text[] NOT NULL,
    inputs            jsonb NOT NULL,
    rule_results      jsonb NOT NULL,
    ruleset_version   text NOT NULL,
    created_at        timestamptz NOT NULL
);
CREATE INDEX risk_decisions_by_account ON risk_decisions (account_id, created_at, decision_id);

-- The provision each loan put into the risk reserve at capture.
ALTER TABLE loans ADD COLUMN provision_minor bigint NOT NULL DEFAULT 0 CHECK (provision_minor >= 0);
