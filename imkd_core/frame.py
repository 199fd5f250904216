"""The one data contract: `SensorFrame` in, `Detections` out.

Both the offline pipeline (nuScenes through the devkit) and the ROS node (messages) build a
`SensorFrame`; the `Predictor` consumes it. Frames and boxes follow REP-103: x forward,
y left, z up, metres, radians, the ego frame `base_link` at the frame stamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The nuScenes rig's camera and radar order (imkd_core/rigs/nuscenes.yaml, the default rig). A
# SensorFrame holds N cameras in its rig's order (imkd_core.rig); for nuScenes N = 6 in this order.
CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
RADARS: tuple[str, ...] = (
    "RADAR_FRONT",
    "RADAR_FRONT_LEFT",
    "RADAR_FRONT_RIGHT",
    "RADAR_BACK_LEFT",
    "RADAR_BACK_RIGHT",
)
LIDAR = "LIDAR_TOP"

# The 10 nuScenes detection classes; `Detections.labels` index into this tuple.
CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)

# One RGB colour per class (CLASSES order), roughly the devkit's rendering palette: RViz markers
# of detections and ground truth, and the demo's plots.
CLASS_COLORS: np.ndarray = np.array([
    [1.00, 0.62, 0.00],  # car: orange
    [1.00, 0.39, 0.28],  # truck: tomato
    [0.91, 0.59, 0.48],  # construction_vehicle: dark salmon
    [1.00, 0.27, 0.00],  # bus: orange-red
    [1.00, 0.55, 0.00],  # trailer: dark orange
    [0.44, 0.50, 0.56],  # barrier: slate grey
    [1.00, 0.24, 0.39],  # motorcycle: red-pink
    [0.86, 0.08, 0.24],  # bicycle: crimson
    [0.00, 0.00, 0.90],  # pedestrian: blue
    [0.18, 0.31, 0.31],  # traffic_cone: dark slate
], dtype=np.float32)

# Columns of SensorFrame.radar and SensorFrame.lidar.
RADAR_COLUMNS: tuple[str, ...] = ("x", "y", "z", "rcs", "vx_comp", "vy_comp", "dt")
LIDAR_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity", "dt")
# Columns of a box row: centre (geometric), size (length along heading, width, height),
# yaw about +z from +x, velocity in the same frame (m/s).
BOX_COLUMNS: tuple[str, ...] = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")


class FrameError(ValueError):
    """A SensorFrame (or its parts) violates the data contract."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise FrameError(msg)


@dataclass
class SensorFrame:
    """All sensor input for one detection step, in the reference ego frame.

    stamp: the reference camera's time in ns (nuScenes: CAM_FRONT); base_link at this time is the reference frame.
    images: (N, H, W, 3) uint8 RGB in the rig's camera order (imkd_core.rig; nuScenes: CAMERAS,
        N = 6), zeros where camera_mask is False. Cameras of another size are resized to the
        reference camera's (H, W) with their K scaled (imkd_core.preprocess.resize_with_intrinsics).
    intrinsics: (N, 3, 3) pinhole K matching `images` (scale K with the image).
    cam_to_ego: (N, 4, 4) camera optical frame -> reference base_link (motion-compensated).
    camera_mask: (N,) bool, False for a camera that is missing from this frame.
    radar: (N, 7) float32, RADAR_COLUMNS, filtered and accumulated over sweeps.
    ego_to_global: (4, 4) base_link -> global (map) at `stamp`, for evaluation.
    lidar: (M, 5) float32, LIDAR_COLUMNS; training only, None at run time.
    token: the nuScenes sample token where known ("" otherwise).
    """

    stamp: int
    images: np.ndarray
    intrinsics: np.ndarray
    cam_to_ego: np.ndarray
    camera_mask: np.ndarray
    radar: np.ndarray
    ego_to_global: np.ndarray = field(default_factory=lambda: np.eye(4))
    lidar: np.ndarray | None = None
    token: str = ""

    def validate(self, n_cameras: int | None = None) -> SensorFrame:
        """Raise FrameError on any shape/dtype/finite violation (and, given `n_cameras`, a camera
        count other than the rig's); return self for chaining."""
        n = int(n_cameras) if n_cameras is not None else int(getattr(self.images, "shape", (0,))[0])
        _check(n >= 1, "a frame needs at least one camera")
        _check(isinstance(self.stamp, (int, np.integer)), f"stamp must be int ns, got {type(self.stamp)}")
        im = self.images
        _check(isinstance(im, np.ndarray) and im.ndim == 4 and im.shape[0] == n and im.shape[3] == 3,
               f"images must be ({n}, H, W, 3), got {getattr(im, 'shape', None)}")
        _check(im.dtype == np.uint8, f"images must be uint8, got {im.dtype}")
        _check(self.intrinsics.shape == (n, 3, 3), f"intrinsics must be ({n}, 3, 3), got {self.intrinsics.shape}")
        _check(self.cam_to_ego.shape == (n, 4, 4), f"cam_to_ego must be ({n}, 4, 4), got {self.cam_to_ego.shape}")
        _check(self.camera_mask.shape == (n,) and self.camera_mask.dtype == bool,
               f"camera_mask must be ({n},) bool, got {self.camera_mask.shape} {self.camera_mask.dtype}")
        _check(bool(self.camera_mask.any()), "at least one camera must be present")
        m = self.camera_mask
        _check(bool(np.isfinite(self.intrinsics[m]).all() and np.isfinite(self.cam_to_ego[m]).all()),
               "calibration of a present camera is not finite")
        _check(self.radar.ndim == 2 and self.radar.shape[1] == len(RADAR_COLUMNS),
               f"radar must be (N, {len(RADAR_COLUMNS)}), got {self.radar.shape}")
        _check(bool(np.isfinite(self.radar).all()), "radar contains NaN/inf")
        _check(self.ego_to_global.shape == (4, 4), "ego_to_global must be 4x4")
        if self.lidar is not None:
            _check(self.lidar.ndim == 2 and self.lidar.shape[1] == len(LIDAR_COLUMNS),
                   f"lidar must be (M, {len(LIDAR_COLUMNS)}), got {self.lidar.shape}")
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])


@dataclass
class Detections:
    """3D boxes in base_link at the frame stamp.

    boxes: (N, 9) float32, BOX_COLUMNS. scores: (N,) float32. labels: (N,) int64 into CLASSES.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    stamp: int = 0
    token: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, len(BOX_COLUMNS))
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        _check(len(self.boxes) == len(self.scores) == len(self.labels),
               f"boxes/scores/labels length mismatch: {len(self.boxes)}/{len(self.scores)}/{len(self.labels)}")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[i] for i in self.labels]

    @classmethod
    def empty(cls, stamp: int = 0, token: str = "") -> Detections:
        return cls(np.zeros((0, 9), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), stamp, token)

    def filter(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.stamp, self.token)


@dataclass
class GroundTruth:
    """Annotated boxes of one sample in base_link at the frame stamp (training/evaluation).

    boxes: (N, 9) like Detections.boxes (velocity NaN-free: 0 where the devkit has none).
    labels: (N,) int64 into CLASSES. attributes: nuScenes attribute name per box ("" if none).
    num_lidar_pts / num_radar_pts: the annotation's point counts (for filtering).
    """

    boxes: np.ndarray
    labels: np.ndarray
    attributes: list[str] = field(default_factory=list)
    num_lidar_pts: np.ndarray | None = None
    num_radar_pts: np.ndarray | None = None
    instance_tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)
