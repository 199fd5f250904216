"""A run's checkpoints and directory: slim inference copies, the frozen teacher of a student run,
whether --out may be continued or started afresh, and --force applied to a loaded optimiser."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from imkd_core.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from imkd_core.config import ConfigError, IMKDConfig
from imkd_core.errors import UserError
from imkd_core.models.detector import Teacher
from train.runlog import LOG_NAME, SUMMARY_NAME

# Files of a run in --out: a fresh start never replaces them without --force.
RUN_FILES = ("last.pt", "best.pt", LOG_NAME, SUMMARY_NAME)


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
