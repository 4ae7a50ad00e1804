-- drsvc catalog, migration 16: who runs a site recovery, site drill or restore storm. As with
-- drills (migration 14), a run killed (-9) never records its end and its row stayed 'running';
-- ``owner`` names the owner lease (drsvc.intents.Owner) its process renews, and cleanup marks the
-- rows whose owner is gone 'interrupted'. NULL: a run of an older drsvc.

ALTER TABLE site_recoveries ADD COLUMN owner TEXT;
