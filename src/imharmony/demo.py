"""The end-to-end demo; it lives in :mod:`imharmony.workflows.demo`, re-exported here."""

from .workflows.demo import (
    DEMO_STEPS,
    DISEASE_FEATURES,
    SCENARIOS,
    DemoResult,
    run_demo,
    travelling_step,
)

__all__ = ["DEMO_STEPS", "DISEASE_FEATURES", "SCENARIOS", "DemoResult", "run_demo",
           "travelling_step"]
