-- Webhooks: where a run's end is announced ({"url", "secret"}; the secret
-- is never shown), and a durable outbox of deliveries with every attempt.
ALTER TABLE runs ADD COLUMN webhook jsonb;

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    run_id          uuid NOT NULL UNIQUE REFERENCES runs (id) ON DELETE CASCADE,
    team_id         uuid NOT NULL,
    event           text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- One row per attempt, written when it is claimed and completed when it
-- ends: an attempt cut by a crash stays visible, without an outcome.
CREATE TABLE webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status_code integer,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

-- The delivery is queued by the very update that ends the run, whichever
-- path ends it (a step's commit, a cancel, a kill switch, the finalize
-- function), so no end is announced twice or lost between the two.
CREATE FUNCTION queue_webhook_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, run_id, team_id, event)
    VALUES (md5(NEW.id::text || ':webhook')::uuid, NEW.id, NEW.team_id,
            'run.' || NEW.status)
    ON CONFLICT (run_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_queue_webhook
    AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.webhook IS NOT NULL
          AND OLD.status IN ('queued', 'running')
          AND NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION queue_webhook_delivery();
