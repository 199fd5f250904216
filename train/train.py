#!/usr/bin/env python3
"""Train the IMKD LiDAR teacher or the distilled camera + radar student.

    # 1. teacher (LiDAR only)
    python train/train.py --model teacher --config tiny --dataroot /tmp/synth_default --version v1.0-synth \
        --train-scenes 'synth-train-*' --val-scenes 'synth-val-*' --max-steps 2000 --out runs/teacher
    # 2. student distilled from the frozen teacher (--kd none for the plain camera + radar baseline)
    python train/train.py --model student --config tiny --dataroot /tmp/synth_default --version v1.0-synth \
        --train-scenes 'synth-train-*' --val-scenes 'synth-val-*' --teacher runs/teacher/best.pt \
        --kd l1,l2,l3 --max-steps 2000 --out runs/student
    # continue an interrupted run exactly where its last checkpoint left it
    python train/train.py ...same arguments... --resume
    # multi-GPU / multi-node: the same command under torchrun (see docs/training.md)
    torchrun --standalone --nproc_per_node 8 train/train.py ...

What it does: AdamW (no weight decay on norms and biases), linear warm-up then cosine (or one-cycle)
decay defined over total_steps = --max-steps or epochs x steps_per_epoch (so a run cut short by
--time-budget-min follows the same schedule as the full one), gradient clipping, AMP (float16 +
GradScaler) on CUDA, DistributedDataParallel under torchrun (NCCL on GPU, gloo on CPU) with a
DistributedSampler, seeded and deterministic CPU runs. Checkpoints are atomic (imkd_core.checkpoint,
weights_only-loadable) and hold model, optimizer, scheduler, scaler, step/epoch and every RNG state:
`last.pt` every --ckpt-every steps and at each epoch end, `best.pt` by validation NDS. --resume
continues exactly (same batches, augmentations and losses as an uninterrupted run). Validation
decodes the val scenes the way imkd_core.predict.Predictor does (evaluation preprocessing,
student without LiDAR) and scores them with the nuScenes devkit (imkd_core.evaluate).

Outputs in --out: last.pt, best.pt, log.jsonl (one record per step: every loss term incl. each KD
term separately, lr, grad norm, samples/s; one per validation), loss_curve.png, val/ (devkit
files of the latest validation), summary.json. The LAST line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

from imkd_core.atomic import atomic_copy, atomic_path, atomic_write_text  # noqa: E402
from imkd_core.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint  # noqa: E402
from imkd_core.config import ConfigError, IMKDConfig, get_config  # noqa: E402
from imkd_core.device import resolve_device  # noqa: E402
from imkd_core.errors import UserError, cli_main, writable_dir  # noqa: E402
from imkd_core.models.detector import Student, Teacher, batch_to  # noqa: E402
from imkd_core.preprocess import collate  # noqa: E402

KD_TERMS = ("l1", "l2", "l3", "resp", "init")
LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
SLIM_KEYS = ("kind", "config", "model")
# Files of a run in --out: a fresh start never replaces them without --force.
RUN_FILES = ("last.pt", "best.pt", LOG_NAME, SUMMARY_NAME)
# Flags that decide the optimisation: a resume keeps the run's values unless --force says otherwise.
RESUME_FIXED = ("epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule",
                "min_lr_ratio", "clip_grad", "seed", "amp", "amp_dtype", "train_scenes")


# ============================================================================ arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("teacher", "student"), help="which network to train")
    g.add_argument("--config", default="tiny", help="preset (tiny, paper_r50_256x704) or a YAML file")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.backbone_width=0.5 (value parsed as YAML; repeatable)")
    g.add_argument("--teacher", help="frozen teacher checkpoint (student with KD terms l1/l2/resp/init)")
    g.add_argument("--teacher-cache", metavar="DIR",
                   help="cache the teacher's outputs per step in DIR and reuse them (runs of one seed see the "
                        "same batches: train/teacher_cache.py); one process only")
    g.add_argument("--kd", default=None,
                   help="distillation terms of the student: comma list of l1,l2,l3,resp,init, or 'none' "
                        "(default: the config's distill section)")
    g = p.add_argument_group("data")
    g.add_argument("--dataroot", help="nuScenes-format dataroot")
    g.add_argument("--version", default="v1.0-trainval", help="version folder (v1.0-mini, v1.0-synth, ...)")
    g.add_argument("--train-scenes", nargs="+", default=None,
                   help="scene names or patterns ('synth-train-*'), resolved by resolve_scenes")
    g.add_argument("--val-scenes", nargs="+", default=None, help="validation scenes (omit: no validation)")
    g.add_argument("--val-limit", type=int, default=0, help="validate on the first N val samples only (0 = all)")
    g.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per process")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--max-steps", type=int, default=0,
                   help="total optimiser steps (overrides --epochs; defines the LR schedule)")
    g.add_argument("--batch-size", type=int, default=4, help="samples per process and step")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, default=1e-2)
    g.add_argument("--warmup-steps", type=int, default=-1, help="linear warm-up steps (-1: 5%% of total, <= 500)")
    g.add_argument("--schedule", choices=("cosine", "onecycle", "constant"), default="cosine")
    g.add_argument("--min-lr-ratio", type=float, default=0.01, help="final lr / peak lr of the cosine decay")
    g.add_argument("--clip-grad", type=float, default=35.0, help="max gradient norm (0 = off)")
    g.add_argument("--time-budget-min", type=float, default=0.0,
                   help="stop cleanly (checkpoint + validation) after this many minutes of training")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one that exists here)")
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA (float16 autocast + GradScaler)")
    g.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    g.add_argument("--deterministic", choices=("auto", "on", "off"), default="auto",
                   help="deterministic kernels (warn where torch has none); auto = on for CPU (exact resume), "
                        "off for CUDA (cudnn.benchmark, atomics: speed)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across DDP processes")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run directory")
    g.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"), default=None,
                   help="continue from --out/last.pt (an error when it is absent); '--resume auto': continue "
                        "when last.pt exists, else start afresh in an --out that holds no earlier run")
    g.add_argument("--force", action="store_true",
                   help="with --resume: apply changed optimisation flags (--lr, --batch-size, --seed, ...; "
                        "recorded in log.jsonl); without a last.pt to continue: start afresh over an earlier "
                        "run's files in --out (replaced, and said so)")
    g.add_argument("--val-every", type=int, default=1, help="validate every N epochs (0 = only at the end)")
    g.add_argument("--val-batch-size", type=int, default=1)
    g.add_argument("--ckpt-every", type=int, default=0, help="also write last.pt every N steps (0 = epoch ends)")
    g.add_argument("--log-every", type=int, default=1, help="JSONL train record every N steps")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--export-slim", metavar="PATH",
                   help="after training, write an inference-only checkpoint (model + config) of best.pt "
                        "(else last.pt) to PATH")
    g.add_argument("--slim", nargs=2, metavar=("SRC", "DST"),
                   help="only convert checkpoint SRC to a slim inference checkpoint DST, then exit")
    # test hook: every rank writes its final parameters to out/rank<R>_params.pt
    g.add_argument("--debug-rank-dump", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.slim:
        return args
    missing = [f"--{n.replace('_', '-')}" for n in ("model", "dataroot", "train_scenes", "out")
               if not getattr(args, n)]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    if args.batch_size < 1 or args.epochs < 1 or args.max_steps < 0:
        p.error("--batch-size and --epochs must be >= 1, --max-steps >= 0")
    if args.kd is not None and args.model == "teacher":
        p.error("--kd applies to --model student only")
    try:
        parse_kd(args.kd)
    except ValueError as e:
        p.error(str(e))
    return args


def parse_kd(spec: str | None) -> set[str] | None:
    """'l1,l2' -> {'l1', 'l2'}; 'none' -> set(); None -> None (config default)."""
    if spec is None:
        return None
    items = {s.strip().lower() for s in spec.split(",") if s.strip()}
    if items in ({"none"}, set()):
        return set()
    unknown = items - set(KD_TERMS)
    if unknown:
        raise ValueError(f"--kd: unknown terms {sorted(unknown)}; use a comma list of {KD_TERMS} or 'none'")
    return items


def build_config(args: argparse.Namespace) -> IMKDConfig:
    """The preset/YAML with --set overrides and --kd applied (what the checkpoint will record)."""
    cfg = get_config(args.config)
    if args.overrides:
        d = cfg.to_dict()
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
            node = d
            parts = key.strip().split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"--set {key}: {part!r} is not a config section")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"--set {key}: unknown key {parts[-1]!r}")
            node[parts[-1]] = yaml.safe_load(value)
        cfg = IMKDConfig.from_dict(d)
    kd = parse_kd(args.kd)
    if kd is not None:
        cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, **{t: t in kd for t in KD_TERMS}))
    return cfg


# ============================================================================ distributed
@dataclasses.dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str) -> DistEnv:
    """Single process, or the torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK): NCCL on CUDA,
    gloo on CPU, one GPU per process."""
    requested = resolve_device(device_arg)  # DeviceError for 'tpu', 'cuda' without CUDA, ...
    want_cuda = requested.type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        index = local if world > 1 or requested.index is None else requested.index
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    env = DistEnv(rank, world, local, device)
    if env.enabled:
        backend = "nccl" if want_cuda else "gloo"
        kw: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=60)}
        if want_cuda:
            kw["device_id"] = device
        try:
            dist.init_process_group(**kw)
        except TypeError:  # older torch without device_id
            kw.pop("device_id", None)
            dist.init_process_group(**kw)
    return env


def barrier(env: DistEnv) -> None:
    if env.enabled:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.local_rank])
        else:
            dist.barrier()


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on any rank (stop decisions must agree)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ============================================================================ seeds and RNG state
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels where torch has them (warn, do not fail, where it has none)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG state as weights_only-loadable plain types and tensors."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective under DDP)."""
    mine = rng_state()
    if not env.enabled:
        return [mine]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, mine)
    return out


