-- The durable ledger: teams, keys, agent configs, runs and their append-only history.

CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id),
    prefix      text NOT NULL UNIQUE,
    key_hash    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Versions are immutable: a change is a new row with version + 1.
CREATE TABLE agent_configs (
    team_id     uuid NOT NULL REFERENCES teams (id),
    name        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    spec        jsonb NOT NULL,
    spec_hash   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, name, version)
);

CREATE TABLE runs (
    id              uuid PRIMARY KEY,
    team_id         uuid NOT NULL REFERENCES teams (id),
    agent           text NOT NULL,
    version         integer NOT NULL,
    active_agent    text NOT NULL,
    active_version  integer NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    stop_reason     text,
    stop_detail     text,
    input           jsonb NOT NULL,
    output          jsonb,
    raw_output      text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    limits          jsonb NOT NULL,
    next_step       integer NOT NULL DEFAULT 1,
    handoff_depth   integer NOT NULL DEFAULT 0,
    repairs_used    integer NOT NULL DEFAULT 0,
    input_tokens    bigint NOT NULL DEFAULT 0,
    output_tokens   bigint NOT NULL DEFAULT 0,
    llm_calls       integer NOT NULL DEFAULT 0,
    last_seq        bigint NOT NULL DEFAULT 0,
    message_count   integer NOT NULL DEFAULT 0,
    -- Attempts at step `attempt_step` so far (for `step.started` events).
    attempt_step    integer NOT NULL DEFAULT 0,
    step_attempts   integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    deadline        timestamptz,
    finished_at     timestamptz
);
CREATE INDEX runs_by_team ON runs (team_id, created_at DESC, id DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running');

-- One row per committed step; the primary key is what makes a step happen once.
CREATE TABLE run_steps (
    run_id          uuid NOT NULL REFERENCES runs (id),
    step_no         integer NOT NULL,
    agent           text NOT NULL,
    agent_version   integer NOT NULL,
    attempt         integer NOT NULL,
    model           text NOT NULL,
    input_tokens    bigint NOT NULL,
    output_tokens   bigint NOT NULL,
    context_trimmed integer NOT NULL DEFAULT 0,
    outcome         jsonb NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_no)
);

-- The conversation, in OpenAI Chat Completions message form.
CREATE TABLE run_messages (
    run_id      uuid NOT NULL REFERENCES runs (id),
    seq         integer NOT NULL,
    step_no     integer NOT NULL,
    agent       text NOT NULL,
    message     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- The event stream; seq is per run, gap-free, allocated under the run row lock.
CREATE TABLE run_events (
    run_id      uuid NOT NULL REFERENCES runs (id),
    seq         bigint NOT NULL,
    type        text NOT NULL,
    step_no     integer,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- The LLM turn of a step attempt, kept so a retried attempt never calls the LLM again.
CREATE TABLE step_llm_turns (
    run_id          uuid NOT NULL REFERENCES runs (id),
    step_no         integer NOT NULL,
    agent           text NOT NULL,
    model           text NOT NULL,
    message         jsonb NOT NULL,
    input_tokens    bigint NOT NULL,
    output_tokens   bigint NOT NULL,
    context_trimmed integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_no)
);

-- Each tool call's result, kept so a retried attempt never calls the tool again.
CREATE TABLE tool_calls (
    run_id          uuid NOT NULL REFERENCES runs (id),
    step_no         integer NOT NULL,
    call_index      integer NOT NULL,
    tool_call_id    text NOT NULL,
    name            text NOT NULL,
    arguments       jsonb NOT NULL,
    result          text NOT NULL,
    is_error        boolean NOT NULL,
    attempts        integer NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    PRIMARY KEY (run_id, step_no, call_index)
);
