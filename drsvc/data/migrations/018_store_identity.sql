-- drsvc catalog, migration 18: which store each tier's copies went to (drsvc.store_identity).
-- A store drsvc creates gets an identity object; the catalog remembers it per URL, so a mistyped
-- or replaced bucket is refused instead of being created and filled. adopted_at: an operator
-- accepted a new, empty store at this URL (`drsvc catalog adopt-store`), cleared once it is created.

CREATE TABLE store_identity (
    url         TEXT PRIMARY KEY,
    tier        TEXT NOT NULL,                 -- hot, cold or site:NAME
    identity    TEXT,                          -- the store's identity object, NULL: adopted, not created yet
    adopted_at  TEXT,
    seen_at     TEXT NOT NULL
);
