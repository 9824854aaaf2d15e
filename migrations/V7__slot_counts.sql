-- Slots in use per team, kept with the slot rows in the same statements, so
-- granting a slot changes one counter row instead of counting the team's
-- slots under a team-wide lock held across round trips.
CREATE TABLE hot_slot_counts (
    team_id uuid PRIMARY KEY,
    in_use  integer NOT NULL
);
INSERT INTO hot_slot_counts (team_id, in_use)
SELECT team_id, count(*) FROM hot_run_slots GROUP BY team_id;
