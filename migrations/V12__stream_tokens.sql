-- Stream tokens: short-lived, read-only permission to stream one run's
-- events, for clients that cannot send an Authorization header (a browser's
-- EventSource passes it as ?token=). Stored as a SHA-256 hash.
CREATE TABLE stream_tokens (
    token_hash text PRIMARY KEY,
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    team_id    uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX stream_tokens_expiry ON stream_tokens (expires_at);
