"""Experiment trackers: one `Tracker` interface, one module per backend (tensorboard, wandb, trackio, mlflow).

metrics.jsonl is always written (steprl/run/reporting/metrics.py); `run.loggers` adds backends, each an optional extra
imported only when listed. Every backend gets the config once, every step's metrics, the held-out evaluations
as their own series with their 95% intervals, and a seeded sample of each step's episodes as a table.
"""

from steprl.run.reporting.trackers.base import EpisodeRow, EvalPoint, Tracker
from steprl.run.reporting.trackers.registry import check_installed, open_trackers

__all__ = ["EpisodeRow", "EvalPoint", "Tracker", "check_installed", "open_trackers"]
