"""The data of a run: nuScenes readers (train with LiDAR; val with LiDAR for the teacher only),
decoded at the JPEG reduction the Predictor and the ROS node use, and the DetectionDataset."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import Dataset

from imkd_core.config import IMKDConfig
from imkd_core.preprocess import collate


class Indexed(Dataset):
    """(index, sample) pairs, so validation knows each sample's token."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, dict]:
        return i, self.ds[i]


def collate_indexed(items: list[tuple[int, dict]]) -> tuple[list[int], dict[str, torch.Tensor]]:
    return [i for i, _ in items], collate([s for _, s in items])


def source_image_hw(nusc: Any, channel: str = "CAM_FRONT") -> tuple[int, int]:
    """(H, W) of the dataset's images of `channel`, the rig's reference camera (sample_data table)."""
    for sd in nusc.sample_data:
        if sd.get("channel") == channel and sd.get("height"):
            return int(sd["height"]), int(sd["width"])
    return 900, 1600


def build_readers(args: argparse.Namespace, cfg: IMKDConfig) -> tuple[Any, Any | None]:
    """(train reader with LiDAR, val reader or None). Images are decoded at the JPEG reduction the
    Predictor/ROS node use for this input size; the student's val reader loads no LiDAR."""
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
    from imkd_core.preprocess import jpeg_reduction
    from imkd_core.rig import load_rig

    rig = load_rig(cfg.data.rig)
    nusc = load_nuscenes(args.dataroot, args.version)
    reduction = jpeg_reduction(source_image_hw(nusc, rig.reference_camera), tuple(cfg.data.image_size))
    common = {"radar_sweeps": cfg.data.radar_sweeps, "lidar_sweeps": cfg.data.lidar_sweeps,
              "image_reduction": reduction, "nusc": nusc, "rig": rig,
              "input_size": tuple(cfg.data.image_size)}
    train_reader = NuScenesReader(args.dataroot, args.version, scenes=args.train_scenes, load_lidar=True, **common)
    val_reader = None
    if args.val_scenes:
        val_reader = NuScenesReader(args.dataroot, args.version, scenes=args.val_scenes,
                                    load_lidar=args.model == "teacher", **common)
    return train_reader, val_reader


def make_dataset(reader: Any, cfg: IMKDConfig, train: bool, seed: int) -> Dataset:
    from imkd_core.data.dataset import DetectionDataset

    return DetectionDataset(reader, cfg.data, x_range=cfg.grid.x_bound, y_range=cfg.grid.y_bound,
                            train=train, seed=seed)
