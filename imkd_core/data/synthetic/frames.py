"""Random nuScenes-like SensorFrames without a dataset: for model tests, benchmarks, the node's
warm-up and the graph backends' tracing example (the generator in this package writes datasets).

A 6-camera rig with nuScenes-like intrinsics/extrinsics, noise images, planted boxes of all
classes, radar returns on and around the boxes, LiDAR on the ground and the boxes (boxes
brighter than the road). Batches go through the real preprocessing (frame_to_inputs + collate).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from imkd_core.config import IMKDConfig
from imkd_core.frame import CAMERAS, CLASSES, GroundTruth, SensorFrame
from imkd_core.preprocess import collate, frame_to_inputs

# (yaw deg, x, y, z, focal at 1600x900) per camera, CAMERAS order.
_RIG = ((0.0, 1.7, 0.0, 1.5, 1266.0), (-55.0, 1.5, -0.5, 1.5, 1260.0), (-110.0, 1.0, -0.5, 1.5, 1256.0),
        (180.0, 0.0, 0.0, 1.5, 800.0), (110.0, 1.0, 0.5, 1.5, 1256.0), (55.0, 1.5, 0.5, 1.5, 1260.0))
# Typical (l, w, h) per class, CLASSES order.
CLASS_SIZES = np.array([(4.6, 1.9, 1.7), (7.0, 2.5, 3.0), (6.0, 2.8, 3.0), (11.0, 2.9, 3.5), (12.0, 2.9, 3.8),
                        (0.5, 2.5, 1.0), (2.1, 0.8, 1.5), (1.8, 0.6, 1.3), (0.7, 0.7, 1.8), (0.4, 0.4, 1.0)],
                       dtype=np.float32)
_OPT_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def nuscenes_like_rig(src_hw: tuple[int, int] = (450, 800)) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics (6, 3, 3), cam_to_ego (6, 4, 4)) for images of size src_hw."""
    s = src_hw[1] / 1600.0
    K = np.zeros((len(CAMERAS), 3, 3))
    T = np.zeros((len(CAMERAS), 4, 4))
    for i, (yaw, x, y, z, f) in enumerate(_RIG):
        K[i] = [[f * s, 0, src_hw[1] / 2], [0, f * s, src_hw[0] / 2], [0, 0, 1]]
        a = math.radians(yaw)
        Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        T[i, :3, :3] = Rz @ _OPT_TO_BODY
        T[i, :3, 3] = (x, y, z)
        T[i, 3, 3] = 1
    return K, T


def _points_in_boxes(rng: np.random.Generator, boxes: np.ndarray, per_box: int) -> np.ndarray:
    """Uniform points inside each box (G * per_box, 3)."""
    G = len(boxes)
    u = rng.uniform(-0.5, 0.5, (G, per_box, 3)) * boxes[:, None, 3:6]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = boxes[:, None, 0] + c * u[..., 0] - s * u[..., 1]
    y = boxes[:, None, 1] + s * u[..., 0] + c * u[..., 1]
    z = boxes[:, None, 2] + u[..., 2]
    return np.stack([x, y, z], -1).reshape(-1, 3)


def synthetic_frame(seed: int = 0, n_boxes: int = 12, src_hw: tuple[int, int] = (450, 800),
                    n_lidar: int = 20000, n_radar_clutter: int = 100, with_lidar: bool = True,
                    extent: float = 40.0) -> tuple[SensorFrame, GroundTruth]:
    """One random frame + its ground truth; every class appears when n_boxes >= 10."""
    rng = np.random.default_rng(seed)
    K, T = nuscenes_like_rig(src_hw)
    images = rng.integers(0, 256, (len(CAMERAS), src_hw[0], src_hw[1], 3), dtype=np.uint8)
    labels = np.concatenate([np.arange(min(n_boxes, len(CLASSES))),
                             rng.integers(0, len(CLASSES), max(0, n_boxes - len(CLASSES)))]).astype(np.int64)
    # centres on a jittered 14 m lattice so boxes never overlap
    lattice = np.array([(x, y) for x in np.arange(-extent, extent + 1e-6, 14.0)
                        for y in np.arange(-extent, extent + 1e-6, 14.0) if abs(x) > 5 or abs(y) > 5])
    pick = rng.choice(len(lattice), size=n_boxes, replace=False)
    xy = lattice[pick] + rng.uniform(-1.5, 1.5, (n_boxes, 2))
    size = CLASS_SIZES[labels] * rng.uniform(0.9, 1.1, (n_boxes, 1))
    yaw = rng.uniform(-math.pi, math.pi, n_boxes)
    vel = rng.normal(0, 2.0, (n_boxes, 2)) * (labels[:, None] < 5)
    boxes = np.concatenate([xy, size[:, 2:3] / 2, size, yaw[:, None], vel], 1).astype(np.float32)
    # radar: a few returns per box (+ RCS by size) and clutter
    per = 6
    rp = _points_in_boxes(rng, boxes, per)
    rp[:, 2] = rng.uniform(0.2, 1.0, len(rp))
    rcs = np.repeat(np.log(boxes[:, 3] * boxes[:, 4] + 1) * 8, per) + rng.normal(0, 1, len(rp))
    rv = np.repeat(boxes[:, 7:9], per, 0)
    clutter = np.stack([rng.uniform(-50, 50, n_radar_clutter), rng.uniform(-50, 50, n_radar_clutter),
                        rng.uniform(0, 1, n_radar_clutter)], 1)
    radar = np.concatenate([
        np.concatenate([rp, rcs[:, None], rv, rng.uniform(0, 0.4, (len(rp), 1))], 1),
        np.concatenate([clutter, rng.normal(-5, 3, (n_radar_clutter, 1)), rng.normal(0, 0.5, (n_radar_clutter, 2)),
                        rng.uniform(0, 0.4, (n_radar_clutter, 1))], 1)]).astype(np.float32)
    lidar = None
    if with_lidar:
        n_box = min(n_lidar // 2, 200 * n_boxes)
        bp = _points_in_boxes(rng, boxes, max(1, n_box // max(n_boxes, 1)))
        n_ground = n_lidar - len(bp)
        r = np.sqrt(rng.uniform(2.0**2, 50.0**2, n_ground))
        th = rng.uniform(-math.pi, math.pi, n_ground)
        gp = np.stack([r * np.cos(th), r * np.sin(th), rng.normal(0, 0.05, n_ground)], 1)
        pts = np.concatenate([bp, gp])
        inten = np.concatenate([rng.uniform(40, 120, len(bp)), rng.uniform(0, 15, n_ground)])
        dt = rng.choice(np.arange(10) * 0.05, len(pts))
        lidar = np.concatenate([pts, inten[:, None], dt[:, None]], 1).astype(np.float32)
    frame = SensorFrame(stamp=int(1e9) + seed, images=images, intrinsics=K, cam_to_ego=T,
                        camera_mask=np.ones(len(CAMERAS), bool), radar=radar, lidar=lidar, token=f"synthetic-{seed}")
    return frame.validate(), GroundTruth(boxes=boxes, labels=labels)


def synthetic_batch(cfg: IMKDConfig, batch_size: int = 2, seed: int = 0, with_lidar: bool = True,
                    with_gt: bool = True, **frame_kw) -> dict[str, torch.Tensor]:
    """A collated batch of synthetic frames through the real preprocessing (no augmentation)."""
    samples = []
    for b in range(batch_size):
        frame, gt = synthetic_frame(seed=seed + b, with_lidar=with_lidar, **frame_kw)
        samples.append(frame_to_inputs(frame, cfg.data.image_size, gt=gt if with_gt else None))
    return collate(samples)
