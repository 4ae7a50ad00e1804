-- drsvc catalog, migration 13: what the last tier run left due for the cold tier.
-- The daemon's /metrics takes tier lag from its own last tier run; `drsvc metrics` (a new process
-- after each cron `run --once`) reads it here instead of planning tiering again (seconds at fleet
-- scale). One row, replaced by every tier run that is not a dry run, also one with nothing due.

CREATE TABLE tier_lag (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    recorded_at TEXT NOT NULL,
    lag         TEXT NOT NULL      -- JSON [[desktop_id, policy, points], ...], only the non-zero ones
);
