"""Plain dataclass configs, validated on construction, YAML round-trip.

`DataConfig` and `AugConfig` are fixed (data pipeline contract). The model library adds
GridConfig / ModelConfig / DistillConfig, the top-level IMKDConfig (to_dict/from_dict/YAML) and
the named presets `tiny()` and `paper_r50_256x704()`; `get_config(name_or_yaml_path)`.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from imkd_core.errors import UserError
from imkd_core.frame import CLASSES


class ConfigError(UserError, ValueError):
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
    """What the readers produce: input image size, sweep counts and the sensor rig."""

    image_size: tuple[int, int] = (128, 352)   # (H, W) model input
    radar_sweeps: int = 6
    lidar_sweeps: int = 10
    aug: AugConfig = field(default_factory=AugConfig)
    rig: str = "nuscenes"   # imkd_core.rig: a shipped rig's name or a rig YAML path

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise ConfigError(f"data.image_size must be positive multiples of 32, got {self.image_size}")
        if self.radar_sweeps < 1 or self.lidar_sweeps < 1:
            raise ConfigError("data.radar_sweeps and data.lidar_sweeps must be >= 1")
        if not isinstance(self.rig, str) or not self.rig.strip():
            raise ConfigError(f"data.rig must be a rig name or YAML path, got {self.rig!r}")


# ============================================================================ model configs
# (extension by the model library; DataConfig/AugConfig above are unchanged)

BACKBONE_DEPTHS: tuple[int, ...] = (18, 34, 50, 101)
# CenterPoint's nuScenes task groups.
DEFAULT_TASK_GROUPS: tuple[tuple[str, ...], ...] = (
    ("car",),
    ("truck", "construction_vehicle"),
    ("bus", "trailer"),
    ("barrier",),
    ("motorcycle", "bicycle"),
    ("pedestrian", "traffic_cone"),
)
# Circle-NMS radius per class (metres, CLASSES order). CenterPoint compares the squared
# distance with (4, 12, 10, 1, 0.85, 0.175) per task; these are the square roots.
DEFAULT_NMS_RADIUS: tuple[float, ...] = (2.0, 3.5, 3.5, 3.2, 3.2, 1.0, 0.9, 0.9, 0.42, 0.42)
FUSION_GATES = ("soft", "strong")
# Box-code loss weights: dx, dy, z, log l, log w, log h, sin, cos, vx, vy. CenterPoint's nuScenes
# 0.2 on velocity left the teacher's speeds shrunk to the mean (parked cars at 1.9 m/s, moving
# ones at 3.4 of 7.8 m/s; mAVE 2.3): velocity is half of NDS's motion terms, so it weighs as
# much as the other codes.
DEFAULT_CODE_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def _n_steps(lo: float, hi: float, step: float) -> int | None:
    """(hi - lo) / step when it is a positive integer (to 1e-6), else None."""
    if step <= 0 or hi <= lo:
        return None
    n = (hi - lo) / step
    return round(n) if abs(n - round(n)) < 1e-6 and round(n) >= 1 else None


@dataclass
class GridConfig:
    """The BEV grid shared by teacher, student, targets and distillation.

    BEV tensors are (B, C, H, W) with rows along y (H = ny) and columns along x (W = nx);
    cell (row i, col j) has centre (x_min + (j + 0.5) * cell, y_min + (i + 0.5) * cell).
    Points with z outside z_bound are ignored (one voxel in z).
    """

    x_bound: tuple[float, float] = (-51.2, 51.2)
    y_bound: tuple[float, float] = (-51.2, 51.2)
    z_bound: tuple[float, float] = (-5.0, 3.0)
    cell: float = 0.8

    def __post_init__(self) -> None:
        if self.cell <= 0:
            raise ConfigError(f"grid.cell must be > 0, got {self.cell}")
        for name in ("x_bound", "y_bound", "z_bound"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ConfigError(f"grid.{name} must be lo < hi, got {(lo, hi)}")
        for name in ("x_bound", "y_bound"):
            lo, hi = getattr(self, name)
            if _n_steps(lo, hi, self.cell) is None:
                raise ConfigError(f"grid.{name} extent {hi - lo} m is not a whole number of "
                                  f"grid.cell = {self.cell} m cells")

    @property
    def nx(self) -> int:
        """Number of columns (x direction) = W."""
        return round((self.x_bound[1] - self.x_bound[0]) / self.cell)

    @property
    def ny(self) -> int:
        """Number of rows (y direction) = H."""
        return round((self.y_bound[1] - self.y_bound[0]) / self.cell)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every BEV tensor."""
        return self.ny, self.nx


