"""Plain dataclass configs, validated on construction, YAML round-trip.

`DataConfig` and `AugConfig` are fixed (data pipeline contract). The model helper extends this
module with ModelConfig / DistillConfig and the named presets `tiny()` and
`paper_r50_256x704()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration is inconsistent or malformed."""


@dataclass
class AugConfig:
    """Training-time augmentation ranges (all off = evaluation)."""

    enabled: bool = True
    # image: extra random resize factor range around the default fit scale, crop jitter, flip
    resize_lim: tuple[float, float] = (0.94, 1.11)
    crop_jitter: float = 0.1   # fraction of the spare rows/cols a crop may move
    image_flip: bool = True
    # BEV: rotation (rad), scale, flips of x and y
    rot_lim: tuple[float, float] = (-0.3925, 0.3925)
    scale_lim: tuple[float, float] = (0.95, 1.05)
    flip_x_prob: float = 0.5
    flip_y_prob: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.resize_lim[0] <= self.resize_lim[1]):
            raise ConfigError(f"aug.resize_lim must be 0 < lo <= hi, got {self.resize_lim}")
        if not (0 < self.scale_lim[0] <= self.scale_lim[1]):
            raise ConfigError(f"aug.scale_lim must be 0 < lo <= hi, got {self.scale_lim}")
        if self.rot_lim[0] > self.rot_lim[1]:
            raise ConfigError(f"aug.rot_lim must be lo <= hi, got {self.rot_lim}")
        for name in ("flip_x_prob", "flip_y_prob", "crop_jitter"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"aug.{name} must be in [0, 1], got {v}")


@dataclass
class DataConfig:
    """What the readers produce: input image size and sweep counts."""

    image_size: tuple[int, int] = (128, 352)   # (H, W) model input
    radar_sweeps: int = 6
    lidar_sweeps: int = 10
    aug: AugConfig = field(default_factory=AugConfig)

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise ConfigError(f"data.image_size must be positive multiples of 32, got {self.image_size}")
        if self.radar_sweeps < 1 or self.lidar_sweeps < 1:
            raise ConfigError("data.radar_sweeps and data.lidar_sweeps must be >= 1")
