-- drsvc catalog, migration 12: what a drill proved about its sandbox. Each drill clone is checked
-- after its restore (drsvc/drill.py check_isolation): network 'none' and no interface up but
-- loopback, no namespace shared with the host, none of the original's volumes or host paths.
-- JSON {"isolated": bool, "problems": [...], "clone": {...}, "original": {...}}; NULL before.

ALTER TABLE drill_results ADD COLUMN isolation TEXT;
