-- drsvc catalog, migration 17: who runs a job (backup, tier, copy, prune, verify). A job killed (-9)
-- never records its end, and its row stayed 'running'. Cleanup ended it by its host and pid, which
-- fails when the pid is reused by another process or the run was on another host (a scheduler pod
-- on another node). As with drills (migration 14) and site runs (16), ``owner`` names the owner
-- lease (drsvc.intents.Owner) the running process renews; once it lapses, cleanup and the
-- scheduler's tick mark the row 'interrupted' (drsvc.intents.abandoned_runs). NULL: a job of an
-- older drsvc, still ended by its host and pid (drsvc/cleanup.py).

ALTER TABLE jobs ADD COLUMN owner TEXT;
