-- Tables behind the embedded hot store (in AWS these live in DynamoDB).
-- Ephemeral by design: the hot store's connections write them with
-- synchronous_commit off, and reconciliation repairs them from the ledger.

CREATE TABLE hot_idempotency_keys (
    team_id         uuid NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    run_id          uuid NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (team_id, key)
);

CREATE TABLE hot_cancel_flags (
    run_id      uuid PRIMARY KEY,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per run holding one of its team's concurrent-run slots.
CREATE TABLE hot_run_slots (
    run_id      uuid PRIMARY KEY,
    team_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hot_run_slots_by_team ON hot_run_slots (team_id);

-- Tokens used and reserved per team per UTC day.
CREATE TABLE hot_token_days (
    team_id     uuid NOT NULL,
    day         date NOT NULL,
    used        bigint NOT NULL DEFAULT 0,
    reserved    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, day)
);

-- One outstanding reservation per (run, step): settling it is idempotent.
CREATE TABLE hot_token_reservations (
    run_id      uuid NOT NULL,
    step_no     integer NOT NULL,
    team_id     uuid NOT NULL,
    day         date NOT NULL,
    tokens      bigint NOT NULL,
    settled     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_no)
);

-- Token buckets for POST /v1/runs.
CREATE TABLE hot_rate_buckets (
    team_id     uuid PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- Whether the last request took a token (how the upsert reports it).
    last_taken  boolean NOT NULL
);
