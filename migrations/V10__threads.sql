-- Conversations: a run may continue an earlier run of its team, whose
-- messages begin its own. The runs of a thread form a chain: each run is
-- continued at most once (previous_run_id is unique). A thread's id is its
-- first run's id; runs from before threads (thread_id NULL) are threads of
-- their own.
ALTER TABLE runs
    ADD COLUMN thread_id uuid,
    ADD COLUMN previous_run_id uuid CONSTRAINT runs_previous_run_id_key UNIQUE;

CREATE INDEX runs_by_thread ON runs (team_id, thread_id, created_at)
    WHERE thread_id IS NOT NULL;
