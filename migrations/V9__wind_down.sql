-- A run that ended with its agent's final turn without tools (graceful
-- wind-down at max_steps or the run's token budget).
ALTER TABLE runs ADD COLUMN wound_down boolean NOT NULL DEFAULT false;
