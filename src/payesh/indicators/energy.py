"""Energy-use indicators per tile and month (SPEC §5): night lights, land surface heat,
an electricity estimate calibrated on reported consumption, and suspect loads.

A facade: the indicators live in focused modules, and their public names are
re-exported here, so ``from payesh.indicators.energy import ntl_anomaly`` keeps working.

- :mod:`payesh.indicators.nightlights`: night lights per tile (:func:`ntl_tile_weights`,
  :func:`ntl_tile_indicators`, :data:`LIT_THRESHOLD`, :data:`MIN_CLEAR_NIGHTS`,
  :data:`MIN_VALID`);
- :mod:`payesh.indicators.anomaly`: seasonal baselines and anomalies over time
  (:func:`ntl_baseline`, :func:`ntl_anomaly`, :data:`TRAILING_MONTHS`, :data:`REL_FLOOR`);
- :mod:`payesh.indicators.trend`: night-light trends (:func:`ntl_trend`);
- :mod:`payesh.indicators.lst`: land surface temperature per tile
  (:func:`lst_tile_indicators`);
- :mod:`payesh.indicators.electricity`: the electricity estimate
  (:func:`electricity_estimate`, :class:`NonNegativeLinear`, :data:`CV_BLOCK_MONTHS`);
- :mod:`payesh.indicators.suspect`: suspected unregistered loads (:func:`load_suspect`,
  :data:`LIGHT_Z`, :data:`HEAT_DELTA`, :data:`GROWTH_MIN`, ``EVIDENCE_*``).

Code inside payesh imports from those modules; private helpers are only there.
"""

from __future__ import annotations

from payesh.indicators.anomaly import REL_FLOOR, ntl_anomaly, ntl_baseline
from payesh.indicators.anomaly import TRAILING_MONTHS as TRAILING_MONTHS
from payesh.indicators.electricity import (
    CV_BLOCK_MONTHS,
    NonNegativeLinear,
    electricity_estimate,
)
from payesh.indicators.lst import lst_tile_indicators
from payesh.indicators.nightlights import (
    LIT_THRESHOLD,
    MIN_CLEAR_NIGHTS,
    MIN_VALID,
    ntl_tile_indicators,
    ntl_tile_weights,
)
from payesh.indicators.suspect import (
    EVIDENCE_HEAT,
    EVIDENCE_LIGHT,
    EVIDENCE_STATIC,
    load_suspect,
)
from payesh.indicators.suspect import GROWTH_MIN as GROWTH_MIN
from payesh.indicators.suspect import HEAT_DELTA as HEAT_DELTA
from payesh.indicators.suspect import LIGHT_Z as LIGHT_Z
from payesh.indicators.trend import ntl_trend

# the same list as before the split (TRAILING_MONTHS, LIGHT_Z, HEAT_DELTA and GROWTH_MIN
# were public but not in it; they are re-exported above all the same)
__all__ = [
    "CV_BLOCK_MONTHS",
    "EVIDENCE_HEAT",
    "EVIDENCE_LIGHT",
    "EVIDENCE_STATIC",
    "LIT_THRESHOLD",
    "MIN_CLEAR_NIGHTS",
    "MIN_VALID",
    "REL_FLOOR",
    "NonNegativeLinear",
    "electricity_estimate",
    "load_suspect",
    "lst_tile_indicators",
    "ntl_anomaly",
    "ntl_baseline",
    "ntl_tile_indicators",
    "ntl_tile_weights",
    "ntl_trend",
]