# ============================================================================ data
class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (shuffled by (seed, epoch), sharded by rank) that can skip the first
    `skip` indices of the epoch, so a resumed run sees exactly the batches it had not seen."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def set_skip(self, n: int) -> None:
        self.skip = int(n)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class _Indexed(Dataset):
    """(index, sample) pairs, so validation knows each sample's token."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, dict]:
        return i, self.ds[i]


def _collate_indexed(items: list[tuple[int, dict]]) -> tuple[list[int], dict[str, torch.Tensor]]:
    return [i for i, _ in items], collate([s for _, s in items])


def _worker_init(worker_id: int) -> None:
    """Fixed worker seeds: numpy/python from torch's per-worker seed (base_seed + id). The dataset's
    augmentation draws depend only on (seed, epoch, index) anyway."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def source_image_hw(nusc: Any) -> tuple[int, int]:
    """(H, W) of the dataset's CAM_FRONT images (sample_data table)."""
    for sd in nusc.sample_data:
        if sd.get("channel") == "CAM_FRONT" and sd.get("height"):
            return int(sd["height"]), int(sd["width"])
    return 900, 1600


def build_readers(args: argparse.Namespace, cfg: IMKDConfig) -> tuple[Any, Any | None]:
    """(train reader with LiDAR, val reader or None). Images are decoded at the JPEG reduction the
    Predictor/ROS node use for this input size; the student's val reader loads no LiDAR."""
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
    from imkd_core.preprocess import jpeg_reduction

    nusc = load_nuscenes(args.dataroot, args.version)
    reduction = jpeg_reduction(source_image_hw(nusc), tuple(cfg.data.image_size))
    common = {"radar_sweeps": cfg.data.radar_sweeps, "lidar_sweeps": cfg.data.lidar_sweeps,
              "image_reduction": reduction, "nusc": nusc}
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


