-- Approvals: a run whose model calls a tool (or hands off) that needs a
-- person's yes parks in status 'waiting' until every request of its step
-- is answered. In AWS the state machine's task token for the wait is kept
-- on the run, so the answer can resume the execution.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN
    ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'timed_out'));
ALTER TABLE runs ADD COLUMN wait_token text;

DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running', 'waiting');

CREATE TABLE approvals (
    id                 uuid PRIMARY KEY,
    run_id             uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_no            integer NOT NULL,
    call_index         integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('tool', 'handoff')),
    name               text NOT NULL,
    arguments          jsonb NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'approved', 'rejected')),
    comment            text,
    approved_arguments jsonb,
    requested_at       timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    answered_at        timestamptz,
    UNIQUE (run_id, step_no, call_index)
);

-- A run may now have more than one delivery: its end, and each step's
-- approval requests ('approval.requested').
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_run_id_key;
CREATE INDEX webhook_deliveries_by_run ON webhook_deliveries (run_id);

CREATE OR REPLACE FUNCTION queue_webhook_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, run_id, team_id, event)
    VALUES (md5(NEW.id::text || ':webhook')::uuid, NEW.id, NEW.team_id,
            'run.' || NEW.status)
    ON CONFLICT (id) DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER runs_queue_webhook ON runs;
CREATE TRIGGER runs_queue_webhook
    AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.webhook IS NOT NULL
          AND OLD.status IN ('queued', 'running', 'waiting')
          AND NEW.status NOT IN ('queued', 'running', 'waiting'))
    EXECUTE FUNCTION queue_webhook_delivery();
