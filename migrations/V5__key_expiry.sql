-- An API key may carry an expiry; after it the key no longer authenticates.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