# ============================================================================ schedule
def lr_factor(step: int, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.01) -> float:
    """LR multiplier at optimiser step `step` (0-based) of `total`.

    cosine: linear warm-up from 1/warmup to 1, then cosine to min_ratio at the last step.
    onecycle: cosine warm-up from 1/25 to 1 over `warmup`, then cosine to min_ratio.
    constant: warm-up, then 1.
    """
    if warmup > 0 and step < warmup:
        if kind == "onecycle":
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * step / warmup))
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 scaled: tuple[list[torch.nn.Parameter], float] | None = None) -> list[dict[str, Any]]:
    """No weight decay on norms and biases (1-d parameters); the parameters of `scaled`
    (params, factor), e.g. the layers 'init' inherits, train at factor x lr. Each group records
    its "decay" flag and "lr_scale" (what apply_forced re-applies)."""
    slow = {id(p) for p in scaled[0]} if scaled else set()
    factor = scaled[1] if scaled else 1.0
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for _, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim > 1, id(p) in slow), []).append(p)
    order = [(True, False), (False, False), (True, True), (False, True)]
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "decay": k[0],
             "lr_scale": factor if k[1] else 1.0, "lr": lr * (factor if k[1] else 1.0)}
            for k in order if groups.get(k)]


# ============================================================================ checkpoints
def slim_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Inference-only payload: kind, config, model (CPU float32) and a little provenance."""
    model = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu())
             for k, v in payload["model"].items()}
    out = {"kind": payload["kind"], "config": payload["config"], "model": model}
    meta = {k: payload[k] for k in ("step", "epoch") if k in payload}
    if "best" in payload:
        meta["best"] = payload["best"]
    if "distill" in payload:
        meta["distill"] = payload["distill"]
    out["meta"] = meta
    return out


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write an inference-only copy of checkpoint `src` (model + config) to `dst`, atomically."""
    return save_checkpoint(dst, slim_payload(load_checkpoint(src)))


def load_teacher(path: str, student_cfg: IMKDConfig, device: torch.device) -> Teacher:
    """The frozen teacher of a student run (eval mode, no gradients). Its BEV grid and channel
    count must be the student's (F_L is compared with the student's features cell by cell)."""
    payload = load_checkpoint(path)
    if payload["kind"] != "teacher":
        raise CheckpointError(f"--teacher {path}: expected a teacher checkpoint, got kind {payload['kind']!r}")
    tcfg = IMKDConfig.from_dict(payload["config"])
    if tcfg.grid != student_cfg.grid or tcfg.model.bev_channels != student_cfg.model.bev_channels:
        raise ConfigError(f"--teacher {path}: its BEV grid/bev_channels ({tcfg.grid}, {tcfg.model.bev_channels}) "
                          f"differ from the student's ({student_cfg.grid}, {student_cfg.model.bev_channels})")
    # I_L is built with the student's distillation settings (intensity_sigma)
    teacher = Teacher(dataclasses.replace(tcfg, distill=student_cfg.distill))
    load_weights(teacher, payload["model"], f"--teacher {path}", tcfg.name)
    return teacher.to(device).freeze()


