"""`make demo`: synthetic scene -> rosbag2 -> detector node (closed loop) -> devkit metrics + pictures.

    python -m imkd_ros.demo [--out demo_out] [--checkpoint PATH | --random-init] [--samples 16]
                            [--seed 2026] [--image-size 704x396] [--no-sweeps] [--rate 1.0] [--rig R]

The world is seen by the checkpoint's sensor rig (imkd_core.rig; the demo checkpoint's is
nuscenes). For another rig, `make demo RIG=config/rigs/compact4.yaml` (python -m train.rig_demo)
first trains a small teacher and student for it, then runs these steps with that student.

Steps, all deterministic (fixed seed, lock-step replay):
1. generate a small synthetic nuScenes-format dataset with imkd_core.data.synthetic (2 scenes of
   `--samples` keyframes, with sweeps unless --no-sweeps; seed 2026, a world the demo checkpoint
   was not trained on) into <out>/work/data; only its validation scene synth-val-0001 is used;
2. convert that scene to a bag with imkd_ros.nuscenes_to_bag (MCAP, ground truth, no LiDAR)
   into <out>/work/bags/synth-val-0001 (replayable afterwards with `imkd-replay`);
3. run imkd_ros.replay_eval on it: the detector node in its own process with the shipped
   checkpoint (imkd_core/weights/imkd_tiny_demo.pt, or --checkpoint), lock-step replay,
   detections recorded and scored with the devkit, plus the offline evaluator on the same
   samples for comparison; the ROS graph is private (its own ROS_DOMAIN_ID, localhost only);
4. write to <out>/: metrics.md and metrics.json (closed loop vs offline), bev.png (bird's-eye
   view of detections vs ground truth on four keyframes, with radar points), camera.png (one
   CAM_FRONT image with the projected detection and ground-truth boxes), and eval/ (the
   devkit's files, node.log, per-frame detections).

Prints progress on stderr and, as its LAST stdout line, one JSON object with the metrics.
Exit codes: 0 ok, 1 error (e.g. the demo checkpoint is not installed: pass --checkpoint).
--random-init builds a randomly initialised `tiny` student instead (a plumbing check: the
metrics are then near zero).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.atomic import atomic_write_bytes
from imkd_core.data.synthetic import parse_image_size
from imkd_core.errors import cli_main
from imkd_core.frame import CLASSES, Detections
from imkd_core.weights import DEMO_CHECKPOINT

SCENE = "synth-val-0001"
VERSION = "v1.0-synth"
# Bottom-face corner indices (in box_corners' order) as a closed polygon, and the 12 box edges.
_FOOTPRINT = [1, 3, 7, 5, 1]
_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


class DemoError(RuntimeError):
    """The demo cannot run (missing checkpoint, failed step); the message says what to do."""


def _log(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def _private_ros_env(domain_id: int | None) -> int:
    """A ROS domain of our own (localhost discovery only) so the demo never meets other graphs."""
    if domain_id is None:
        domain_id = 150 + os.getpid() % 80  # 150..229: Fast DDS accepts 0..232
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    for var in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS"):
        os.environ.pop(var, None)
    return domain_id


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | None, random_init: bool, work: Path, rig: str | None = None) -> Path:
    """The checkpoint to run: --checkpoint, a fresh random-init tiny one (for `rig`), or the shipped demo one."""
    if random_init:
        import torch

        from imkd_core.checkpoint import save_checkpoint
        from imkd_core.config import get_config
        from imkd_core.models.detector import Student

        torch.manual_seed(0)
        cfg = get_config("tiny")
        if rig:
            cfg.data.rig = rig
        model = Student(cfg, load_pretrained=False)
        return save_checkpoint(work / "random_init_tiny.pt",
                               {"kind": "student", "config": cfg.to_dict(), "model": model.state_dict()})
    ckpt = Path(path) if path else DEMO_CHECKPOINT
    if not ckpt.is_file():
        if path:
            raise DemoError(f"checkpoint not found: {ckpt}")
        raise DemoError(f"the demo checkpoint {ckpt} is not installed (a full install ships it); run with "
                        "--checkpoint PATH to use a student checkpoint you have, or --random-init for a plumbing "
                        "check with an untrained model")
    from imkd_core.checkpoint import CheckpointError, load_checkpoint

    try:
        payload = load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise DemoError(str(exc)) from exc
    if payload["kind"] != "student":
        raise DemoError(f"{ckpt} is a {payload['kind']} checkpoint; the node needs a student checkpoint")
    return ckpt


def make_dataset(root: Path, samples: int, seed: int, image_size: tuple[int, int], sweeps: bool,
                 rig: str = "nuscenes") -> dict[str, Any]:
    """Two synthetic scenes (train + val) seen by `rig` in `root` (regenerated from scratch: deterministic)."""
    from imkd_core.data.synthetic import SyntheticConfig, generate

    if root.exists():
        shutil.rmtree(root)
    cfg = SyntheticConfig(scenes=2, samples_per_scene=samples, seed=seed, image_size=image_size, version=VERSION,
                          val_fraction=0.5, jobs=1, sweeps=sweeps, rig=rig)
    return generate(root, cfg)


def make_bag(nusc: Any, bags: Path, rig: str = "nuscenes") -> Path:
    """SCENE of `nusc` -> bags/SCENE (MCAP, ground truth, no LiDAR; the rig's topics and frames)."""
    from imkd_ros.nuscenes_to_bag import ConvertOptions, convert_scene

    if bags.exists():
        shutil.rmtree(bags)
    stats = convert_scene(nusc, SCENE, bags, ConvertOptions(lidar=False, progress=False, rig=rig))
    if stats.status != "ok":
        raise DemoError(f"conversion of {SCENE} failed: {stats.error or stats.status}")
    if stats.corrupt or stats.missing:
        raise DemoError(f"conversion of {SCENE} skipped files: missing {stats.missing}, corrupt {stats.corrupt}")
    return stats.bag


# ----------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------


def _corners(boxes: np.ndarray) -> np.ndarray:
    from imkd_ros.msgs import box_corners

    return box_corners(np.asarray(boxes, dtype=np.float64)) if len(boxes) else np.zeros((0, 8, 3))


def _save_figure(fig: Any, path: Path, dpi: int) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # no version stamp: reproducible bytes
    atomic_write_bytes(path, buf.getvalue())


def draw_bev(path: Path, panels: Sequence[dict[str, Any]], score_min: float, extent: float = 50.0) -> None:
    """A grid of bird's-eye views (x forward = up, y left = left): GT footprints (black), detections
    (class colours, score >= score_min, alpha by score), radar points (grey), the ego car (origin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from imkd_core.frame import CLASS_COLORS

    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        radar = panel["radar"]
        if len(radar):
            ax.scatter(-radar[:, 1], radar[:, 0], s=3, c="0.6", linewidths=0, zorder=1)
        for corners in _corners(panel["gt_boxes"]):
            fp = corners[_FOOTPRINT]
            ax.plot(-fp[:, 1], fp[:, 0], color="black", lw=1.0, zorder=2)
        det: Detections = panel["detections"]
        keep = det.scores >= score_min
        boxes, labels, scores = det.boxes[keep], det.labels[keep], det.scores[keep]
        for box, corners, label, score in zip(boxes, _corners(boxes), labels, scores):
            fp = corners[_FOOTPRINT]
            colour = CLASS_COLORS[int(label)]
            alpha = float(np.clip(0.35 + float(score), 0.35, 1.0))
            ax.plot(-fp[:, 1], fp[:, 0], color=colour, lw=1.6, alpha=alpha, zorder=3)
            front = (corners[0] + corners[2]) / 2  # the +x face centre: heading
            ax.plot([-box[1], -front[1]], [box[0], front[0]], color=colour, lw=1.0, alpha=alpha, zorder=3)
        ax.add_patch(Rectangle((-0.95, -2.3), 1.9, 4.6, color="tab:green", zorder=4))
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("-y (m, left <-> right)", fontsize=8)
        ax.set_ylabel("x (m, forward)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    present = sorted({int(lbl) for p in panels for lbl in p["detections"].labels[p["detections"].scores >= score_min]})
    handles = [Line2D([0], [0], color="black", lw=1.0, label="ground truth")]
    handles += [Line2D([0], [0], color=CLASS_COLORS[i], lw=2, label=CLASSES[i]) for i in present]
    handles += [Line2D([0], [0], marker="o", color="0.6", lw=0, markersize=3, label="radar")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(f"closed loop (bag -> node): detections with score >= {score_min:g} vs ground truth", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    _save_figure(fig, path, dpi=90)
    plt.close(fig)


def draw_camera(path: Path, image_rgb: np.ndarray, K: np.ndarray, cam_to_ego: np.ndarray, det: Detections,
                gt_boxes: np.ndarray, score_min: float, title: str) -> int:
    """CAM_FRONT image with projected 3D boxes (detections in class colours, GT dashed white);
    returns the number of detection boxes drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imkd_core.frame import CLASS_COLORS

    h, w = image_rgb.shape[:2]
    ego_to_cam = np.linalg.inv(cam_to_ego)

    def project(boxes: np.ndarray) -> list[np.ndarray]:
        out = []
        for corners in _corners(boxes):
            cam = corners @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
            if (cam[:, 2] < 0.5).any():
                continue
            uv = cam @ K.T
            uv = uv[:, :2] / uv[:, 2:3]
            if uv[:, 0].max() < 0 or uv[:, 0].min() > w or uv[:, 1].max() < 0 or uv[:, 1].min() > h:
                continue
            out.append(uv)
        return out

    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image_rgb)
    for uv in project(gt_boxes):
        for a, b in _EDGES:
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], color="white", lw=0.8, ls="--", alpha=0.8)
    keep = det.scores >= score_min
    drawn = 0
    for label, box in zip(det.labels[keep], det.boxes[keep]):
        uvs = project(box[None])
        if not uvs:
            continue
        drawn += 1
        for a, b in _EDGES:
            ax.plot(uvs[0][[a, b], 0], uvs[0][[a, b], 1], color=CLASS_COLORS[int(label)], lw=1.4)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    ax.text(4, 14, title, color="white", fontsize=8, bbox={"facecolor": "black", "alpha": 0.5, "pad": 2})
    _save_figure(fig, path, dpi=100)
    plt.close(fig)
    return drawn


