-- drsvc catalog, migration 2: restores are recorded phase by phase (incidents, not only drills),
-- and the scheduler remembers the last due window it ran per policy and purpose, so a missed
-- window runs once and a window never runs twice; a failed run is retried with backoff.

CREATE TABLE restores (
    id             INTEGER PRIMARY KEY,
    desktop_id     TEXT NOT NULL REFERENCES desktops (id),
    point_id       TEXT NOT NULL REFERENCES points (id),
    tier           TEXT NOT NULL,
    as_name        TEXT,                       -- clone name, NULL when restored in place
    drill_id       INTEGER REFERENCES drills (id),
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    rto_seconds    REAL,
    target_seconds REAL NOT NULL,
    phases         TEXT NOT NULL DEFAULT '{}',
    status         TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'objective_missed')),
    error          TEXT
);
CREATE INDEX restores_desktop ON restores (desktop_id, started_at);

CREATE TABLE schedule_state (
    policy      TEXT NOT NULL,
    purpose     TEXT NOT NULL,                 -- backup | drill
    last_window TEXT,                          -- the due time (cron slot) last run to the end
    last_run_at TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,    -- failed attempts at the current window
    retry_at    TEXT,                          -- not before this time (backoff)
    last_error  TEXT,
    PRIMARY KEY (policy, purpose)
);

CREATE INDEX points_taken ON points (taken_at);
