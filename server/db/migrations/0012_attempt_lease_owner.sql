-- Who holds a SENDING attempt: a random token drawn for each claim. A bot renews,
-- records and sends only the attempts whose lease_owner is still its own token, so a
-- bot whose lease ran out and was taken over can neither extend it nor overwrite what
-- the new holder records. Set with lease_until while SENDING, cleared with it after.
ALTER TABLE contact_attempts ADD COLUMN lease_owner uuid;
