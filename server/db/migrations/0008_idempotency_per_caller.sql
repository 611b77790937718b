-- Idempotency keys belong to the caller that chose them: two services that happen to
-- pick the same key no longer collide (nor wait on each other). Without
-- authentication every caller is the same one, ''.
ALTER TABLE idempotency_records ADD COLUMN caller text NOT NULL DEFAULT '';
ALTER TABLE idempotency_records DROP CONSTRAINT idempotency_records_pkey;
ALTER TABLE idempotency_records ADD PRIMARY KEY (caller, method, idempotency_key);
