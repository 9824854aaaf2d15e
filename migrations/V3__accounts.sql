-- Team limits and kill switches, agent kill switches, prices and metering.

CREATE TABLE plans (
    name            text PRIMARY KEY,
    run_fee_micros  bigint NOT NULL CHECK (run_fee_micros >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO plans (name, run_fee_micros) VALUES ('standard', 0);

ALTER TABLE teams
    ADD COLUMN plan                 text NOT NULL DEFAULT 'standard' REFERENCES plans (name),
    ADD COLUMN max_concurrent_runs  integer NOT NULL DEFAULT 10 CHECK (max_concurrent_runs > 0),
    ADD COLUMN daily_token_budget   bigint NOT NULL DEFAULT 5000000 CHECK (daily_token_budget > 0),
    ADD COLUMN runs_per_second      double precision NOT NULL DEFAULT 10 CHECK (runs_per_second > 0),
    ADD COLUMN run_burst            integer NOT NULL DEFAULT 20 CHECK (run_burst > 0),
    -- Operator kill switch: the team is off while this is set.
    ADD COLUMN disabled_reason      text;

-- Operator kill switch per agent: the agent is off while a row exists.
CREATE TABLE agent_switches (
    team_id         uuid NOT NULL REFERENCES teams (id),
    agent           text NOT NULL,
    disabled_reason text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, agent)
);

-- Prices in micro-units (1e-6 of the currency) per million tokens.
CREATE TABLE model_prices (
    model                   text PRIMARY KEY,
    input_micros_per_mtok   bigint NOT NULL CHECK (input_micros_per_mtok >= 0),
    output_micros_per_mtok  bigint NOT NULL CHECK (output_micros_per_mtok >= 0),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- The plan's run fee, fixed when the run is accepted.
ALTER TABLE runs ADD COLUMN run_fee_micros bigint NOT NULL DEFAULT 0;

-- Tokens and exact cost per run and model. cost_exact is tokens × price per
-- million tokens, i.e. in units of 1e-12: rounding happens once, per run.
CREATE TABLE run_usage (
    run_id          uuid NOT NULL REFERENCES runs (id),
    model           text NOT NULL,
    input_tokens    bigint NOT NULL,
    output_tokens   bigint NOT NULL,
    cost_exact      bigint NOT NULL,
    PRIMARY KEY (run_id, model)
);