def render_pictures(out: Path, report: Any, score_min: float) -> dict[str, Any]:
    """bev.png (four keyframes) and camera.png (the keyframe with the most boxes in the reference
    camera: the rig's first, nuScenes' CAM_FRONT)."""
    import cv2

    from imkd_core.geometry import pose_matrix_wxyz

    nusc, reader = report.nusc, report.reader
    frames = report.closed.keyframes  # stamp -> token, in time order
    tokens = list(frames.values())
    dets = {t: report.closed.detections.get(t, Detections.empty()) for t in tokens}
    picks = sorted({int(round(i)) for i in np.linspace(0, len(tokens) - 1, min(4, len(tokens)))})
    panels = []
    for k in picks:
        token = tokens[k]
        i = reader.index_of(token)
        frame, gt = reader[i]
        scored = (gt.num_lidar_pts + gt.num_radar_pts) > 0 if gt.num_lidar_pts is not None else np.ones(len(gt), bool)
        n_det = int((dets[token].scores >= score_min).sum())
        panels.append({"title": f"keyframe {k + 1}/{len(tokens)}: {n_det} detections, {int(scored.sum())} GT boxes",
                       "radar": frame.radar, "gt_boxes": gt.boxes[scored], "detections": dets[token]})
    draw_bev(out / "bev.png", panels, score_min)

    # camera: the keyframe whose reference camera sees the most confident detections (first on ties)
    ref_cam = reader.rig.reference_camera
    best, best_n = tokens[0], -1
    cams: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    for token in tokens:
        sd = nusc.get("sample_data", nusc.get("sample", token)["data"][ref_cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        T = pose_matrix_wxyz(cs["translation"], cs["rotation"])
        K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
        cams[token] = (K, T, sd["filename"])
        d = dets[token]
        keep = d.scores >= score_min
        if keep.any():
            cam = d.boxes[keep, :3].astype(np.float64) @ np.linalg.inv(T)[:3, :3].T + np.linalg.inv(T)[:3, 3]
            n = int((cam[:, 2] > 1.0).sum())
        else:
            n = 0
        if n > best_n:
            best, best_n = token, n
    K, T, filename = cams[best]
    bgr = cv2.imread(str(Path(nusc.dataroot) / filename), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"cannot read {filename} under {nusc.dataroot}")
    gt = reader.ground_truth(reader.index_of(best))
    k = tokens.index(best)
    drawn = draw_camera(out / "camera.png", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), K, T, dets[best], gt.boxes,
                        score_min, f"{ref_cam}, keyframe {k + 1}/{len(tokens)}: detections (colour, score >= "
                        f"{score_min:g}) and ground truth (dashed)")
    return {"bev_keyframes": [k + 1 for k in picks], "camera_keyframe": k + 1, "camera_boxes": drawn}


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def metrics_markdown(summary: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """metrics.md: headline metrics (closed loop vs offline), AP per class, run facts."""
    rep, off = summary["replay"], summary.get("offline")
    lines = ["# IMKD-ROS demo: closed-loop metrics", "",
             f"Synthetic scene `{info['scene']}` ({info['keyframes']} keyframes, {info['image_size']}, seed "
             f"{info['seed']}) -> bag -> `imkd_detector` node (lock-step replay) -> nuScenes devkit metrics. "
             f"Checkpoint: `{info['checkpoint']}`; rig `{info['rig']}`.", "",
             "| metric | closed loop (bag -> node) | offline (Predictor) | difference |",
             "|---|---:|---:|---:|"]
    for key in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "NDS_present", "mAP_present"):
        if off is not None:
            lines.append(f"| {key} | {rep[key]:.4f} | {off[key]:.4f} | {rep[key] - off[key]:+.4f} |")
        else:
            lines.append(f"| {key} | {rep[key]:.4f} | | |")
    lines += ["", "NDS/mAP average over all 10 classes (the devkit's definition); *_present over the classes with "
              f"ground truth in this scene: {', '.join(summary['classes_with_gt'])}.", "",
              "| class | AP closed loop | AP offline |", "|---|---:|---:|"]
    ap_r = summary["per_class_AP"]["replay"]
    ap_o = summary["per_class_AP"].get("offline", {})
    for c in CLASSES:
        lines.append(f"| {c} | {ap_r[c]:.4f} | " + (f"{ap_o[c]:.4f} |" if c in ap_o else " |"))
    pub = summary.get("replay_publish_error_ms", {})
    lines += ["", f"- frames: {summary['frames_received']}/{summary['frames_expected']} keyframes answered by the node",
              f"- detections: score >= {summary['score_threshold']}, at most {summary['max_detections']} per frame",
              f"- replay publish-time error: p50 {pub.get('p50', float('nan')):.3f} ms, "
              f"p95 {pub.get('p95', float('nan')):.3f} ms",
              f"- closed loop {summary['closed_loop_s']:.1f} s; whole demo {info['seconds']:.1f} s", ""]
    return "\n".join(lines)


def run_demo(out: Path, checkpoint: str | None = None, random_init: bool = False, samples: int = 16,
             seed: int = 2026, image_size: tuple[int, int] = (704, 396), sweeps: bool = True, rate: float = 1.0,
             score_min: float = 0.3, domain_id: int | None = None, progress: bool = True,
             rig: str | None = None) -> dict[str, Any]:
    """All demo steps; returns the final JSON object (also in out/metrics.json). The world is seen
    by the checkpoint's rig (`rig` for --random-init; given with a checkpoint, it must be its rig)."""
    from imkd_core.data.nuscenes import load_nuscenes
    from imkd_ros.replay_eval import checkpoint_rig, run_replay_eval, write_json

    t0 = time.monotonic()
    work = out / "work"
    if not random_init:  # a missing checkpoint fails before anything is written
        ckpt = resolve_checkpoint(checkpoint, False, work)
    work.mkdir(parents=True, exist_ok=True)
    if random_init:
        ckpt = resolve_checkpoint(None, True, work, rig)
    trained_for = checkpoint_rig(ckpt)
    if rig is not None and rig != trained_for:
        from imkd_core.rig import load_rig, rig_mismatch

        problem = rig_mismatch(load_rig(rig), load_rig(trained_for))
        if problem:
            raise DemoError(f"{problem} ({ckpt}): train a student for it (python -m train.rig_demo --rig {rig})")
    rig = trained_for
    domain = _private_ros_env(domain_id)
    _log(f"checkpoint {ckpt}; ROS_DOMAIN_ID {domain} (private, localhost)")

    t = time.monotonic()
    data = work / "data"
    gen = make_dataset(data, samples, seed, image_size, sweeps, rig)
    _log(f"synthetic dataset: {gen['samples']} keyframes in {gen['scenes']} scenes, {gen['bytes'] / 1e6:.1f} MB "
         f"({time.monotonic() - t:.1f} s)")
    t = time.monotonic()
    nusc = load_nuscenes(str(data), VERSION)
    bag = make_bag(nusc, work / "bags", rig)
    t_bag = time.monotonic() - t
    _log(f"bag {bag} ({t_bag:.1f} s)")

    report = run_replay_eval(bag, ckpt, data, VERSION, out_dir=out / "eval", rate=rate, lockstep=True, offline=True,
                             domain_id=domain, device="cpu", nusc=nusc, progress=progress, verbose=False)
    summary = report.summary
    if summary["frames_received"] == 0:
        raise DemoError(f"the node answered no keyframe; see {out / 'eval' / 'node.log'}")
    t = time.monotonic()
    pictures = render_pictures(out, report, score_min)
    _log(f"pictures ({time.monotonic() - t:.1f} s)")

    info = {"scene": SCENE, "keyframes": summary["frames_expected"], "image_size": f"{image_size[0]}x{image_size[1]}",
            "seed": seed, "sweeps": sweeps, "checkpoint": str(ckpt), "random_init": random_init, "rig": rig,
            "seconds": round(time.monotonic() - t0, 2)}
    result = {
        "replay": summary["replay"],
        "offline": summary.get("offline"),
        "max_metric_abs_diff": summary.get("max_metric_abs_diff"),
        "frames_expected": summary["frames_expected"],
        "frames_received": summary["frames_received"],
        "per_class_AP": summary["per_class_AP"],
        "classes_with_gt": summary["classes_with_gt"],
        "replay_publish_error_ms": summary["replay_publish_error_ms"],
        "score_threshold": summary["score_threshold"],
        "max_detections": summary["max_detections"],
        "pictures": {"bev": "bev.png", "camera": "camera.png", **pictures},
        "timings_s": {"closed_loop": summary["closed_loop_s"], "replay_eval": summary["seconds"],
                      "bag": round(t_bag, 2), "dataset": gen["seconds"]},
        **info,
    }
    write_json(out / "metrics.json", result)
    (out / ".metrics.md.partial").write_text(metrics_markdown(summary, info))
    os.replace(out / ".metrics.md.partial", out / "metrics.md")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-demo", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (metrics.md/json, bev.png, camera.png, eval/)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help=f"student checkpoint (default: {DEMO_CHECKPOINT})")
    src.add_argument("--random-init", action="store_true", help="untrained tiny student (plumbing check only)")
    p.add_argument("--samples", type=int, default=16, help="keyframes per synthetic scene")
    p.add_argument("--seed", type=int, default=2026, help="synthetic world seed")
    p.add_argument("--image-size", type=parse_image_size, default=(704, 396),
                   help="camera images WxH (the rig's first camera; the others scale with it)")
    p.add_argument("--rig", default=None, help="sensor rig of the synthetic world (imkd_core.rig name or YAML path); "
                   "default: the checkpoint's (the demo checkpoint: nuscenes)")
    p.add_argument("--sweeps", action=argparse.BooleanOptionalAction, default=True,
                   help="include sweeps (12 Hz cameras, 13 Hz radar) as the demo model was trained with them; "
                        "--no-sweeps: keyframes only, faster, but the radar then differs from training")
    p.add_argument("--rate", type=float, default=1.0, help="replay rate between lock-step waits")
    p.add_argument("--score-min", type=float, default=0.3, help="score of the boxes drawn in the pictures")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a private one from the pid)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `make demo`: 0 on success; a user error is one line on stderr, exit status 2."""
    from imkd_ros.closed_loop import ReplayEvalError
    from imkd_ros.replay import BagError

    return cli_main(also=(DemoError, BagError, ReplayEvalError, ValueError), prog="imkd-demo")(_main)(argv)


def _main(argv: Sequence[str] | None) -> int:
    from imkd_ros.replay_eval import _jsonable

    args = build_parser().parse_args(argv)
    if args.samples < 2:
        raise DemoError("--samples must be >= 2")
    result = run_demo(Path(args.out), args.checkpoint, args.random_init, args.samples, args.seed,
                      args.image_size, args.sweeps, args.rate, args.score_min, args.domain_id,
                      progress=not args.no_progress, rig=args.rig)
    out = Path(args.out)
    print((out / "metrics.md").read_text())
    print(f"wrote {out / 'metrics.md'}, {out / 'metrics.json'}, {out / 'bev.png'}, {out / 'camera.png'} "
          f"in {result['seconds']:.1f} s")
    brief = {k: result[k] for k in ("replay", "offline", "max_metric_abs_diff", "frames_expected", "frames_received",
                                    "scene", "keyframes", "checkpoint", "seconds")}
    print(json.dumps(_jsonable(brief)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
