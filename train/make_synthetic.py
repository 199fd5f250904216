#!/usr/bin/env python3
"""Generate a synthetic nuScenes-format dataset (a rig's cameras and radars, LiDAR, 10 classes).

    python -m train.make_synthetic --out data_synth --scenes 10 --samples-per-scene 40 --seed 0 \
        [--image-size 704x396] [--jobs 2] [--version v1.0-synth] [--no-sweeps] [--overwrite]
    python -m train.make_synthetic --out /tmp/imkd_bench --preset bench   # the ablation benchmark
    python -m train.make_synthetic --out data_c4 --rig compact4 --image-size 640x360   # another rig

--rig takes a shipped rig (nuscenes, the default: 6 cameras, 5 ARS408 radars; compact4) or a
rig YAML (docs/rigs.md): its cameras are rendered at their own field of view and resolution
(the first at --image-size) and its radars' PCD files carry the rig's fields under its names.

--preset NAME takes scenes, samples per scene, seed and val fraction from the named world
(imkd_core.data.synthetic.PRESETS; `bench`: 36 scenes x 20 samples, 12 val scenes = 240 val
samples, seed 1414); the explicit options above then override it.

The dataset is written to DIR.partial and renamed to DIR only when complete, so an interrupted
run leaves an obvious DIR.partial (removed by the next run). Load it with
`NuScenes(version, DIR)`; scene names 'synth-train-NNNN' / 'synth-val-NNNN' give the split
(`imkd_core.data.synthetic.split_scene_names`). Prints a summary and, as its last line, one JSON
object (scenes, samples, files, seconds, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from imkd_core.data.synthetic import PRESETS, SyntheticConfig, generate, parse_image_size
from imkd_core.errors import cli_main
from imkd_core.rig import load_rig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output dataroot (written via OUT.partial)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named world (its scenes, samples per scene, seed, val fraction)")
    p.add_argument("--scenes", type=int, default=None, help="default 10 (or the preset's)")
    p.add_argument("--samples-per-scene", type=int, default=None, help="default 40 (or the preset's)")
    p.add_argument("--seed", type=int, default=None, help="default 0 (or the preset's)")
    p.add_argument("--image-size", type=parse_image_size, default=(704, 396),
                   help="WxH of the rig's first camera (default 704x396); the others scale with it")
    p.add_argument("--rig", default="nuscenes", help="sensor rig: a shipped name (nuscenes, compact4) or a YAML path")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 2),
                   help="worker processes over scenes (output is identical for any value)")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--val-fraction", type=float, default=None, help="default 0.2 (or the preset's)")
    p.add_argument("--no-sweeps", action="store_true", help="keyframes only (faster; no sweep files)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return p.parse_args(argv)


@cli_main(prog="make_synthetic.py")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = dict(scenes=10, samples_per_scene=40, seed=0, val_fraction=0.2)
        base.update(PRESETS[args.preset] if args.preset else {})
        given = {k: getattr(args, k) for k in base if getattr(args, k) is not None}
        cfg = SyntheticConfig(**{**base, **given}, image_size=args.image_size, version=args.version,
                              jobs=args.jobs, sweeps=not args.no_sweeps, rig=args.rig)
        load_rig(cfg.rig)  # a bad rig file fails here, in one line, before anything is written
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists (use --overwrite to replace it)", file=sys.stderr)
        return 2
    if partial.exists():
        print(f"removing {partial} left by an interrupted run", file=sys.stderr)
        shutil.rmtree(partial)
    total = cfg.scenes * cfg.samples_per_scene
    with tqdm(total=total, unit="sample", desc="synthetic", file=sys.stderr, dynamic_ncols=True) as bar:
        summary = generate(partial, cfg, progress=bar.update)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    summary["out_dir"] = str(out)
    counts = summary["class_counts"]
    print(f"wrote {summary['scenes']} scenes ({summary['train_scenes']} train / {summary['val_scenes']} val), "
          f"{summary['samples']} samples, {summary['sample_data']} sample_data, {summary['annotations']} "
          f"annotations, {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s")
    print("annotations per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"load with: NuScenes('{cfg.version}', '{out}')")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
