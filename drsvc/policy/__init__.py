"""Policies: ``policies/*.yaml`` -> validated, immutable models, and when each policy runs.

A policy says which desktops (``selector``), when (``schedule``, cron in ``timezone``), what to
capture, how long to keep points per tier (``retention``, see ``drsvc.retention``), when points
go cold (``tiering``), the objectives (``objectives.rpo`` / ``.rto``), how drills sample it
(``drill``) and how a restored desktop is checked (``probe``).

``load_policies(paths)`` reads every file, collects **every** problem across all of them, and
either returns a complete ``PolicySet`` or raises one ``PolicyError`` whose ``details`` are
``"<file>: <field path>: <why>"`` lines. Nothing is half-applied.

The pieces (import from ``drsvc.policy``; the names below are re-exported here):

* ``schedule``  -- cron validation and ``CronSchedule`` (wall clock of the policy's zone, DST rules)
* ``fields``    -- validated scalar field types (durations, counts, cron, samples), the base model
* ``sections``  -- one model per policy section (selector, capture, retention, tiering, sites, ...)
* ``model``     -- ``Policy``, one validated file
* ``policyset`` -- ``PolicySet``, the loaded policies and their warnings
* ``loader``    -- reading files, YAML, error messages, ``load_policies``
"""

from __future__ import annotations

from drsvc.policy.fields import Count, Cron, Duration, PositiveCount, Sample
from drsvc.policy.loader import POLICY_SUFFIXES, load_policies, policy_files
from drsvc.policy.model import Policy
from drsvc.policy.policyset import PolicySet
from drsvc.policy.schedule import CronSchedule, normalize_cron
from drsvc.policy.sections import (
    S3_STORAGE_CLASSES,
    Capture,
    Drill,
    Objectives,
    PolicyRetentionRules,
    Probe,
    Retention,
    Selector,
    SiteCopy,
    Tiering,
    TierRules,
    Verify,
)

__all__ = [
    "POLICY_SUFFIXES",
    "S3_STORAGE_CLASSES",
    "Capture",
    "Count",
    "Cron",
    "CronSchedule",
    "Drill",
    "Duration",
    "Objectives",
    "Policy",
    "PolicyRetentionRules",
    "PolicySet",
    "PositiveCount",
    "Probe",
    "Retention",
    "Sample",
    "Selector",
    "SiteCopy",
    "TierRules",
    "Tiering",
    "Verify",
    "load_policies",
    "normalize_cron",
    "policy_files",
]
