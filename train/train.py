#!/usr/bin/env python3
"""Train the IMKD LiDAR teacher or the distilled camera + radar student.

    # 1. teacher (LiDAR only)
    python -m train.train --model teacher --config tiny --dataroot /tmp/synth_default --version v1.0-synth \
        --train-scenes 'synth-train-*' --val-scenes 'synth-val-*' --max-steps 2000 --out runs/teacher
    # 2. student distilled from the frozen teacher (--kd none for the plain camera + radar baseline)
    python -m train.train --model student --config tiny --dataroot /tmp/synth_default --version v1.0-synth \
        --train-scenes 'synth-train-*' --val-scenes 'synth-val-*' --teacher runs/teacher/best.pt \
        --kd l1,l2,l3 --max-steps 2000 --out runs/student
    # continue an interrupted run exactly where its last checkpoint left it
    python -m train.train ...same arguments... --resume
    # multi-GPU / multi-node: the same command under torchrun (see docs/training.md)
    torchrun --standalone --nproc_per_node 8 -m train.train ...

What it does: AdamW (no weight decay on norms and biases), linear warm-up then cosine (or one-cycle)
decay defined over total_steps = --max-steps or epochs x steps_per_epoch (so a run cut short by
--time-budget-min follows the same schedule as the full one), gradient clipping, AMP (float16 +
GradScaler) on CUDA, DistributedDataParallel under torchrun (NCCL on GPU, gloo on CPU) with a
DistributedSampler, seeded and deterministic CPU runs. Checkpoints are atomic (imkd_core.checkpoint,
weights_only-loadable) and hold model, optimizer, scheduler, scaler, step/epoch and every RNG state:
`last.pt` every --ckpt-every steps and at each epoch end, `best.pt` by validation NDS. --resume
continues exactly (same batches, augmentations and losses as an uninterrupted run). Validation
runs the val scenes through the batched imkd_core.predict.Predictor (evaluation preprocessing,
student without LiDAR) and scores them with the nuScenes devkit (imkd_core.evaluate).

Outputs in --out: last.pt, best.pt, log.jsonl (one record per step: every loss term incl. each KD
term separately, lr, grad norm, samples/s; one per validation), loss_curve.png, val/ (devkit
files of the latest validation), summary.json. The LAST line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from imkd_core.errors import cli_main
from train.checkpoints import slim_checkpoint
from train.loop import train
from train.run_config import parse_kd
from train.runlog import jsonable


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
    g.add_argument("--rig", default=None, help="sensor rig (imkd_core.rig): a shipped name (nuscenes, compact4) or "
                   "a YAML path; sets data.rig and the rig's sweep counts (default: the config's, nuscenes)")
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
        print(json.dumps(jsonable(summary)), flush=True)
    return summary


if __name__ == "__main__":
    main()
