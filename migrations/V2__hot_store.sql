-- Tables behind the embedded hot store (in AWS these live in DynamoDB).

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

CREATE TABLE hot_counters (
    name    text PRIMARY KEY,
    value   bigint NOT NULL
);
