-- drsvc catalog, migration 4: how long each object of a locked cold store is known to be locked.
-- A chunk (or image record) is uploaded once and then shared by later points; a later point with
-- Object Lock needs the shared objects locked at least as long as itself. This table lets tiering
-- extend only what falls short (in bulk, once per lock period) instead of asking S3 per object.
-- It is a cache: when lost (catalog rebuilt), tiering extends every shared object once.

CREATE TABLE cold_locks (
    store_url    TEXT NOT NULL,
    key          TEXT NOT NULL,                -- object key in the store (chunks/ab/ab12…, manifests/_images/…)
    retain_until TEXT NOT NULL,
    PRIMARY KEY (store_url, key)
);
