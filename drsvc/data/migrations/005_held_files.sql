-- drsvc catalog, migration 5: what a checkpoint's archive holds of the desktop's root filesystem as
-- it stood at the freeze (drsvc/runtimes/heldfiles.py), so `points show` answers from the catalog
-- alone, as for everything else. JSON {"files": [{"path", "size"}], "notes": [...]}, NULL for points
-- taken before (or volume artifacts); the manifest's checkpoint.held_files is the source of truth
-- and `catalog rebuild` copies it from there.

ALTER TABLE artifacts ADD COLUMN held_files TEXT;