def check_run_dir(args: argparse.Namespace, out: Path) -> bool:
    """Decide between continuing and starting afresh before anything is written; True = resume.

    --resume needs a last.pt (unless --force); a fresh start (no --resume, '--resume auto' without
    a last.pt, or --force) never replaces an earlier run's last.pt/best.pt/log.jsonl/summary.json
    without --force. UserError otherwise, naming the files."""
    last = out / "last.pt"
    if last.exists():
        if args.resume:
            return True
        if not args.force:
            raise UserError(f"{last} exists: pass --resume to continue that run, --force to start afresh over "
                            "it, or choose a new --out")
    elif args.resume == "yes" and not args.force:
        raise UserError(f"--resume: {last} does not exist, nothing to continue (use '--resume auto' to start "
                        "afresh when there is none, or --force)")
    earlier = [n for n in RUN_FILES if (out / n).exists()]
    if earlier and not args.force:
        raise UserError(f"{out} holds files of an earlier run ({', '.join(earlier)}) but no last.pt to continue: "
                        "a fresh start would replace them; pass --force to do so, or choose a new --out")
    return False


def clear_run_dir(out: Path) -> list[str]:
    """Remove an earlier run's files (a forced fresh start) -> their names."""
    gone = [n for n in (*RUN_FILES, "loss_curve.png") if (out / n).exists()]
    for n in gone:
        (out / n).unlink()
    return gone


def changed_flags(saved: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, list[Any]]:
    """{flag: [run's value, this command's value]} of the RESUME_FIXED flags that differ."""
    if not saved:  # a checkpoint without recorded arguments: nothing to compare
        return {}
    now = _plain_args(args)
    return {k: [saved[k], now[k]] for k in RESUME_FIXED if k in saved and saved[k] != now.get(k)}


def apply_forced(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
                 args: argparse.Namespace, step: int) -> None:
    """After loading a checkpoint's optimiser and scheduler (--resume --force): this command's peak
    lr and weight decay replace the run's; the schedule is this command's lambda (LambdaLR does not
    store lambdas), so the next step uses lr = --lr x lr_factor(step) of the new schedule."""
    sched.base_lrs = [args.lr * g.get("lr_scale", 1.0) for g in opt.param_groups]
    for i, group in enumerate(opt.param_groups):
        group["initial_lr"] = sched.base_lrs[i]
        group["weight_decay"] = args.weight_decay if group.get("decay", i == 0) else 0.0
        group["lr"] = sched.base_lrs[i] * sched.lr_lambdas[i](sched.last_epoch)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


