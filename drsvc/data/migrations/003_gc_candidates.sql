-- drsvc catalog, migration 3: chunks no manifest references, remembered between prune runs.
-- A chunk is deleted only when it has stayed unreferenced for the whole grace period (mark and
-- sweep), so a backup that wrote chunks but not yet its manifest never loses one.

CREATE TABLE gc_candidates (
    store_url  TEXT NOT NULL,
    chunk_id   TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (store_url, chunk_id)
);
