-- Contact data is stored encrypted (see server/contact_crypto.py); these keyed hashes
-- find an account by email or phone without decrypting anything.
ALTER TABLE accounts ADD COLUMN contact_email_hash bytea;
ALTER TABLE accounts ADD COLUMN contact_phone_hash bytea;
CREATE INDEX accounts_by_email_hash ON accounts (contact_email_hash);
CREATE INDEX accounts_by_phone_hash ON accounts (contact_phone_hash);
