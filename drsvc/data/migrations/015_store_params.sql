-- drsvc catalog, migration 15: how each chunk store cuts, as its sealed config says.
-- A process that opens an existing hot store records its parameters here (only when they changed),
-- so `drsvc status` can say, without touching the store, that `[hot] chunk_kib` disagrees with it.

CREATE TABLE store_params (
    url       TEXT PRIMARY KEY,
    avg_size  INTEGER NOT NULL,
    min_size  INTEGER NOT NULL,
    max_size  INTEGER NOT NULL,
    seen_at   TEXT NOT NULL
);
