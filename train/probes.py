#!/usr/bin/env python3
"""Probes of a trained student (and the distillation weight maps) on the validation scenes.

    python -m train.probes --checkpoint runs/ablation/seed0/full/last.pt \
        --teacher runs/ablation/teacher/best.pt --dataroot /tmp/imkd_bench --version v1.0-synth \
        --val-scenes 'synth-val-*' --out probes.json [--limit N]
    python -m train.probes --coverage-only --teacher T.pt --dataroot ... --out coverage.json

What each part of the student does, measured by taking it away at evaluation time:
- `NDS` / `radar_zeroed_NDS`: devkit NDS as trained / with every radar point masked out;
- `intensity_const_NDS`: the predicted intensity map I_hat replaced per sample by its spatial mean
  (the fusion gates then carry no spatial information);
- `cameras_masked_NDS`: every image replaced by zeros (the normalised mean image);
- `depth_bin_acc`, `depth_abs_err_m`: the depth head's arg-max bin against the nearest key-sweep
  LiDAR return per feature cell (BEVDepth's target), over cells with a return.
With --teacher also the coverage of the distillation weight maps on val (`weight_coverage`): per
map (W1 of L1, W2 of L2 with this student's heatmaps or, coverage-only, with an all-zero student,
the response weight, the L3 target I_L) the fraction of BEV cells with weight, the fraction of
the weight on cells inside GT boxes, and on cells with a radar return. Writes --out (JSON,
atomically) and prints it as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import cli_main

Batch = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="student checkpoint (last.pt / best.pt of a student run)")
    p.add_argument("--teacher", help="teacher checkpoint (for the weight-map coverage)")
    p.add_argument("--coverage-only", action="store_true", help="only the weight-map coverage (needs --teacher)")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--val-scenes", nargs="+", default=["synth-val-*"])
    p.add_argument("--limit", type=int, default=0, help="first N val samples only (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    if not args.coverage_only and not args.checkpoint:
        p.error("--checkpoint is required (or --coverage-only with --teacher)")
    if args.coverage_only and not args.teacher:
        p.error("--coverage-only needs --teacher")
    return args


def load_student(path: str, device: torch.device):
    from imkd_core.checkpoint import CheckpointError, load_checkpoint, load_weights
    from imkd_core.config import IMKDConfig
    from imkd_core.models.detector import Student

    payload = load_checkpoint(path)
    if payload["kind"] != "student":
        raise CheckpointError(f"{path}: expected a student checkpoint, got kind {payload['kind']!r}")
    cfg = IMKDConfig.from_dict(payload["config"])
    model = Student(cfg, load_pretrained=False)
    load_weights(model, payload["model"], path, cfg.name)
    return model.to(device).eval(), cfg


def val_reader(args: argparse.Namespace, cfg: Any):
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
    from imkd_core.preprocess import jpeg_reduction
    from imkd_core.rig import load_rig
    from train.data import source_image_hw

    rig = load_rig(cfg.data.rig)
    nusc = load_nuscenes(args.dataroot, args.version)
    return NuScenesReader(args.dataroot, args.version, scenes=args.val_scenes, load_lidar=True,
                          radar_sweeps=cfg.data.radar_sweeps, lidar_sweeps=cfg.data.lidar_sweeps,
                          image_reduction=jpeg_reduction(source_image_hw(nusc, rig.reference_camera),
                                                         tuple(cfg.data.image_size)), nusc=nusc, rig=rig,
                          input_size=tuple(cfg.data.image_size))


def zero_radar(batch: Batch) -> Batch:
    return {**batch, "radar": torch.zeros_like(batch["radar"]), "radar_mask": torch.zeros_like(batch["radar_mask"])}


def mask_cameras(batch: Batch) -> Batch:
    return {**batch, "images": torch.zeros_like(batch["images"])}


@contextlib.contextmanager
def constant_intensity(model: Any):
    """I_hat replaced by its per-sample spatial mean (logits averaged over the grid)."""
    h = model.fusion.intensity.register_forward_hook(
        lambda _m, _i, out: out.mean((2, 3), keepdim=True).expand_as(out).contiguous())
    try:
        yield
    finally:
        h.remove()


def nds_with(model: Any, reader: Any, cfg: Any, device: torch.device, out_dir: Path, limit: int,
             transform: Callable[[Batch], Batch] | None = None) -> dict[str, float]:
    from imkd_core.evaluate import evaluate
    from train.validation import predict_dataset

    results, tokens = predict_dataset(model, reader, cfg, device, limit=limit, transform=transform)
    with contextlib.redirect_stdout(sys.stderr):
        m = evaluate(reader.nusc, reader.version, results, tokens, out_dir, verbose=False)
    return {k: float(m[k]) for k in ("NDS", "mAP", "mATE", "mAOE", "mAVE")}


def _batches(reader: Any, cfg: Any, limit: int):
    from torch.utils.data import DataLoader, Subset

    from imkd_core.preprocess import collate
    from train.data import make_dataset

    ds = make_dataset(reader, cfg, train=False, seed=0)
    n = len(ds) if not limit else min(limit, len(ds))
    return DataLoader(Subset(ds, list(range(n))), batch_size=2, shuffle=False, num_workers=0, collate_fn=collate)


@torch.no_grad()
def depth_accuracy(model: Any, reader: Any, cfg: Any, device: torch.device, limit: int) -> dict[str, float]:
    """Arg-max depth bin of the student's depth head vs the LiDAR target (cells with a return)."""
    from imkd_core.models.depth import lidar_depth_target
    from imkd_core.models.detector import batch_to

    lo, _, step = cfg.model.depth_bins
    hits = cells = 0
    abs_err = 0.0
    for batch in _batches(reader, cfg, limit):
        batch = batch_to(batch, device)
        out = model(batch)
        target = lidar_depth_target(batch["lidar"], batch["lidar_mask"], batch["intrinsics"], batch["cam_to_ego"],
                                    batch["camera_mask"], cfg.data.image_size, model.feat_size, cfg.model.depth_bins)
        pred = out["depth_logits"].argmax(2)
        ok = target >= 0
        hits += int((pred[ok] == target[ok]).sum())
        abs_err += float(((pred[ok] - target[ok]).abs().float() * step).sum())
        cells += int(ok.sum())
    return {"depth_bin_acc": hits / max(cells, 1), "depth_abs_err_m": abs_err / max(cells, 1),
            "depth_cells": cells, "depth_bin_m": float(step), "depth_min_m": float(lo)}


