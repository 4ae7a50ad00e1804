-- drsvc catalog, migration 11: intent records (drsvc/intents.py). Every external effect a job
-- makes outside the catalog (a clone's namespace and container, multipart uploads, an in-place
-- restore, a read of a point) is written here before it is made and resolved after; a row left
-- 'pending' by an owner whose lease lapsed is a leftover that `drsvc cleanup` undoes (or, for an
-- in-place restore, reports as interrupted).

CREATE TABLE intents (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,                 -- clone-volume | clone-container | multipart-uploads | restore-in-place | point-read
    target      TEXT NOT NULL,                 -- what the effect is on (volume URL, container name, store URL, desktop, point)
    owner       TEXT NOT NULL,                 -- the owner lease (leases.name 'owner:<hex>') of the process making it
    state       TEXT NOT NULL CHECK (state IN ('pending', 'kept', 'undone', 'done', 'failed', 'interrupted')),
    created_at  TEXT NOT NULL,
    resolved_at TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'     -- JSON: restore id, point, phase reached ...
);
CREATE INDEX intents_pending ON intents (state, kind);
