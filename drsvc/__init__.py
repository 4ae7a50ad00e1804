"""drsvc: backup and disaster recovery for container-based virtual desktops."""

__version__ = "0.1.0"
