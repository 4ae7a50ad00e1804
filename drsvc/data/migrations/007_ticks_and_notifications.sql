-- drsvc catalog, migration 7: the scheduler's last tick per host, and what was notified.
-- scheduler_ticks lets `drsvc metrics` and `drsvc status` say when the scheduler last ran, also for
-- cron users (each `run --once` is a new process); the "no tick for N minutes" alert reads it.
-- notifications remembers, per condition (e.g. rpo:desk-001:gold), whether it is firing and when
-- the webhook last heard of it, so a breach is announced once and its end once, not every tick.

CREATE TABLE scheduler_ticks (
    host        TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    seconds     REAL,
    exit_code   INTEGER,
    error       TEXT
);

CREATE TABLE notifications (
    key          TEXT PRIMARY KEY,             -- kind:subject, e.g. rpo:desk-001:gold
    kind         TEXT NOT NULL,                -- backup_failed | rpo_breach | drill_failed | verify_failed | restore_interrupted
    state        TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    since        TEXT NOT NULL,
    message      TEXT NOT NULL,
    sent_at      TEXT,                         -- when every webhook took the latest state
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed deliveries of the latest state
    retry_at     TEXT,
    last_error   TEXT
);