def box_mask(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, grid: Any) -> torch.Tensor:
    """(B, 1, H, W) cells whose centre lies inside a GT box footprint."""
    ny, nx = grid.shape
    xs = grid.x_bound[0] + (torch.arange(nx, device=gt_boxes.device) + 0.5) * grid.cell
    ys = grid.y_bound[0] + (torch.arange(ny, device=gt_boxes.device) + 0.5) * grid.cell
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")                                  # (H, W)
    b = gt_boxes[..., None, None, :]                                                # (B, G, 1, 1, 9)
    dx, dy = cx - b[..., 0], cy - b[..., 1]
    c, s = torch.cos(b[..., 6]), torch.sin(b[..., 6])
    u, v = c * dx + s * dy, -s * dx + c * dy
    inside = (u.abs() <= b[..., 3] / 2) & (v.abs() <= b[..., 4] / 2) & (gt_labels >= 0)[..., None, None]
    return inside.any(1, keepdim=True).float()


@torch.no_grad()
def weight_coverage(teacher: Any, student: Any | None, reader: Any, cfg: Any, device: torch.device,
                    limit: int) -> dict[str, dict[str, float]]:
    """Per weight map: fraction of cells with weight, fraction of the weight on GT boxes / radar cells."""
    from imkd_core.models import distill as kd
    from imkd_core.models.detector import batch_to
    from imkd_core.models.head import build_targets
    from imkd_core.models.ops import scatter_sum
    from imkd_core.models.radar_encoder import pillar_index

    dc, grid = cfg.distill, cfg.grid
    acc: dict[str, list[float]] = {}
    for batch in _batches(reader, cfg, limit):
        batch = batch_to(batch, device)
        t_out = teacher(batch)
        targets = build_targets(batch["gt_boxes"], batch["gt_labels"], grid, cfg.model.gaussian_overlap,
                                cfg.model.min_radius)
        h_gt = targets["heatmap"].amax(1, keepdim=True)
        i_l = t_out["I_L"]
        t_logits = teacher.head.all_class_logits(t_out["heads"])
        s_logits = (student.head.all_class_logits(student(batch)["heads"]) if student is not None
                    else torch.full_like(t_logits, -20.0))
        on_box = box_mask(batch["gt_boxes"], batch["gt_labels"], grid)
        idx, valid = pillar_index(batch["radar"][..., :3], batch["radar_mask"], grid)
        B, (H, W) = i_l.shape[0], grid.shape
        radar_count = scatter_sum(torch.ones(int(valid.sum()), device=device), idx[valid], B * H * W).view(B, 1, H, W)
        radar_occ = (radar_count > 0).float()
        maps = kd.weight_maps(dc, i_l, h_gt, radar_count, t_out["F_L"], t_logits, s_logits, targets["heatmap"])
        for name, w in maps.items():
            tot = float(w.sum())
            a = acc.setdefault(name, [0.0, 0.0, 0.0, 0.0, 0.0])
            a[0] += float((w > 0).float().sum())
            a[1] += w.numel()
            a[2] += float((w * on_box).sum())
            a[3] += float((w * radar_occ).sum())
            a[4] += tot
        g = acc.setdefault("_cells", [0.0, 0.0, 0.0, 0.0, 0.0])
        g[0] += float(on_box.sum())
        g[1] += on_box.numel()
        g[2] += float(radar_occ.sum())
    out = {name: {"frac_cells": a[0] / max(a[1], 1), "frac_weight_on_gt_boxes": a[2] / max(a[4], 1e-12),
                  "frac_weight_on_radar_cells": a[3] / max(a[4], 1e-12)}
           for name, a in acc.items() if name != "_cells"}
    g = acc.get("_cells", [0.0, 1.0, 0.0])
    out["grid"] = {"frac_cells_in_gt_boxes": g[0] / max(g[1], 1), "frac_cells_radar_active": g[2] / max(g[1], 1)}
    return out


