-- drsvc catalog, migration 6: where each restore wrote, and who allowed writing into another
-- desktop's target (drsvc/targets.py). A restore writes only into its desktop's own container and
-- namespace or a clone name nobody owns; replacing another desktop (usually another tenant's)
-- needs `restore --allow-cross-tenant`, and the catalog keeps who allowed it and when.

ALTER TABLE restores ADD COLUMN target_container TEXT;   -- the container the restore created
ALTER TABLE restores ADD COLUMN target_volume TEXT;      -- the namespace it wrote
ALTER TABLE restores ADD COLUMN foreign_owner TEXT;      -- the desktop whose target it replaced (override)
ALTER TABLE restores ADD COLUMN foreign_tenant TEXT;     -- that desktop's tenant
ALTER TABLE restores ADD COLUMN allowed_by TEXT;         -- who passed --allow-cross-tenant
ALTER TABLE restores ADD COLUMN allowed_at TEXT;         -- when (ISO-8601 UTC)
