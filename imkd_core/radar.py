"""nuScenes radar point layout, the one radar filter and the one sweep-selection rule used by
training, offline evaluation and the ROS node."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The 18 fields of a nuScenes radar point (Continental ARS 408), in file order, with the
# PCD type/size of each. `RadarPointCloud.from_file` turns them into an 18 x N float32 array.
RADAR_PCD_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp",
    "is_quality_valid", "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0",
    "vx_rms", "vy_rms",
)
RADAR_PCD_TYPES: tuple[str, ...] = ("F", "F", "F", "I", "I", "F", "F", "F", "F", "F",
                                    "I", "I", "I", "I", "I", "I", "I", "I")
RADAR_PCD_SIZES: tuple[int, ...] = (4, 4, 4, 1, 2, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1)
RADAR_FIELD_INDEX = {name: i for i, name in enumerate(RADAR_PCD_FIELDS)}
# What the model reads of a radar point, and the ARS408 state fields the default filter tests.
RADAR_MODEL_FIELDS: tuple[str, ...] = ("x", "y", "z", "rcs", "vx_comp", "vy_comp")
RADAR_FILTER_FIELDS: tuple[str, ...] = ("dyn_prop", "ambig_state", "invalid_state")

# The devkit's defaults (RadarPointCloud.default_filters): valid, any dynamic property
# 0-6, unambiguous Doppler.
INVALID_STATES: tuple[int, ...] = (0,)
DYNPROP_STATES: tuple[int, ...] = tuple(range(7))
AMBIG_STATES: tuple[int, ...] = (3,)


# Values of an absent field in the canonical (18, N) array: ones every filter rule keeps, so a rule
# applies only to radars that publish its field (and nothing else reads them).
_NEUTRAL = {"invalid_state": INVALID_STATES[0], "dyn_prop": DYNPROP_STATES[0], "ambig_state": AMBIG_STATES[0]}


def canonical_radar(columns: dict[str, np.ndarray], fields: dict[str, str], n: int,
                    dtype: type = np.float64) -> np.ndarray:
    """A radar's own fields -> the (18, N) RADAR_PCD_FIELDS array every consumer reads.

    columns: message/file field name -> (N,) values; fields: RADAR_PCD_FIELDS column -> its
    source field name (a rig's RadarSpec.fields). Unmapped columns are 0, the filter fields the
    values their rule keeps (`_NEUTRAL`)."""
    out = np.zeros((len(RADAR_PCD_FIELDS), n), dtype=dtype)
    for name, value in _NEUTRAL.items():
        out[RADAR_FIELD_INDEX[name]] = value
    for col, src in fields.items():
        out[RADAR_FIELD_INDEX[col]] = columns[src]
    return out


def radar_filter_mask(points: np.ndarray) -> np.ndarray:
    """Boolean keep-mask over the columns of an (18, N) radar array (devkit default filters)."""
    if points.ndim != 2 or points.shape[0] != len(RADAR_PCD_FIELDS):
        raise ValueError(f"radar array must be (18, N), got {points.shape}")
    inv = points[RADAR_FIELD_INDEX["invalid_state"]]
    dyn = points[RADAR_FIELD_INDEX["dyn_prop"]]
    amb = points[RADAR_FIELD_INDEX["ambig_state"]]
    # The allowed sets are {0}, 0..6 and {3}: plain comparisons are ~5x faster than np.isin.
    keep = (inv == INVALID_STATES[0]) & (dyn >= DYNPROP_STATES[0]) & (dyn <= DYNPROP_STATES[-1])
    keep &= amb == AMBIG_STATES[0]
    keep &= np.isfinite(points[:3]).all(axis=0)
    return keep


def radar_features(points: np.ndarray, sensor_to_ego: np.ndarray, dt: float) -> np.ndarray:
    """(18, N) radar points of one sweep in the sensor frame -> (K, 7) SensorFrame rows.

    Applies the default filters, moves x/y/z into the reference ego frame with `sensor_to_ego`
    (4x4, already motion-compensated to the reference stamp) and rotates the compensated
    velocities (a direction: rotation only). `dt` = reference stamp - sweep stamp, seconds.
    """
    pts = points[:, radar_filter_mask(points)]
    xyz = sensor_to_ego[:3, :3] @ pts[:3] + sensor_to_ego[:3, 3:4]
    v = np.zeros((3, pts.shape[1]), dtype=np.float64)
    v[0] = pts[RADAR_FIELD_INDEX["vx_comp"]]
    v[1] = pts[RADAR_FIELD_INDEX["vy_comp"]]
    v = sensor_to_ego[:3, :3] @ v
    out = np.empty((pts.shape[1], 7), dtype=np.float32)
    out[:, 0:3] = xyz.T
    out[:, 3] = pts[RADAR_FIELD_INDEX["rcs"]]
    out[:, 4:6] = v[:2].T
    out[:, 6] = dt
    return out


# ----------------------------------------------------------------------------- sweep selection
_MS = 1_000_000


@dataclass(frozen=True)
class SweepRule:
    """Which sweeps of one radar a frame at stamp t takes; shared by the offline reader
    (training, evaluation) and the ROS node's assembler, so both build the same frames.

    mode "closing": the sweeps up to the first one stamped at or after t - tolerance (the
    closing sweep), never one later than t + timeout. nuScenes' keyframe radar sweep is the one
    nearest the LiDAR time, which a camera+radar car does not have; on the real v1.0-mini
    table (405 radar keyframes) this rule picks that sweep for 97.8 % of them (1 ms
    tolerance; "nearest to CAM_FRONT + 37 ms" gets 97.5 %). mode "causal": the sweeps stamped
    at or before t + tolerance (no waiting). Then at most `sweeps` of them, walking back from
    the newest, none older than t - max_age and none beyond a gap between consecutive sweeps
    longer than max_gap (~13 Hz radars: a 2 Hz keyframe-only timeline keeps one sweep).
    """

    sweeps: int = 6
    mode: str = "closing"
    tolerance_ns: int = 1 * _MS
    timeout_ns: int = 100 * _MS
    max_gap_ns: int = 300 * _MS
    max_age_ns: int = 1_000 * _MS

    def __post_init__(self) -> None:
        if self.mode not in ("closing", "causal"):
            raise ValueError(f"radar sweep mode must be 'closing' or 'causal', got {self.mode!r}")
        if int(self.sweeps) < 1:
            raise ValueError(f"radar sweeps must be >= 1, got {self.sweeps}")
        for name in ("tolerance_ns", "timeout_ns", "max_gap_ns", "max_age_ns"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"radar sweep rule {name} must be >= 0, got {getattr(self, name)}")

    def end(self, stamps: Sequence[int], t: int, complete: bool) -> int | None:
        """End index (exclusive) into the sorted `stamps` for a frame at t.

        complete: `stamps` holds every sweep up to t + timeout (the offline reader; the node
        once its input time passed that). Otherwise None means "a later sweep could still
        change the choice": the node waits.
        """
        if not len(stamps):
            return 0 if complete else None
        limit = bisect.bisect_right(stamps, t + self.timeout_ns)
        if self.mode == "closing":
            j = bisect.bisect_left(stamps, t - self.tolerance_ns)
            if j < len(stamps):
                return min(j + 1, limit)
        else:
            end = bisect.bisect_right(stamps, t + self.tolerance_ns)
            if end < len(stamps):
                return end
        return limit if complete else None

    def start(self, stamps: Sequence[int], t: int, end: int) -> int:
        """Start index for a frame at t whose sweeps end at `end` (see the class doc)."""
        lo = max(0, end - int(self.sweeps))
        lo = bisect.bisect_left(stamps, t - self.max_age_ns, lo, end)
        if end - lo > 1:
            gaps = np.diff(np.asarray(stamps[lo:end], dtype=np.int64))
            breaks = np.flatnonzero(gaps > self.max_gap_ns)
            if breaks.size:
                lo += int(breaks[-1]) + 1
        return lo

    def select(self, stamps: Sequence[int], t: int) -> range:
        """Indices of the chosen sweeps, given every sweep near t (sorted stamps, ns)."""
        end = self.end(stamps, t, complete=True)
        return range(self.start(stamps, t, end), end)