# ============================================================================ logging
class JsonlLog:
    """Append-only JSONL (rank 0); on resume, records past the checkpoint's step are dropped so the
    log of a resumed run equals that of an uninterrupted one."""

    def __init__(self, path: Path, truncate_after_step: int | None = None) -> None:
        self.path = path
        if truncate_after_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= truncate_after_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        elif truncate_after_step is None and path.exists():
            path.unlink()
        self._f = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(_jsonable(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_curves(log_path: Path, png_path: Path, title: str = "") -> None:
    """Loss terms (raw + moving average), KD terms, learning rate and val NDS/mAP -> PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log_path) if log_path.exists() else []
    train = [r for r in recs if r.get("type") == "train"]
    val = [r for r in recs if r.get("type") == "val"]
    if not train:
        return
    steps = np.array([r["step"] for r in train])

    def series(key: str) -> np.ndarray | None:
        if not any(key in r for r in train):
            return None
        return np.array([r.get(key, np.nan) if r.get(key) is not None else np.nan for r in train], dtype=float)

    def smooth(y: np.ndarray) -> np.ndarray:
        k = max(1, min(50, len(y) // 20))
        if k == 1:
            return y
        c = np.convolve(np.nan_to_num(y), np.ones(k) / k, mode="valid")
        return np.concatenate([np.full(k - 1, np.nan), c])

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    for key in ("total", "det", "det_hm", "det_bbox", "det_depth"):
        y = series(key)
        if y is not None:
            line = ax.plot(steps, y, alpha=0.25, lw=0.8)[0]
            ax.plot(steps, smooth(y), color=line.get_color(), lw=1.5, label=key)
    ax.set_yscale("log")
    ax.set_title("detection loss")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    has_kd = False
    for key in KD_TERMS:
        y = series(key)
        if y is not None:
            has_kd = True
            line = ax.plot(steps, y, alpha=0.25, lw=0.8)[0]
            ax.plot(steps, smooth(y), color=line.get_color(), lw=1.5, label=key)
    ax.set_title("distillation terms (unweighted)" if has_kd else "distillation terms (none enabled)")
    if has_kd:
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    y = series("lr")
    if y is not None:
        ax.plot(steps, y)
    ax.set_title("learning rate")
    ax = axes[1, 1]
    if val:
        vs = [r["step"] for r in val]
        for key in ("NDS", "mAP"):
            ax.plot(vs, [r.get(key) for r in val], marker="o", label=key)
        ax.legend(fontsize=8)
    ax.set_title("validation (devkit)")
    for a in axes.flat:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


# ============================================================================ validation
@torch.no_grad()
def predict_dataset(model: torch.nn.Module, reader: Any, cfg: IMKDConfig, device: torch.device,
                    batch_size: int = 1, num_workers: int = 0, limit: int = 0, amp_ctx=None,
                    progress: bool = False, transform: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Decode every sample of `reader` the Predictor's way (evaluation preprocessing, the student
    without LiDAR, boxes back through the inverse BEV matrix) -> (devkit results, tokens).
    `transform(batch) -> batch` (optional) alters each batch before the model (probes)."""
    from tqdm import tqdm

    from imkd_core.evaluate import detections_to_results
    from imkd_core.frame import Detections
    from imkd_core.preprocess import transform_boxes

    ds = make_dataset(reader, cfg, train=False, seed=0)
    n = len(ds) if not limit else min(limit, len(ds))
    sub = torch.utils.data.Subset(_Indexed(ds), list(range(n)))
    loader = DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_indexed, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    is_student = isinstance(model, Student)
    dets, poses = {}, {}
    try:
        for idx, batch in tqdm(loader, desc="val", unit="batch", disable=not progress, leave=False):
            if is_student:
                batch.pop("lidar", None)
                batch.pop("lidar_mask", None)
            bev_aug = batch["bev_aug"].numpy().astype(np.float64)
            batch = batch_to(batch, device)
            if transform is not None:
                batch = transform(batch)
            with amp_ctx() if amp_ctx is not None else contextlib.nullcontext():
                out = model(batch)
            for j, (boxes, scores, labels) in enumerate(model.decode(out)):
                b = boxes.float().cpu().numpy()
                if not np.allclose(bev_aug[j], np.eye(4)):
                    b = transform_boxes(b.astype(np.float64), np.linalg.inv(bev_aug[j])).astype(np.float32)
                token = reader.sample_tokens[idx[j]]
                dets[token] = Detections(b, scores.float().cpu().numpy(), labels.cpu().numpy(), token=token)
                poses[token] = reader.ego_to_global(idx[j])
    finally:
        model.train(was_training)
    tokens = list(reader.sample_tokens[:n])
    return detections_to_results(dets, poses), tokens


def validate(model: torch.nn.Module, reader: Any, cfg: IMKDConfig, device: torch.device, out_dir: Path,
             batch_size: int = 1, num_workers: int = 0, limit: int = 0, amp_ctx=None,
             progress: bool = False) -> dict[str, Any]:
    """Devkit metrics of the model on the val reader (files in out_dir)."""
    from imkd_core.evaluate import evaluate

    t0 = time.time()
    results, tokens = predict_dataset(model, reader, cfg, device, batch_size, num_workers, limit, amp_ctx, progress)
    with contextlib.redirect_stdout(sys.stderr):
        m = evaluate(reader.nusc, reader.version, results, tokens, out_dir, verbose=False)
    keys = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "NDS_present", "mAP_present")
    out = {k: float(m[k]) for k in keys if k in m}
    out["per_class_AP"] = m.get("per_class_AP", {})
    out["num_samples"] = len(tokens)
    out["val_seconds"] = round(time.time() - t0, 2)
    return out


# ============================================================================ training
class _StopFlag:
    """SIGTERM/SIGINT -> finish the current step, checkpoint, exit cleanly (preemption)."""

    def __init__(self) -> None:
        self.raised: str | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.raised is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.raised = signal.Signals(signum).name


def _loss_dict_to_floats(losses: dict[str, torch.Tensor], env: DistEnv) -> dict[str, float]:
    keys = sorted(losses)
    vals = torch.stack([losses[k].detach().float() for k in keys])
    vals = all_reduce_mean(vals, env).cpu().tolist()
    return dict(zip(keys, vals))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run one training job; returns the summary (also printed as the last line by main)."""
    t_start = time.time()
    out = Path(args.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    will_resume = check_run_dir(args, out)
    env = init_distributed(args.device)
    device = env.device
    if args.threads:
        torch.set_num_threads(args.threads)
    use_amp = bool(args.amp and device.type == "cuda")
    if args.amp and not use_amp:
        warnings.warn("--amp is for CUDA; training in float32 on CPU", stacklevel=2)
    amp_dtype = torch.float16 if args.amp_dtype == "float16" else torch.bfloat16

    def amp_ctx():
        return torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp)

    set_deterministic(args.deterministic == "on" or (args.deterministic == "auto" and device.type == "cpu"), device)
    seed_everything(args.seed)
    cfg = build_config(args)
    dc = cfg.distill
    needs_teacher = args.model == "student" and dc.needs_teacher
    if needs_teacher and not args.teacher:
        raise UserError(f"--model student with KD terms {[t for t in KD_TERMS if getattr(dc, t)]} needs "
                         "--teacher CKPT (or --kd none / --kd l3)")
    if env.is_main:
        writable_dir(out)
        if not will_resume and (gone := clear_run_dir(out)):
            print(f"--force: starting afresh in {out}; removed the earlier run's {', '.join(gone)}", file=sys.stderr)
    barrier(env)

    # ---------------------------------------------------------------- data
    train_reader, val_reader = build_readers(args, cfg)
    train_ds = make_dataset(train_reader, cfg, train=True, seed=args.seed)
    sampler = ResumableDistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                          seed=args.seed)
    steps_per_epoch = sampler.num_samples // args.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"{len(train_ds)} training samples cannot fill one batch of {args.batch_size} on each of "
                         f"{env.world_size} processes")
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, min(500, total_steps // 20))
    warmup = min(warmup, max(0, total_steps - 1))
    loader_gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.num_workers, collate_fn=collate, worker_init_fn=_worker_init,
                        pin_memory=device.type == "cuda", generator=loader_gen)

    # ---------------------------------------------------------------- models
    torch.manual_seed(args.seed)  # identical initialisation on every rank
    teacher: Teacher | None = None
    if args.model == "teacher":
        model: torch.nn.Module = Teacher(cfg)
    else:
        model = Student(cfg, load_pretrained=True)
        # adapters that no enabled term uses would get no gradient (DDP requires one for every
        # trainable parameter): freeze them
        model.adapter_r.requires_grad_(dc.l1)
        model.adapter_m.requires_grad_(dc.l2)
        if needs_teacher:
            teacher = load_teacher(args.teacher, cfg, device)
            if dc.init:  # before the optimiser exists; a resume overwrites it with its own weights
                model.inherit_from(teacher)
        elif args.teacher and env.is_main:
            print(f"note: --teacher {args.teacher} unused: no enabled KD term needs it", file=sys.stderr)
    model.to(device)
    if env.enabled and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw = model
    scaled = None
    if args.model == "student" and dc.init and dc.init_lr_scale != 1.0:
        scaled = (raw.inherited_parameters(), dc.init_lr_scale)
    opt = torch.optim.AdamW(param_groups(raw, args.weight_decay, args.lr, scaled), lr=args.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, warmup, args.schedule, args.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    trainable = [p for p in raw.parameters() if p.requires_grad]

    # ---------------------------------------------------------------- state / resume
    step, epoch, step_in_epoch, elapsed_prev = 0, 0, 0, 0.0
    best: dict[str, Any] = {"NDS": None, "step": None}
    val_history: list[dict[str, Any]] = []
    resumed = False
    forced: dict[str, list[Any]] = {}
    if will_resume:
        ck = load_checkpoint(last_path, map_location="cpu")
        if ck["kind"] != args.model:
            raise UserError(f"--resume: {last_path} is a {ck['kind']} checkpoint, not {args.model}")
        if ck["config"] != cfg.to_dict():
            raise UserError(f"--resume: the config of {last_path} differs from this run's config/--set/--kd")
        forced = changed_flags(ck.get("args"), args)
        if ck.get("total_steps") != total_steps:
            forced["total_steps"] = [ck.get("total_steps"), total_steps]
        if forced and not args.force:
            what = [f"{_flag(k)} {new!r} (the run has {old!r})" for k, (old, new) in forced.items()
                    if k != "total_steps"] or [f"{total_steps} steps (the run has {ck.get('total_steps')})"]
            raise UserError(f"--resume: this command changes {', '.join(what)} of {last_path}; repeat the run's "
                            f"values, or pass --force to apply them from step {ck['step']} (recorded in {LOG_NAME})")
        raw.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        step, epoch, step_in_epoch = int(ck["step"]), int(ck["epoch"]), int(ck["step_in_epoch"])
        elapsed_prev = float(ck.get("elapsed_s", 0.0))
        best = dict(ck.get("best", best))
        val_history = list(ck.get("val_history", []))
        if forced:  # --force: this command's optimisation flags from here on
            apply_forced(opt, sched, args, step)
            if "batch_size" in forced:  # keep the position in the epoch in samples
                step_in_epoch = step_in_epoch * int(forced["batch_size"][0]) // args.batch_size
        rngs = ck.get("rng") or []
        if len(rngs) == env.world_size:
            set_rng_state(rngs[env.rank])
        elif env.is_main:
            print(f"warning: {last_path} holds RNG states of {len(rngs)} processes, this run has "
                  f"{env.world_size}: RNG reseeded", file=sys.stderr)
        resumed = True
        if env.is_main:
            applied = [f"{_flag(k)} {o!r} -> {n!r}" for k, (o, n) in forced.items() if k != "total_steps"]
            print(f"resumed {last_path}: step {step}/{total_steps}, epoch {epoch}"
                  + (f"; --force applied {', '.join(applied)}" if applied else ""), file=sys.stderr)
    if step_in_epoch >= steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0

    ddp_model = model
    if env.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None)

    log = JsonlLog(out / LOG_NAME, truncate_after_step=step if resumed else None) if env.is_main else None
    if forced and log is not None:  # what --force changed, where the log can show it
        log.write({"type": "resume", "step": step, "epoch": epoch, "forced": forced})
    stop = _StopFlag()
    stop.install()
    budget_s = args.time_budget_min * 60.0

    def save_last() -> None:
        rngs = gather_rng_states(env)  # collective: every rank calls save_last
        if env.is_main:
            save_checkpoint(last_path, {
                "kind": args.model, "config": cfg.to_dict(), "model": raw.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch, "best": best, "val_history": val_history, "rng": rngs,
                "elapsed_s": elapsed_prev + (time.time() - t_loop), "args": _plain_args(args),
                "teacher": args.teacher if teacher is not None else None,
                "distill": dataclasses.asdict(cfg.distill), "world_size": env.world_size,
                "torch_version": str(torch.__version__),
            })

    def run_validation() -> tuple[dict[str, Any] | None, bool]:
        """Rank 0 validates (the others wait at the next collective). -> (metrics, is_new_best)."""
        nonlocal best
        if not env.is_main or val_reader is None:
            return None, False
        metrics = validate(raw, val_reader, cfg, device, out / "val", args.val_batch_size,
                           min(args.num_workers, 2), args.val_limit, amp_ctx if use_amp else None,
                           progress=not args.no_progress)
        rec = {"step": step, "epoch": epoch, **{k: v for k, v in metrics.items() if k != "per_class_AP"}}
        val_history.append(rec)
        log.write({"type": "val", **rec, "per_class_AP": metrics["per_class_AP"]})
        print(f"[val step {step}] NDS {metrics['NDS']:.4f} mAP {metrics['mAP']:.4f} "
              f"({metrics['val_seconds']:.0f} s)", file=sys.stderr)
        is_best = best["NDS"] is None or metrics["NDS"] > best["NDS"]
        if is_best:
            best = {"NDS": metrics["NDS"], "mAP": metrics["mAP"], "step": step, "epoch": epoch}
        return metrics, is_best

    def checkpoint(is_best: bool = False) -> None:
        save_last()
        if is_best and env.is_main:
            atomic_copy(last_path, best_path)
        barrier(env)

    # ---------------------------------------------------------------- loop
    from tqdm import tqdm

    # teacher outputs are needed per step by the loss terms only ('init' acts before training)
    teacher_per_step = teacher is not None and (dc.l1 or dc.l2 or dc.resp or dc.l3)
    tcache = None
    if teacher_per_step and args.teacher_cache:
        from train.teacher_cache import TeacherCache, check_usable

        check_usable(env.world_size)
        tcache = TeacherCache(args.teacher_cache, args.teacher, args.seed, args.batch_size, device)
    t_loop = time.time()
    pbar = tqdm(total=total_steps, initial=step, desc=f"train {args.model}", unit="step", dynamic_ncols=True,
                disable=args.no_progress or not env.is_main, file=sys.stderr)
    stopped: str | None = None
    win_t, win_n = time.time(), 0
    model.train()
    while step < total_steps and stopped is None:
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.set_skip(step_in_epoch * args.batch_size)
        loader_gen.manual_seed(args.seed * 100003 + epoch)  # worker seeds: a function of (seed, epoch)
        for batch in loader:
            batch = batch_to(batch, device)
            with amp_ctx():
                t_out = None
                if teacher_per_step:
                    t_out = tcache.get(step, batch) if tcache is not None else None
                    if t_out is None:
                        with torch.no_grad():
                            t_out = teacher(batch)
                        if tcache is not None:
                            t_out = tcache.put(step, batch, t_out)
                pred = ddp_model(batch)
                losses = raw.loss(batch, pred, t_out, cfg.distill) if args.model == "student" else raw.loss(batch, pred)
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(trainable, args.clip_grad if args.clip_grad > 0 else math.inf)
            finite = bool(torch.isfinite(gnorm))  # identical on every rank (gradients are all-reduced)
            lr_now = opt.param_groups[0]["lr"]
            if scaler.is_enabled():
                scaler.step(opt)  # skips the update itself on inf/nan gradients
                scaler.update()
            elif finite:
                opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            step_in_epoch += 1
            win_n += args.batch_size * env.world_size
            vals = _loss_dict_to_floats(losses, env)
            if env.is_main:
                now = time.time()
                sps = win_n / max(now - win_t, 1e-9)
                if step % args.log_every == 0 or step == total_steps:
                    log.write({"type": "train", "step": step, "epoch": epoch, "lr": lr_now,
                               "grad_norm": float(gnorm), "skipped": not finite, "samples_per_s": round(sps, 3),
                               "time": round(elapsed_prev + now - t_loop, 3), **vals})
                    win_t, win_n = now, 0
                pbar.update(1)
                pbar.set_postfix(loss=f"{vals['total']:.3f}", lr=f"{lr_now:.2e}", sps=f"{sps:.2f}")
            over_budget = budget_s > 0 and elapsed_prev + (time.time() - t_loop) >= budget_s
            if any_rank(over_budget or stop.raised is not None, env):
                stopped = "time_budget" if over_budget else f"signal:{stop.raised or 'peer'}"
                break
            if step >= total_steps:
                break
            if args.ckpt_every and step % args.ckpt_every == 0 and step_in_epoch < steps_per_epoch:
                checkpoint()
        if step_in_epoch >= steps_per_epoch:  # an epoch ended
            epoch, step_in_epoch = epoch + 1, 0
            if stopped is None and step < total_steps:
                is_best = False
                if args.val_every and epoch % args.val_every == 0:
                    _, is_best = run_validation()
                checkpoint(is_best)
                if env.is_main:
                    plot_curves(out / LOG_NAME, out / "loss_curve.png", f"{args.model} ({cfg.name})")
    pbar.close()
    if stopped is None:
        stopped = "completed"

    # ---------------------------------------------------------------- final checkpoint + validation
    is_best = False
    if not stopped.startswith("signal") and (not val_history or val_history[-1]["step"] != step):
        _, is_best = run_validation()
    checkpoint(is_best)
    final_metrics = None
    if val_history and val_history[-1]["step"] == step:
        final_metrics = dict(val_history[-1])

    if args.debug_rank_dump:
        torch.save({k: v.detach().cpu() for k, v in raw.state_dict().items()}, out / f"rank{env.rank}_params.pt")
    summary: dict[str, Any] = {}
    if env.is_main:
        log.close()
        plot_curves(out / LOG_NAME, out / "loss_curve.png", f"{args.model} ({cfg.name})")
        if args.export_slim:
            src = best_path if best_path.exists() else last_path
            slim_checkpoint(src, args.export_slim)
        recs = read_log(out / LOG_NAME)
        train_recs = [r for r in recs if r.get("type") == "train"]
        sps = [r["samples_per_s"] for r in train_recs[1:]] or [r["samples_per_s"] for r in train_recs]
        summary = {
            "model": args.model, "config": cfg.name, "out": str(out), "kd": [t for t in KD_TERMS
                                                                           if getattr(cfg.distill, t)]
            if args.model == "student" else None,
            "steps": step, "total_steps": total_steps, "epochs": epoch, "steps_per_epoch": steps_per_epoch,
            "stopped": stopped, "completed": stopped in ("completed", "time_budget"),
            "seconds": round(elapsed_prev + time.time() - t_loop, 2), "wall_seconds_this_process":
                round(time.time() - t_start, 2),
            "samples_per_s": round(float(np.median(sps)), 3) if sps else None,
            "final_loss": train_recs[-1]["total"] if train_recs else None,
            "final": final_metrics, "best_nds": best["NDS"], "best_step": best["step"],
            "world_size": env.world_size, "device": str(device), "amp": use_amp, "seed": args.seed,
            "last": str(last_path), "best": str(best_path) if best_path.exists() else None,
            "teacher_cache": tcache.stats() if tcache is not None else None,
        }
        atomic_write_text(out / SUMMARY_NAME, json.dumps(_jsonable(summary), indent=1) + "\n")
    if env.enabled:
        barrier(env)
        dist.destroy_process_group()
    return summary


@cli_main(prog="train.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; a user error (bad flag, checkpoint, config, dataset, --out, device, a run
    directory it must not overwrite) ends it with one line on stderr and exit status 2."""
    args = parse_args(argv)
    if args.slim:
        path = slim_checkpoint(*args.slim)
        summary = {"slim": str(path), "bytes": path.stat().st_size}
        print(json.dumps(summary))
        return summary
    summary = train(args)
    if summary:
        print(json.dumps(_jsonable(summary)), flush=True)
    return summary


if __name__ == "__main__":
    main()
