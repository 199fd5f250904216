#!/usr/bin/env python3
"""Evaluate on a nuScenes-format dataset with the devkit metrics (NDS, mAP, TP errors, per-class AP).

Modes:
  --gt-as-predictions [--shift-m X]   the ground truth scored as predictions (sanity: mAP ~ 1; a shift
                                      of X metres shows the metric reacts)
  --checkpoint C [--config NAME]      detections of a trained model through imkd_core.predict.Predictor

Prints a table and, as its last line, one JSON object with the metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from tqdm import tqdm

from imkd_core.data.nuscenes import NuScenesReader
from imkd_core.device import resolve_device
from imkd_core.errors import cli_main, writable_dir
from imkd_core.evaluate import detections_to_results, evaluate, format_metrics, gt_as_predictions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="folder holding the version folder and samples/")
    p.add_argument("--version", default="v1.0-trainval", help="version folder name (v1.0-mini, v1.0-synth, ...)")
    p.add_argument("--scenes", nargs="+", default=["all"],
                   help="scene names or shell patterns ('synth-val-*'), or 'all'")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gt-as-predictions", action="store_true", help="score the ground truth itself")
    mode.add_argument("--checkpoint", help="model checkpoint for imkd_core.predict.Predictor")
    p.add_argument("--config", default=None, help="model config name or YAML (default: the checkpoint's)")
    p.add_argument("--shift-m", type=float, default=0.0, help="shift every GT prediction X m to the ego's left")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples (smoke runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default="eval_out", help="output folder (results_nusc.json, metrics_summary.json)")
    p.add_argument("--quiet", action="store_true", help="no devkit progress output")
    args = p.parse_args(argv)
    if args.shift_m and not args.gt_as_predictions:
        p.error("--shift-m applies to --gt-as-predictions only")
    return args


def predict_results(args: argparse.Namespace) -> tuple[NuScenesReader, dict[str, Any]]:
    """Build the Predictor, a reader matching its input settings, and the devkit results of all frames."""
    from imkd_core.data.nuscenes import load_nuscenes
    from imkd_core.predict import Predictor  # written alongside; imported lazily on purpose
    from imkd_core.preprocess import jpeg_reduction
    from imkd_core.rig import load_rig
    from train.data import source_image_hw

    predictor = Predictor(config=args.config, checkpoint=args.checkpoint, device=resolve_device(args.device))
    nusc = load_nuscenes(args.dataroot, args.version)
    data_cfg = getattr(getattr(predictor, "config", None), "data", None)
    reduction, radar_sweeps, rig = 1, 6, load_rig("nuscenes")
    if data_cfg is not None:  # decode at the scale the model uses (the ROS node does the same)
        rig = load_rig(data_cfg.rig)  # the rig the checkpoint was trained for
        reduction = jpeg_reduction(source_image_hw(nusc, rig.reference_camera), tuple(data_cfg.image_size))
        radar_sweeps = int(data_cfg.radar_sweeps)
    reader = NuScenesReader(args.dataroot, args.version, scenes=args.scenes, load_lidar=False,
                            radar_sweeps=radar_sweeps, image_reduction=reduction, nusc=nusc, rig=rig,
                            input_size=tuple(data_cfg.image_size) if data_cfg is not None else None)
    dets, poses = {}, {}
    for token in tqdm(_tokens(reader, args.max_samples), desc="predict", unit="frame"):
        frame, _ = reader[reader.index_of(token)]
        dets[frame.token] = predictor.predict(frame)
        poses[frame.token] = frame.ego_to_global
    return reader, detections_to_results(dets, poses)


def _tokens(reader: NuScenesReader, max_samples: int | None) -> list[str]:
    return reader.sample_tokens if max_samples is None else reader.sample_tokens[:max_samples]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


@cli_main(prog="evaluate.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; a bad checkpoint, config, dataset table, device or --out is one line on
    stderr and exit status 2."""
    args = parse_args(argv)
    resolve_device(args.device)
    writable_dir(args.out)
    t0 = time.time()
    if args.gt_as_predictions:
        reader = NuScenesReader(args.dataroot, args.version, scenes=args.scenes, load_lidar=False)
        results = gt_as_predictions(reader, _tokens(reader, args.max_samples), args.shift_m, progress=True)
        mode = "gt_as_predictions"
    else:
        reader, results = predict_results(args)
        mode = "checkpoint"
    tokens = _tokens(reader, args.max_samples)
    metrics = evaluate(reader.nusc, args.version, results, tokens, args.out, verbose=not args.quiet)
    if args.quiet:
        print(format_metrics(metrics))
    summary = {"mode": mode, "version": args.version, "scenes": reader.scenes, "samples": len(tokens),
               "shift_m": args.shift_m, "missing_files": reader.missing_files, "out": args.out,
               "seconds": round(time.time() - t0, 2), **metrics}
    print(json.dumps(_jsonable(summary)), flush=True)
    return metrics


if __name__ == "__main__":
    main()
