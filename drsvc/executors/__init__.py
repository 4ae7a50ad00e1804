"""Where a scheduled backup run executes: in this process (``local``) or as Kubernetes Jobs.

``[scheduler] executor = "local"`` (default) runs ``BackupJob`` in the scheduler's process.
``executor = "kubernetes"`` hands the run to ``drsvc.executors.kubernetes.KubernetesExecutor``:
one node-agent Job per node holding desktops of the policy, because a CRI-O checkpoint archive is
written on the desktop's node and must be streamed from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drsvc.config import Config
    from drsvc.executors.kubernetes import KubernetesExecutor


def open_executor(config: Config, **options: Any) -> KubernetesExecutor:
    """The remote executor the config names (only ``kubernetes`` exists; ``local`` needs none)."""
    if config.scheduler.executor != "kubernetes":
        raise ValueError(f"executor {config.scheduler.executor!r} runs in-process: use BackupJob")
    from drsvc.executors.kubernetes import KubernetesExecutor

    return KubernetesExecutor.from_environment(**options)
