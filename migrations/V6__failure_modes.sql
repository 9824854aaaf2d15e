-- Idempotency keys in the ledger as well as in the hot store: written with
-- the run, and the one answer while the hot store cannot be reached. A key
-- is taken for 24 hours, as in the hot store.
CREATE TABLE run_idempotency_keys (
    team_id      uuid NOT NULL REFERENCES teams (id),
    key          text NOT NULL,
    request_hash text NOT NULL,
    run_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, key)
);

-- Team runs still holding a slot, counted when the hot store is away.
CREATE INDEX runs_active_by_team ON runs (team_id) WHERE status IN ('queued', 'running');

-- LLM circuit breakers, shared by the processes of the embedded mode.
CREATE TABLE hot_circuits (
    key        text PRIMARY KEY,
    failures   integer NOT NULL,
    open_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
