"""Training / evaluation torch Dataset over a reader of (SensorFrame, GroundTruth) pairs.

Every sample goes through `preprocess.frame_to_inputs`, the one preprocessing path shared with the
Predictor and the ROS node. Training augmentation is expressed only through its parameters: one
`ImageAug` per camera (resize around the default fit scale, crop jitter, flip) and one 4x4 BEV
matrix per sample (rotation, scale, flips), which frame_to_inputs applies to images + intrinsics
and to radar, LiDAR, boxes, velocities and extrinsics together, so geometry stays consistent.
Random draws depend only on (seed, epoch, index): DDP ranks and resumed runs see the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset

from imkd_core.config import AugConfig, DataConfig
from imkd_core.frame import CAMERAS, GroundTruth, SensorFrame
from imkd_core.preprocess import ImageAug, bev_aug_matrix, collate, default_image_aug, frame_to_inputs

__all__ = ["DetectionDataset", "FrameReader", "collate", "filter_gt", "sample_bev_aug", "sample_image_aug"]


class FrameReader(Protocol):
    """What the Dataset needs from a reader (NuScenesReader, or any other source of frames)."""

    sample_tokens: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[SensorFrame, GroundTruth]: ...


def sample_image_aug(rng: np.random.Generator, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                     aug: AugConfig) -> ImageAug:
    """One random ImageAug: scale = fit scale x U(resize_lim); the crop starts from the evaluation
    crop (bottom rows, centred columns) and moves by up to crop_jitter of the spare rows/cols."""
    base = default_image_aug(src_hw, dst_hw)
    scale = base.scale * float(rng.uniform(*aug.resize_lim))
    new_h = int(round(src_hw[0] * scale))
    new_w = int(round(src_hw[1] * scale))
    spare_h, spare_w = max(new_h - dst_hw[0], 0), max(new_w - dst_hw[1], 0)
    top = spare_h - int(round(rng.uniform(0.0, aug.crop_jitter) * spare_h))
    left = int(round(spare_w / 2 + rng.uniform(-1.0, 1.0) * aug.crop_jitter * spare_w / 2))
    flip = bool(aug.image_flip and rng.random() < 0.5)
    return ImageAug(scale=scale, top=int(np.clip(top, 0, spare_h)), left=int(np.clip(left, 0, spare_w)), flip=flip)


def sample_bev_aug(rng: np.random.Generator, aug: AugConfig) -> np.ndarray:
    """One random 4x4 BEV matrix from the rotation / scale / flip ranges."""
    rot = float(rng.uniform(*aug.rot_lim))
    scale = float(rng.uniform(*aug.scale_lim))
    flip_x = bool(rng.random() < aug.flip_x_prob)
    flip_y = bool(rng.random() < aug.flip_y_prob)
    return bev_aug_matrix(rot, scale, flip_x, flip_y)


def filter_gt(gt: GroundTruth, keep: np.ndarray) -> GroundTruth:
    """GroundTruth restricted to a boolean mask (all per-box fields together)."""
    keep = np.asarray(keep, dtype=bool)
    idx = np.flatnonzero(keep)
    return GroundTruth(
        boxes=gt.boxes[keep],
        labels=gt.labels[keep],
        attributes=[gt.attributes[i] for i in idx] if gt.attributes else [],
        num_lidar_pts=None if gt.num_lidar_pts is None else gt.num_lidar_pts[keep],
        num_radar_pts=None if gt.num_radar_pts is None else gt.num_radar_pts[keep],
        instance_tokens=[gt.instance_tokens[i] for i in idx] if gt.instance_tokens else [],
    )


class DetectionDataset(Dataset):
    """reader samples -> `frame_to_inputs` dicts (use `collate` as the DataLoader's collate_fn).

    x_range / y_range: the BEV grid bounds (metres, ego frame). GT boxes whose centre leaves them
    after the BEV augmentation are dropped (always: they cannot be targets); in training, boxes
    without any LiDAR or radar point are dropped as well. train=False (or aug.enabled False)
    gives the evaluation transform: default fit-and-crop, identity BEV matrix.
    """

    def __init__(
        self,
        reader: FrameReader,
        data_cfg: DataConfig,
        x_range: tuple[float, float] = (-51.2, 51.2),
        y_range: tuple[float, float] = (-51.2, 51.2),
        train: bool = True,
        seed: int = 0,
    ) -> None:
        self.reader = reader
        self.cfg = data_cfg
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.y_range = (float(y_range[0]), float(y_range[1]))
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.reader)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before each epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    @property
    def augment(self) -> bool:
        return self.train and self.cfg.aug.enabled

    def rng(self, index: int) -> np.random.Generator:
        """The generator of one (seed, epoch, index): independent of workers, ranks and order."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def draw_augmentation(self, index: int, src_hw: tuple[int, int]) -> tuple[list[ImageAug] | None, np.ndarray | None]:
        """(per-camera ImageAugs, BEV matrix) of sample `index` this epoch; (None, None) without aug."""
        if not self.augment:
            return None, None
        rng = self.rng(index)
        n = len(getattr(self.reader, "cameras", CAMERAS))  # the reader's rig
        augs = [sample_image_aug(rng, src_hw, self.cfg.image_size, self.cfg.aug) for _ in range(n)]
        return augs, sample_bev_aug(rng, self.cfg.aug)

    def _in_range(self, boxes: np.ndarray) -> np.ndarray:
        x, y = boxes[:, 0], boxes[:, 1]
        return (x >= self.x_range[0]) & (x < self.x_range[1]) & (y >= self.y_range[0]) & (y < self.y_range[1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame, gt = self.reader[index]
        if self.train and gt.num_lidar_pts is not None and gt.num_radar_pts is not None:
            gt = filter_gt(gt, (gt.num_lidar_pts + gt.num_radar_pts) > 0)
        augs, bev = self.draw_augmentation(index, frame.image_size)
        out = frame_to_inputs(frame, self.cfg.image_size, image_augs=augs, bev_aug=bev, gt=gt)
        keep = self._in_range(out["gt_boxes"])
        out["gt_boxes"], out["gt_labels"] = out["gt_boxes"][keep], out["gt_labels"][keep]
        return out

    @staticmethod
    def collate(samples: Sequence[dict[str, np.ndarray]]):
        """`preprocess.collate` (the one batching path)."""
        return collate(list(samples))
