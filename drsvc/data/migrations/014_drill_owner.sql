-- drsvc catalog, migration 14: who runs a drill. A drill killed (-9) never reaches the finally that
-- records its end, so its row stayed 'running' for ever. ``owner`` names the owner lease
-- (drsvc.intents.Owner, ``owner:<hex>``) the drilling process renews; once it lapses, cleanup marks
-- the drill 'interrupted' (drsvc/drill.py interrupted_drills). NULL: a drill of an older drsvc.

ALTER TABLE drills ADD COLUMN owner TEXT;