@dataclass
class ModelConfig:
    """Architecture, losses and decoding of teacher and student."""

    # image backbone + neck (stride 16 output)
    backbone_depth: int = 50
    backbone_width: float = 1.0          # multiplier on ResNet's base width 64 (tiny < 1)
    pretrained: str | None = None        # torchvision-named ImageNet .pth (never downloaded)
    neck_levels: tuple[int, ...] = (2, 3, 4)  # ResNet stages fed to the neck (strides 8/16/32)
    neck_channels: int = 128             # per level; the neck concatenates them
    # depth net / lift-splat
    depth_bins: tuple[float, float, float] = (1.0, 60.0, 0.5)   # (d_min, d_max, d_step) metres
    depth_channels: int = 256            # hidden width of the depth net
    depth_blocks: int = 2                # residual blocks of the depth branch
    context_channels: int = 80           # C of F_C
    radar_depth_input: bool = True       # sparse radar depth/RCS image as depth-net input
    radar_depth_heights: tuple[float, ...] = (0.5, 1.0, 1.5)  # z (m) radar points are lifted to
    depth_supervision: bool = True       # BEVDepth LiDAR depth loss when lidar is in the batch
    depth_loss_weight: float = 3.0
    pool_cache_size: int = 4             # calibrations whose BEV-pool indices are kept
    # radar / lidar pillars
    radar_pillar_channels: int = 64
    radar_channels: int = 64             # C of F_R
    lidar_pillar_channels: int = 64
    pillar_mlp_layers: int = 2           # PointNet depth of the radar/LiDAR pillar encoders (1 = PointPillars)
    bev_channels: int = 128              # C of F_M (student) and F_L (teacher)
    fusion_offset: bool = True           # learned radar->camera BEV alignment
    fusion_hidden: int = 32              # width of the intensity-prediction branch
    fusion_gate: str = "soft"            # "soft": F_C * (1 + tanh(g(I_hat))); "strong": F_C * 2 sigmoid(g(logit))
    radar_adapter_in_path: bool = False  # A_R feeds the fusion (what L1 distils is what fusion reads)
    # BEV encoder (ResNet-style stages + SECOND-FPN back to the grid resolution)
    bev_encoder_channels: tuple[int, ...] = (128, 256, 512)
    bev_encoder_blocks: tuple[int, ...] = (2, 2, 2)
    bev_encoder_strides: tuple[int, ...] = (1, 2, 2)
    bev_fpn_channels: int = 128
    # CenterPoint head
    head_channels: int = 64
    head_task_convs: int = 1             # 3x3 conv layers per task group before its outputs
    task_groups: tuple[tuple[str, ...], ...] = DEFAULT_TASK_GROUPS
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    hm_weight: float = 1.0
    bbox_weight: float = 0.25
    code_weights: tuple[float, ...] = DEFAULT_CODE_WEIGHTS
    # decoding
    max_detections: int = 300
    score_threshold: float = 0.1
    nms_radius: tuple[float, ...] = DEFAULT_NMS_RADIUS

    def __post_init__(self) -> None:
        if self.backbone_depth not in BACKBONE_DEPTHS:
            raise ConfigError(f"model.backbone_depth must be one of {BACKBONE_DEPTHS}, got {self.backbone_depth}")
        if not (0 < self.backbone_width <= 4) or round(64 * self.backbone_width) < 8:
            raise ConfigError(f"model.backbone_width must give >= 8 base channels, got {self.backbone_width}")
        if not self.neck_levels or any(lv not in (1, 2, 3, 4) for lv in self.neck_levels) \
                or len(set(self.neck_levels)) != len(self.neck_levels):
            raise ConfigError(f"model.neck_levels must be distinct ResNet stages in 1..4, got {self.neck_levels}")
        if len(self.depth_bins) != 3 or _n_steps(*self.depth_bins) is None or self.depth_bins[0] <= 0:
            raise ConfigError(f"model.depth_bins (d_min, d_max, d_step) must give d_min > 0 and a positive "
                              f"whole number of bins, got {self.depth_bins}")
        for name in ("neck_channels", "depth_channels", "context_channels", "radar_pillar_channels",
                     "radar_channels", "lidar_pillar_channels", "bev_channels", "bev_fpn_channels",
                     "head_channels", "max_detections", "pool_cache_size", "fusion_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.fusion_gate not in FUSION_GATES:
            raise ConfigError(f"model.fusion_gate must be one of {FUSION_GATES}, got {self.fusion_gate!r}")
        if self.pillar_mlp_layers < 1:
            raise ConfigError(f"model.pillar_mlp_layers must be >= 1, got {self.pillar_mlp_layers}")
        if self.depth_blocks < 0 or self.head_task_convs < 0:
            raise ConfigError("model.depth_blocks and model.head_task_convs must be >= 0")
        if self.radar_depth_input and not self.radar_depth_heights:
            raise ConfigError("model.radar_depth_heights must not be empty when radar_depth_input is on")
        n = len(self.bev_encoder_channels)
        if n == 0 or len(self.bev_encoder_blocks) != n or len(self.bev_encoder_strides) != n:
            raise ConfigError("model.bev_encoder_channels/blocks/strides must be non-empty and of equal length")
        if any(s not in (1, 2) for s in self.bev_encoder_strides) or any(b < 1 for b in self.bev_encoder_blocks):
            raise ConfigError("model.bev_encoder_strides must be 1 or 2 and blocks >= 1")
        flat = [c for g in self.task_groups for c in g]
        unknown = sorted(set(flat) - set(CLASSES))
        if unknown:
            raise ConfigError(f"model.task_groups name unknown classes {unknown}; known: {list(CLASSES)}")
        if len(flat) != len(set(flat)) or set(flat) != set(CLASSES) or any(len(g) == 0 for g in self.task_groups):
            missing = sorted(set(CLASSES) - set(flat))
            raise ConfigError(f"model.task_groups must list each of the {len(CLASSES)} classes exactly once in "
                              f"non-empty groups (missing {missing}), got {self.task_groups}")
        if len(self.nms_radius) != len(CLASSES) or any(r < 0 for r in self.nms_radius):
            raise ConfigError(f"model.nms_radius needs {len(CLASSES)} non-negative radii (CLASSES order)")
        if len(self.code_weights) != 10:
            raise ConfigError("model.code_weights needs 10 weights (dx, dy, z, l, w, h, sin, cos, vx, vy)")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError(f"model.score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.gaussian_overlap < 1.0 or self.min_radius < 0:
            raise ConfigError("model.gaussian_overlap must be in (0, 1) and min_radius >= 0")

    @property
    def num_depth_bins(self) -> int:
        return _n_steps(*self.depth_bins)  # type: ignore[return-value]

    @property
    def image_stride(self) -> int:
        """Largest backbone stride the neck reads: the input size must divide by it."""
        return 2 ** (max(self.neck_levels) + 1)


L3_TARGETS = ("intensity", "objectness")


@dataclass
class DistillConfig:
    """The three IMKD distillation signals (+ response term), each switchable."""

    l1: bool = True          # LiDAR -> radar, intensity-aware feature distillation
    l2: bool = True          # LiDAR -> fused, selective intensity-guided distillation
    l3: bool = True          # intensity guidance of the fusion (BCE of I_hat vs I_L)
    resp: bool = True        # teacher heatmaps as soft targets of the student head
    init: bool = True        # student BEV encoder + head start from the teacher's, A_M = identity
    # Weights balance gradient norms on the student's parameters mid-training (train/kd_gradients.py
    # on the bench world's trained no-KD student: tiny + 10 sweeps, radar adapter in the path,
    # strong gate, 3 batches; det |grad| 30.5). At weight 1, of the detection gradient: L1 3.1 %,
    # L2 11 % (+ bev 2.0 %), resp 2.5 % (+ resp_box 1.7 %), L3 3.2 %. These weights put L1, the
    # L2 stage and the response stage at 13-15 % each and L3 at about 10 %. (At a run's first
    # step the detection gradient is 7-70x larger, untrained heatmaps; it falls within ~25 steps.)
    l1_weight: float = 5.0
    l2_weight: float = 1.0
    l3_weight: float = 3.0
    resp_weight: float = 3.0
    alpha: float = 1.0       # W1 = radar-active * (I_L + alpha * H_gt)
    tau: float = 0.5         # W2 spatial softmax temperature (on ||F_L|| / its mean)
    intensity_sigma: float = 0.7   # Gaussian smoothing of I_L, in cells (0 = none)
    intensity_ground_z: float = 0.3  # I_L reads LiDAR returns above this height (ego frame, m)
    intensity_scale: float = 100.0   # fixed reflectance scale of I_L (raw / scale, clipped to 1)
    l1_dilation: int = 1     # radar-active cells grown by this many cells for W1
    normalise: bool = True   # feature terms on teacher-standardised features
    resp_box_weight: float = 4.0   # box-code L1 at the teacher's confident cells (part of resp)
    resp_box_min_prob: float = 0.3  # "confident": teacher heatmap probability above this
    bev_weight: float = 1.0        # BEV encoder output vs the teacher's on object cells (part of l2)
    l3_target: str = "intensity"   # what I_hat learns: "intensity" (I_L) or "objectness" (teacher)
    init_lr_scale: float = 0.1     # learning-rate factor of the layers 'init' inherits

    def __post_init__(self) -> None:
        for name in ("l1_weight", "l2_weight", "l3_weight", "resp_weight", "alpha", "intensity_sigma",
                     "resp_box_weight", "bev_weight", "l1_dilation", "init_lr_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(f"distill.{name} must be >= 0, got {getattr(self, name)}")
        if self.tau <= 0:
            raise ConfigError(f"distill.tau must be > 0, got {self.tau}")
        if self.intensity_scale <= 0:
            raise ConfigError(f"distill.intensity_scale must be > 0, got {self.intensity_scale}")
        if not 0.0 <= self.resp_box_min_prob < 1.0:
            raise ConfigError(f"distill.resp_box_min_prob must be in [0, 1), got {self.resp_box_min_prob}")
        if self.l3_target not in L3_TARGETS:
            raise ConfigError(f"distill.l3_target must be one of {L3_TARGETS}, got {self.l3_target!r}")

    @property
    def needs_teacher(self) -> bool:
        """Every term but L3 on I_L (which can come from the batch's LiDAR) needs the teacher."""
        return self.l1 or self.l2 or self.resp or self.init or (self.l3 and self.l3_target == "objectness")


@dataclass
class IMKDConfig:
    """Everything needed to build, train and run one model."""

    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        h, w = self.data.image_size
        s = self.model.image_stride
        if h % s or w % s:
            raise ConfigError(f"data.image_size {self.data.image_size} must be divisible by the backbone "
                              f"stride {s} (neck_levels {self.model.neck_levels})")
        down = math.prod(self.model.bev_encoder_strides)
        ny, nx = self.grid.shape
        if ny % down or nx % down:
            raise ConfigError(f"BEV grid {ny}x{nx} must be divisible by the BEV encoder's total stride {down}")

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """Plain nested dict (tuples as lists: YAML/JSON/weights_only safe)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> IMKDConfig:
        """Inverse of to_dict; unknown keys (at any depth) raise ConfigError naming them all."""
        unknown = _unknown_keys(cls, d, "")
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return _from_dict(cls, d, "")

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> IMKDConfig:
        try:
            d = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError(f"config {path} must hold a mapping, got {type(d).__name__}")
        return cls.from_dict(d)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _convert(tp, value, where: str):
    """Coerce a YAML value to the annotated type (lists -> tuples, ints -> floats, dataclasses)."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (float, int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def _unknown_keys(cls, d: dict, prefix: str) -> list[str]:
    """Dotted names of all keys of `d` (recursively) that `cls` does not have."""
    if not isinstance(d, dict):
        return []
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    out = [prefix + k for k in d if k not in names]
    for k, v in d.items():
        if k in names and is_dataclass(hints[k]):
            out += _unknown_keys(hints[k], v, prefix + k + ".")
    return sorted(out)


def _from_dict(cls, d: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _convert(hints[k], v, prefix + k) for k, v in d.items()}
    return cls(**kwargs)


# ============================================================================ presets
def paper_r50_256x704() -> IMKDConfig:
    """The paper's setting: ResNet-50, 256x704, depth 1-60 m, BEV 128x128 at 0.8 m."""
    return IMKDConfig(
        name="paper_r50_256x704",
        data=DataConfig(image_size=(256, 704), radar_sweeps=6, lidar_sweeps=10),
        grid=GridConfig(x_bound=(-51.2, 51.2), y_bound=(-51.2, 51.2), z_bound=(-5.0, 3.0), cell=0.8),
        model=ModelConfig(),
    )


def tiny() -> IMKDConfig:
    """CPU config for training on a laptop, tests and the demo (ResNet-18 at 1/4 width)."""
    return IMKDConfig(
        name="tiny",
        # 3 LiDAR sweeps: the frozen teacher runs in every student step and its cost is per point
        data=DataConfig(image_size=(128, 352), radar_sweeps=6, lidar_sweeps=3),
        grid=GridConfig(x_bound=(-51.2, 51.2), y_bound=(-51.2, 51.2), z_bound=(-5.0, 3.0), cell=1.6),
        model=ModelConfig(
            backbone_depth=18, backbone_width=0.25, neck_levels=(2, 3, 4), neck_channels=32,
            depth_bins=(1.0, 61.0, 2.0), depth_channels=64, depth_blocks=1, context_channels=32,
            radar_pillar_channels=32, radar_channels=32, lidar_pillar_channels=32, pillar_mlp_layers=1,
            bev_channels=32,
            fusion_hidden=16, bev_encoder_channels=(32, 64, 128), bev_encoder_blocks=(1, 1, 1),
            bev_encoder_strides=(1, 2, 2), bev_fpn_channels=16, head_channels=32, head_task_convs=0,
            max_detections=200,
        ),
    )


PRESETS: dict[str, typing.Callable[[], IMKDConfig]] = {"paper_r50_256x704": paper_r50_256x704, "tiny": tiny}


def get_config(name_or_path: str | Path) -> IMKDConfig:
    """A preset by name ('tiny', 'paper_r50_256x704') or a YAML file path."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]()
    p = Path(key)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return IMKDConfig.load_yaml(p)
    raise ConfigError(f"unknown config {key!r}: not a preset {sorted(PRESETS)} nor a YAML file")
