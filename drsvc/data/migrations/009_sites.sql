-- drsvc catalog, migration 9: copies at other sites, and site recoveries / restore storms.
-- A point copied to another site's S3 store (``drsvc copy``) has a row per site; its Object Lock
-- there is the site's own. A site recovery (``site recover``, its drill, or a restore storm at the
-- primary) records its fleet outcome and each desktop's: when it was up, counted from the start
-- of the recovery (the RTO a user of a lost site sees), and the restore's own phases.

CREATE TABLE point_sites (
    point_id     TEXT NOT NULL REFERENCES points (id) ON DELETE CASCADE,
    site         TEXT NOT NULL,                -- [sites.NAME] of the config
    store_url    TEXT NOT NULL,
    copied_bytes INTEGER NOT NULL DEFAULT 0,   -- bytes this point sent to the site (shared packs once)
    added_at     TEXT NOT NULL,
    retain_until TEXT,                         -- S3 Object Lock at the site
    PRIMARY KEY (point_id, site)
);
CREATE INDEX point_sites_site ON point_sites (site);

CREATE TABLE site_recoveries (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('recover', 'drill', 'storm')),
    site        TEXT,                          -- NULL for a restore storm at the primary site
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    selection   TEXT NOT NULL DEFAULT '',      -- --all, --tenant T, --policy P, --node N
    parallel    INTEGER NOT NULL DEFAULT 1,
    admission   TEXT NOT NULL DEFAULT '{}',    -- JSON: the limits per shared resource, or {} (none)
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'partial', 'failed', 'interrupted')),
    summary     TEXT NOT NULL DEFAULT '{}'     -- JSON: counts, time to first / 50 % / 95 % / all up
);

CREATE TABLE site_recovery_desktops (
    recovery_id    INTEGER NOT NULL REFERENCES site_recoveries (id) ON DELETE CASCADE,
    desktop_id     TEXT NOT NULL,
    rank           INTEGER NOT NULL,           -- order of the plan (priority, then RTO target)
    point_id       TEXT,
    status         TEXT NOT NULL,              -- planned | ok | objective_missed | failed | skipped
    up_seconds     REAL,                       -- from the start of the recovery to this desktop up
    rto_seconds    REAL,                       -- the restore's own, from its start
    target_seconds REAL,
    phases         TEXT NOT NULL DEFAULT '{}',
    error          TEXT,
    PRIMARY KEY (recovery_id, desktop_id)
);
