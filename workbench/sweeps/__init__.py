"""Sweeps: studies over config fields × seeds, run locally or on Ray Tune (with Optuna), tabulated as mean ± s.e."""
from .results import metric_value, summarize, to_latex, to_markdown, trials_table
from .runner import DONE_STATUSES, StudyResult, SweepEvent, read_trials, run_study, stop_study
from .study import BACKENDS, PRUNERS, SEARCHES, ParamSpec, StudyConfig, Trial

__all__ = ["StudyConfig", "ParamSpec", "Trial", "SEARCHES", "BACKENDS", "PRUNERS", "run_study", "stop_study",
           "read_trials", "SweepEvent", "StudyResult", "DONE_STATUSES", "trials_table", "summarize", "to_markdown",
           "to_latex", "metric_value"]
