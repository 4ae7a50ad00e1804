-- drsvc catalog, migration 10: the freeze budget a point was taken under (the policy's
-- capture.freeze_timeout, in ms), beside the freeze it measured (freeze_ms), so `points show`
-- says whether a point's freeze stayed inside its budget. NULL for points taken before.

ALTER TABLE points ADD COLUMN freeze_budget_ms REAL;
