"""nuScenes radar point layout and the one radar filter used by training and the node."""

from __future__ import annotations

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

# The devkit's defaults (RadarPointCloud.default_filters): valid, any dynamic property
# 0-6, unambiguous Doppler.
INVALID_STATES: tuple[int, ...] = (0,)
DYNPROP_STATES: tuple[int, ...] = tuple(range(7))
AMBIG_STATES: tuple[int, ...] = (3,)


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
