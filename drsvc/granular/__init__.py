"""Granular restore: browse a point's objects and files, bring single ones back, mount points.

Everything here answers from a point's manifest first (``listing``: ``points ls`` / ``points
diff``), reads one object's bytes from the fastest copy (``reader``: the pool snapshot while it
exists, else hot chunks, else cold chunks, each chunk fetched only when needed), restores single
objects into a running desktop's own namespace (``objects``), and serves points as a read-only
FUSE file system (``fusefs``). Names from manifests are hostile: ``names`` maps them to safe
relative paths for ``--to-dir`` and the mount. ``scope`` holds the tenant check and the audit
record every command here writes.
"""
