#!/usr/bin/env python3
"""Per-step cost of the ablation's student runs, side by side in one run: the teacher run live in
every step, its outputs written to the teacher-output cache, and read back from it; the no-KD
student (no teacher at all) as the floor.

    python -m train.bench_ablation_step --dataroot /tmp/imkd_bench --teacher runs/ablation/teacher/best.pt \
        [--steps 20] [--batch-size 4] [--set data.lidar_sweeps=10] [--kd l1,l2,l3,resp]

Every variant is a real train.py run (same seed, so the same batches; no validation); the step
time is the median of the log's per-step times after the first 3 steps. Prints a table and, as its
last line, one JSON object with the seconds per step and the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from imkd_core.errors import cli_main

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--train-scenes", nargs="+", default=["synth-train-*"])
    p.add_argument("--teacher", required=True, help="teacher checkpoint")
    p.add_argument("--config", default="tiny")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--kd", default="l1,l2,l3,resp", help="KD terms of the distilled variants")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=1)
    return p.parse_args(argv)


def step_seconds(run_dir: Path) -> float:
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    t = [r["time"] for r in recs if r.get("type") == "train"]
    return float(np.median(np.diff(t)[3:])) if len(t) > 5 else float("nan")


@cli_main(prog="bench_ablation_step.py")
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="imkd-bench-step-"))
    cache = tmp / "cache"
    base = [sys.executable, "-m", "train.train", "--model", "student", "--config", args.config,
            "--dataroot", args.dataroot, "--version", args.version, "--train-scenes", *args.train_scenes,
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", "0",
            "--num-workers", str(args.num_workers), "--no-progress"]
    for o in args.overrides:
        base += ["--set", o]
    kd = ["--kd", args.kd, "--teacher", args.teacher]
    variants = {"nokd": ["--kd", "none"], "kd_live": kd, "kd_cache_write": kd + ["--teacher-cache", str(cache)],
                "kd_cache_read": kd + ["--teacher-cache", str(cache)]}
    out: dict = {"steps": args.steps, "batch_size": args.batch_size, "kd": args.kd, "overrides": args.overrides}
    for name, extra in variants.items():
        rd = tmp / name
        proc = subprocess.run(base + extra + ["--out", str(rd)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        out[f"{name}_s_per_step"] = round(step_seconds(rd), 4)
        summ = json.loads((rd / "summary.json").read_text())
        if summ.get("teacher_cache"):
            out[f"{name}_cache"] = {k: summ["teacher_cache"][k] for k in ("hits", "misses", "mismatches")}
    out["cache_speedup_vs_live"] = round(out["kd_live_s_per_step"] / out["kd_cache_read_s_per_step"], 3)
    out["teacher_share_of_live_step"] = round(1 - out["nokd_s_per_step"] / out["kd_live_s_per_step"], 3)
    out["cache_bytes_per_step"] = int(sum(p.stat().st_size for p in cache.rglob("*.pt")) / max(args.steps, 1))
    shutil.rmtree(tmp, ignore_errors=True)
    for k, v in out.items():
        print(f"{k:32s} {v}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
