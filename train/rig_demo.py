#!/usr/bin/env python3
"""The demo on another rig: train a small teacher and student for it, then run `make demo`'s steps.

    python -m train.rig_demo --rig config/rigs/compact4.yaml [--out demo_out_rig] [--scenes 8]
        [--samples-per-scene 20] [--teacher-steps 150] [--steps 150] [--batch-size 4]
    make demo RIG=config/rigs/compact4.yaml

1. generate a synthetic training world seen by the rig (imkd_core.data.synthetic, seed 7,
   --scenes x --samples-per-scene keyframes with sweeps) into <out>/train_data;
2. train the tiny LiDAR teacher (--teacher-steps) and a tiny student initialised from it and
   distilled with L1 (--steps; python -m train.train --rig R), into <out>/teacher, <out>/student;
3. run imkd_ros.demo with that student: a fresh world (seed 2026) seen by the rig -> bag with the
   rig's topics -> the detector node with rig:=R (lock-step) -> devkit metrics, closed loop next
   to the offline evaluator, pictures, in <out>/.

The defaults take about 10 to 20 minutes on 2 CPU cores and give a student that detects, not a
good one: the shipped nuScenes demo model saw far more training. The last stdout line is the
demo's JSON object, with the training runs' summaries added under "training".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imkd_core.errors import cli_main
from imkd_core.rig import load_rig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rig", required=True, help="a shipped rig's name (compact4, nuscenes) or a rig YAML path")
    p.add_argument("--out", default="demo_out_rig", help="output folder")
    p.add_argument("--scenes", type=int, default=8, help="training world: scenes (1 in 4 held out for validation)")
    p.add_argument("--samples-per-scene", type=int, default=20)
    p.add_argument("--image-size", default="352x198", help="WxH of the rig's first camera in the synthetic worlds")
    p.add_argument("--teacher-steps", type=int, default=150)
    p.add_argument("--steps", type=int, default=150, help="student steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain of the demo's node")
    return p.parse_args(argv)


def _train(args: list[str]) -> dict[str, Any]:
    from train.train import main as train_main

    summary = train_main(args)
    if not summary or not summary.get("completed"):
        raise RuntimeError(f"training did not complete: {summary}")
    return summary


@cli_main(prog="train.rig_demo")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from imkd_core.data.synthetic import SyntheticConfig, generate, parse_image_size
    from imkd_ros.demo import run_demo
    from imkd_ros.replay_eval import _jsonable

    rig = load_rig(args.rig)  # a bad rig file: one line, exit 2, before anything runs
    out = Path(args.out)
    data = out / "train_data"
    if not (data / "synthetic_meta.json").is_file():
        print(f"[rig_demo] rig {rig.name!r}: generating {args.scenes} scenes into {data}", file=sys.stderr)
        generate(data, SyntheticConfig(scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=7,
                                       image_size=parse_image_size(args.image_size), val_fraction=0.25,
                                       rig=args.rig))
    common = ["--config", "tiny", "--rig", args.rig, "--dataroot", str(data), "--version", "v1.0-synth",
              "--train-scenes", "synth-train-*", "--val-scenes", "synth-val-*", "--val-every", "0",
              "--batch-size", str(args.batch_size), "--num-workers", "1", "--no-progress", "--resume", "auto"]
    teacher = _train(["--model", "teacher", *common, "--max-steps", str(args.teacher_steps),
                      "--out", str(out / "teacher")])
    student = _train(["--model", "student", *common, "--max-steps", str(args.steps), "--kd", "l1,init",
                      "--teacher", str(out / "teacher" / "last.pt"), "--out", str(out / "student"),
                      "--export-slim", str(out / "student.pt")])
    result = run_demo(out, checkpoint=str(out / "student.pt"), rig=args.rig, domain_id=args.domain_id,
                      image_size=parse_image_size(args.image_size))
    result["training"] = {"teacher": teacher.get("final"), "student": student.get("final")}
    print((out / "metrics.md").read_text())
    print(json.dumps(_jsonable(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
