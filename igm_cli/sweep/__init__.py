"""Sweeps (`igm sweep`): grid or random search over any preset key × seeds.

Trials run in parallel, resume, shard over machines and merge; the summary is mean ± std
per setting with a heatmap (the paper's Figure 3) or a line plot.

Modules: `grid` parses arguments, `plan` expands and validates trials, `runner` runs them,
`summary` and `plots` aggregate, `commands` is what the CLI calls.
"""

from .commands import DEFAULT_METRIC, SweepInterrupted, build_report, collect_sweeps, run_sweep
from .plan import SweepPlan, Trial, plan_sweep

__all__ = [
    "DEFAULT_METRIC",
    "SweepInterrupted",
    "SweepPlan",
    "Trial",
    "build_report",
    "collect_sweeps",
    "plan_sweep",
    "run_sweep",
]
