"""Replay: what would regionguard have done? Production's own probe cadence,
health engine and reconciler in simulated time, against a timeline of faults
(or against recorded probe results), in seconds of wall time for hours of
simulated time.

- :mod:`~controlplane.replay.timeline` -- the timeline model and its parsing;
- :mod:`~controlplane.replay.network` -- the simulated network (probe outcomes
  from the fault model);
- :mod:`~controlplane.replay.run` -- the run: production's components on a
  simulated clock;
- :mod:`~controlplane.replay.report` -- scoring (summary, false changes,
  flaps) and the result as JSON or text.
"""

from controlplane.replay.network import ProbeModel
from controlplane.replay.report import ReplayResult, Trace
from controlplane.replay.run import DEFAULT_START, Leader, SimClock, run_replay
from controlplane.replay.timeline import (
    SCENARIO_DIR,
    Baseline,
    Noise,
    OverrideEvent,
    Timeline,
    TimelineError,
    builtin_scenarios,
    load_timeline,
    resolve_timeline,
    scenario_path,
)

__all__ = [
    "DEFAULT_START",
    "SCENARIO_DIR",
    "Baseline",
    "Leader",
    "Noise",
    "OverrideEvent",
    "ProbeModel",
    "ReplayResult",
    "SimClock",
    "Timeline",
    "TimelineError",
    "Trace",
    "builtin_scenarios",
    "load_timeline",
    "resolve_timeline",
    "run_replay",
    "scenario_path",
]
