"""The plans documents now live in :mod:`autocmr.documents.plans`, below every layer that reads them (networks,
preprocessing, planners, trainers, inference); this module keeps the old import path working."""
from __future__ import annotations

from autocmr.documents.plans import (
    CPU_PLANS_NAME,
    DEFAULT_PLANS_NAME,
    PLANS_SCHEMA_VERSION,
    Configuration,
    IntensityStats,
    Plans,
    Resampling,
    Topology,
)

__all__ = ["CPU_PLANS_NAME", "DEFAULT_PLANS_NAME", "PLANS_SCHEMA_VERSION", "Configuration", "IntensityStats",
           "Plans", "Resampling", "Topology"]