@cli_main(prog="probes.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from imkd_core.device import resolve_device
    from train.checkpoints import load_teacher

    args = parse_args(argv)
    device = resolve_device(args.device)
    out_dir = Path(args.out).with_suffix("")
    out: dict[str, Any] = {"limit": args.limit}
    student, cfg = (None, None) if args.coverage_only else load_student(args.checkpoint, device)
    if cfg is None:
        from imkd_core.checkpoint import load_checkpoint
        from imkd_core.config import IMKDConfig

        cfg = IMKDConfig.from_dict(load_checkpoint(args.teacher)["config"])
    reader = val_reader(args, cfg)
    if student is not None:
        out["checkpoint"] = args.checkpoint
        base = nds_with(student, reader, cfg, device, out_dir / "base", args.limit)
        out.update(base)
        out["radar_zeroed"] = nds_with(student, reader, cfg, device, out_dir / "radar", args.limit, zero_radar)
        with constant_intensity(student):
            out["intensity_const"] = nds_with(student, reader, cfg, device, out_dir / "inten", args.limit)
        out["cameras_masked"] = nds_with(student, reader, cfg, device, out_dir / "cams", args.limit, mask_cameras)
        for k in ("radar_zeroed", "intensity_const", "cameras_masked"):
            out[f"{k}_NDS"] = out[k]["NDS"]
        out.update(depth_accuracy(student, reader, cfg, device, args.limit))
    if args.teacher:
        teacher = load_teacher(args.teacher, cfg, device)
        out["weight_coverage"] = weight_coverage(teacher, student, reader, cfg, device, args.limit)
    atomic_write_text(Path(args.out), json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
