"""Closed-loop evaluation: bag -> replay -> detector node -> recorded detections -> devkit metrics.

    imkd-replay-eval BAG --checkpoint C --dataroot D [--version V] [--rate R] [--realtime]
                     [--out DIR] [--params-file F] [--node-param NAME:=VALUE ...] [--no-offline]

What it does:
1. starts the detector node in its own process (imkd_ros.harness.NodeProcess: `imkd-detector
   --ros-args --params-file config/detector.yaml --params-file <checkpoint:=C, ...>`), in the
   current ROS_DOMAIN_ID (or --domain-id), and waits until it subscribes to the bag's sensor topics;
2. replays the bag's node inputs (cameras, camera_info, radars, /tf, /tf_static; not /odom,
   LiDAR or ground truth) with imkd_ros.replay.BagPlayer and records `/imkd_detector/detections`
   (vision_msgs/Detection3DArray + its ~/detection_attributes -> imkd_ros.msgs.msg_to_detections);
3. matches detections to the bag's keyframes by stamp: the converter stamps ground truth and
   keyframes with the keyframe's CAM_FRONT time (= SensorFrame.stamp = the node's output stamp)
   and stores {stamp: sample token} in the bag's custom_data `imkd.keyframes`; a bag without it
   is matched through its /ground_truth/detections stamps to the CAM_FRONT keyframe times of
   the source dataset. The rig is the checkpoint's (its data.rig, imkd_core.rig): the node gets it
   as its `rig` parameter, its topics are the replayed inputs and its reference camera stands in
   for CAM_FRONT;
4. scores them with imkd_core.evaluate (the devkit's DetectionEval) against the SOURCE dataset
   (--dataroot/--version): the bag's ground truth lacks the lidar/radar point counts, attributes
   and visibility the devkit filters and scores with, so the honest reference is the devkit on
   the dataset the bag was converted from (sample tokens come from the bag, so nothing is guessed).
   A keyframe without a detection message counts as an empty prediction (it is not dropped);
5. runs the offline evaluator on the same samples (NuScenesReader -> Predictor -> evaluate, the
   path of train/evaluate.py) and prints both side by side, then, as the last line, one JSON
   object {"replay": {...}, "offline": {...}, "frames_expected", "frames_received", ...}.

Pacing: lock-step by default, so the closed loop is deterministic however slow or busy the CPU
(the rules are in imkd_ros.closed_loop); --realtime: every message at --rate, what a robot
sees (frames the node cannot keep up with count as missing, i.e. empty predictions).

Outputs (--out DIR, default replay_eval_out): replay/ and offline/ (results_nusc.json and the
devkit's metrics files), detections_replay.json / detections_offline.json (per-frame boxes in
base_link), node_frames.json (the node's per-frame ~/timing facts: cameras, radar points,
latencies), replay_eval.json (the summary), node.log (the node's output). All written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import cli_main
from imkd_core.frame import CLASSES, Detections
from imkd_core.rig import load_rig
from imkd_ros.closed_loop import (
    ClosedLoopResult,
    ReplayEvalError,
    keyframes_of_bag,
    log,
    node_sweep_rule,
    replay_closed_loop,
)
from imkd_ros.harness import NODE_NAME
from imkd_ros.replay import BagError, bag_custom_data, open_bag

__all__ = [
    "DetectionLimits",
    "ReplayEvalReport",
    "detections_agreement",
    "evaluate_side_by_side",
    "main",
    "offline_detections",
    "run_replay_eval",
]

METRIC_KEYS: tuple[str, ...] = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "NDS_present", "mAP_present")


@dataclass(frozen=True)
class DetectionLimits:
    """Decode score threshold and top-K, set alike on the node (its parameters) and the offline Predictor.

    Evaluation wants the whole precision-recall curve, so the defaults (`for_model`) are the
    model config's own decode settings (tiny: 0.1 / 200), not the node's display-oriented 0.3 / 100.
    """

    score_threshold: float
    max_detections: int

    @classmethod
    def for_model(cls, model: Any, score_threshold: float | None = None,
                  max_detections: int | None = None) -> DetectionLimits:
        """From a checkpoint's model config (its decode settings), overridden where given."""
        thr = float(model.score_threshold if score_threshold is None else score_threshold)
        top = int(model.max_detections if max_detections is None else max_detections)
        if not 0.0 <= thr < 1.0:
            raise ValueError(f"score threshold must be in [0, 1), got {thr}")
        return cls(thr, min(max(top, 1), 1000))  # the node accepts 1..1000

    def node_params(self) -> dict[str, Any]:
        return {"score_threshold": float(self.score_threshold), "max_detections": int(self.max_detections)}


def checkpoint_config(checkpoint: str | Path) -> Any:
    """The IMKDConfig a checkpoint records (CheckpointError on a missing/corrupt file)."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig

    return IMKDConfig.from_dict(load_checkpoint(checkpoint)["config"])


def checkpoint_rig(checkpoint: str | Path) -> str:
    """The rig a checkpoint was trained for (its config's data.rig: a rig name or YAML path)."""
    return checkpoint_config(checkpoint).data.rig


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """JSON (NaN -> null), written atomically."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1) + "\n")


def parse_node_param(text: str) -> tuple[str, Any]:
    """'name:=value' -> (name, value), the value read as YAML, as rcl reads `-p name:=value`."""
    import yaml

    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"node parameter must look like name:=value, got {text!r}")
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"node parameter {name}: {value!r} is not a YAML value") from exc


# ----------------------------------------------------------------------------------------------
# Offline path and evaluation
# ----------------------------------------------------------------------------------------------


def _source_hw(nusc: Any, tokens: Sequence[str], camera: str = "CAM_FRONT") -> tuple[int, int]:
    """(H, W) of the reference camera's images of these samples (sample_data table)."""
    sd = nusc.get("sample_data", nusc.get("sample", tokens[0])["data"][camera])
    if sd.get("height"):
        return int(sd["height"]), int(sd["width"])
    return 900, 1600


def make_reader(nusc: Any, tokens: Sequence[str], config: Any, radar_rule: Any = None) -> Any:
    """NuScenesReader over the scenes of `tokens`, decoding like the node (JPEG reduction from the
    model's input size), radar sweeps by `radar_rule` (default: SweepRule defaults with the model's
    sweep count, as the node's default parameters), no LiDAR."""
    from imkd_core.data.nuscenes import NuScenesReader
    from imkd_core.preprocess import jpeg_reduction
    from imkd_core.rig import load_rig

    rig = load_rig(config.data.rig)
    scenes = sorted({nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in tokens})
    reduction = jpeg_reduction(_source_hw(nusc, tokens, rig.reference_camera), tuple(config.data.image_size))
    return NuScenesReader(nusc.dataroot, nusc.version, scenes=scenes, radar_sweeps=int(config.data.radar_sweeps),
                          load_lidar=False, image_reduction=reduction, nusc=nusc, radar_rule=radar_rule, rig=rig,
                          input_size=tuple(config.data.image_size))


def offline_detections(reader: Any, tokens: Sequence[str], checkpoint: str | Path, device: str = "cpu",
                       limits: DetectionLimits | None = None, progress: bool = True) -> dict[str, Detections]:
    """Predictor detections of the given samples (the offline evaluator's path), decoded with the
    node's score threshold / top-K (`limits`) through the node's own apply_detection_limits."""
    from tqdm import tqdm

    from imkd_core.predict import Predictor
    from imkd_ros.params import apply_detection_limits

    predictor = Predictor(checkpoint=checkpoint, device=device)
    if limits is not None:
        apply_detection_limits(predictor, limits.score_threshold, limits.max_detections)
    out: dict[str, Detections] = {}
    for token in tqdm(tokens, desc="offline", unit="frame", disable=not progress, file=sys.stderr, leave=False):
        frame, _ = reader[reader.index_of(token)]
        out[token] = predictor.predict(frame)
    return out


def detections_agreement(a: Mapping[str, Detections], b: Mapping[str, Detections], score_tol: float = 1e-4,
                         box_tol: float = 1e-3) -> dict[str, Any]:
    """Per-frame agreement of two detection sets on their common tokens.

    Frames "identical": same count, labels and (score-sorted) boxes/scores within tolerances.
    Returns counts and the largest absolute box/score differences over frames of equal size.
    """
    same = 0
    max_box = max_score = 0.0
    compared = 0
    for token in sorted(set(a) & set(b)):
        da, db = a[token], b[token]
        if len(da) != len(db):
            continue
        compared += 1
        ia = np.lexsort((da.boxes[:, 1], da.boxes[:, 0], da.labels, -np.round(da.scores, 4)))
        ib = np.lexsort((db.boxes[:, 1], db.boxes[:, 0], db.labels, -np.round(db.scores, 4)))
        if len(da) == 0:
            same += 1
            continue
        box = np.abs(_wrap_yaw(da.boxes[ia].astype(np.float64) - db.boxes[ib].astype(np.float64))).max()
        score = float(np.abs(da.scores[ia] - db.scores[ib]).max())
        labels_equal = bool((da.labels[ia] == db.labels[ib]).all())
        max_box, max_score = max(max_box, float(box)), max(max_score, score)
        if labels_equal and box <= box_tol and score <= score_tol:
            same += 1
    return {"frames_compared": len(set(a) & set(b)), "frames_same_count": compared, "frames_identical": same,
            "max_box_abs_diff": max_box, "max_score_abs_diff": max_score}


def _wrap_yaw(diff: np.ndarray) -> np.ndarray:
    diff = diff.copy()
    diff[:, 6] = (diff[:, 6] + np.pi) % (2 * np.pi) - np.pi
    return diff


def evaluate_detections(nusc: Any, reader: Any, tokens: Sequence[str], detections: Mapping[str, Detections],
                        out_dir: Path) -> dict[str, Any]:
    """Devkit metrics of `detections` on `tokens` (a token without detections = empty prediction)."""
    from imkd_core.evaluate import detections_to_results, evaluate

    dets = {t: detections.get(t, Detections.empty()) for t in tokens}
    poses = {t: reader.ego_to_global(reader.index_of(t)) for t in tokens}
    results = detections_to_results(dets, poses)
    return evaluate(nusc, nusc.version, results, tokens, out_dir, verbose=False)


def detections_json(detections: Mapping[str, Detections], keyframes: Mapping[int, str]) -> dict[str, Any]:
    """{token: {"stamp", "boxes" (N x 9 base_link), "scores", "labels" (class names)}} for the outputs."""
    stamp_of = {t: s for s, t in keyframes.items()}
    return {t: {"stamp": int(stamp_of.get(t, d.stamp)), "boxes": np.round(d.boxes.astype(np.float64), 5).tolist(),
                "scores": np.round(d.scores.astype(np.float64), 6).tolist(),
                "labels": [CLASSES[i] for i in d.labels]} for t, d in detections.items()}


def format_side_by_side(replay: Mapping[str, Any], offline: Mapping[str, Any] | None) -> str:
    """A table: headline metrics and per-class AP, replay | offline | difference."""
    head = f"{'metric':<24}{'replay':>10}" + (f"{'offline':>10}{'diff':>10}" if offline else "")
    lines = [head, "-" * len(head)]

    def row(name: str, a: float, b: float | None) -> str:
        text = f"{name:<24}{a:>10.4f}"
        if offline is not None and b is not None:
            text += f"{b:>10.4f}{a - b:>+10.4f}"
        return text

    for k in METRIC_KEYS:
        lines.append(row(k, replay[k], offline[k] if offline else None))
    lines.append(f"{'AP per class':<24}")
    for c in CLASSES:
        lines.append(row(f"  {c}", replay["per_class_AP"][c], offline["per_class_AP"][c] if offline else None))
    return "\n".join(lines)


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline metrics of an evaluate() result."""
    return {k: float(metrics[k]) for k in METRIC_KEYS}


def evaluate_side_by_side(nusc: Any, closed: ClosedLoopResult, checkpoint: str | Path, out_dir: Path,
                          offline: bool = True, device: str = "cpu", limits: DetectionLimits | None = None,
                          progress: bool = True,
                          ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Detections] | None, Any]:
    """(replay metrics, offline metrics or None, offline detections or None, reader) on the bag's
    keyframes; the offline reader takes radar sweeps by the rule the node ran with."""
    tokens = list(closed.keyframes.values())
    config = checkpoint_config(checkpoint)
    rule = node_sweep_rule(closed.node_parameters, int(config.data.radar_sweeps))
    reader = make_reader(nusc, tokens, config, radar_rule=rule)
    m_replay = evaluate_detections(nusc, reader, tokens, closed.detections, out_dir / "replay")
    if not offline:
        return m_replay, None, None, reader
    dets_off = offline_detections(reader, tokens, checkpoint, device=device, limits=limits, progress=progress)
    m_off = evaluate_detections(nusc, reader, tokens, dets_off, out_dir / "offline")
    return m_replay, m_off, dets_off, reader


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


@dataclass
class ReplayEvalReport:
    """Everything a closed-loop evaluation produced (the demo draws from it)."""

    summary: dict[str, Any]                          # what replay_eval.json holds
    closed: ClosedLoopResult
    metrics_replay: dict[str, Any]
    metrics_offline: dict[str, Any] | None
    offline_detections: dict[str, Detections] | None
    nusc: Any
    reader: Any                                      # NuScenesReader over the bag's scene(s)


def run_replay_eval(
    bag: str | Path,
    checkpoint: str | Path,
    dataroot: str | Path,
    version: str | None = None,
    *,
    out_dir: str | Path = "replay_eval_out",
    rate: float = 1.0,
    lockstep: bool = True,
    offline: bool = True,
    params_file: str | Path | None = None,
    node_params: Mapping[str, Any] | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    frame_timeout: float = 60.0,
    startup_timeout: float = 180.0,
    domain_id: int | None = None,
    device: str = "cpu",
    nusc: Any | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> ReplayEvalReport:
    """The whole closed-loop evaluation (module doc); the summary is also written to out_dir/replay_eval.json.

    The node and the offline Predictor run on `device` with the same DetectionLimits
    (score_threshold / max_detections; default: the checkpoint config's decode settings).
    Raises BagError, CheckpointError, FileNotFoundError, NuScenesDataError or ReplayEvalError
    with a clear message on a missing/corrupt bag, checkpoint or dataset, or a failing node.
    """
    from imkd_core.data.nuscenes import load_nuscenes

    t0 = time.monotonic()
    out = Path(out_dir)
    config = checkpoint_config(checkpoint)  # a missing or corrupt checkpoint fails early
    limits = DetectionLimits.for_model(config.model, score_threshold, max_detections)
    rig_ref = config.data.rig
    rig = load_rig(rig_ref)
    reader = open_bag(bag)
    try:
        if nusc is None:
            version = version or _version_from_source(bag_custom_data(reader).get("imkd.source", ""))
            if version is None:
                raise ReplayEvalError("cannot tell the bag's source dataset version (no 'imkd.source' in its "
                                      "custom_data): pass --version")
            nusc = load_nuscenes(str(dataroot), version)
        version = nusc.version
        frames = keyframes_of_bag(reader, nusc, rig.reference_camera)
    finally:
        reader.close()
    known = {s["token"] for s in nusc.sample}
    unknown = [t for t in frames.values() if t not in known]
    if unknown:
        raise ReplayEvalError(f"{len(unknown)} keyframe sample tokens of the bag are not in {version} at "
                              f"{dataroot} (e.g. {unknown[0]}): is that the bag's source dataset?")
    out.mkdir(parents=True, exist_ok=True)
    if verbose:
        log(f"{bag}: {len(frames)} keyframes; node {NODE_NAME} with {checkpoint} on {device}; "
             f"{'lock-step' if lockstep else 'real-time'} at rate {rate}; score >= {limits.score_threshold}, "
             f"top {limits.max_detections}")
    params = {"device": device, **limits.node_params(), **(node_params or {})}
    closed = replay_closed_loop(bag, checkpoint, rate=rate, lockstep=lockstep, params_file=params_file,
                                node_params=params, keyframes=frames, frame_timeout=frame_timeout,
                                startup_timeout=startup_timeout, log_path=out / "node.log", domain_id=domain_id,
                                progress=progress, rig=None if rig_ref == "nuscenes" else rig_ref)
    if closed.frames_received == 0:
        log(f"the node published no detections for the bag's keyframes; its last output:\n"
             f"{_tail(out / 'node.log')}")
    m_replay, m_off, dets_off, ds_reader = evaluate_side_by_side(nusc, closed, checkpoint, out, offline=offline,
                                                                 device=device, limits=limits, progress=progress)
    write_json(out / "detections_replay.json", detections_json(closed.detections, frames))
    write_json(out / "node_frames.json", closed.node_frames)
    summary: dict[str, Any] = {"replay": headline(m_replay)}
    if m_off is not None:
        write_json(out / "detections_offline.json", detections_json(dets_off, frames))
        summary["offline"] = headline(m_off)
        summary["max_metric_abs_diff"] = max(abs(summary["replay"][k] - summary["offline"][k]) for k in METRIC_KEYS)
        summary["detections_agreement"] = detections_agreement(closed.detections, dets_off)
    summary.update({
        "frames_expected": len(frames),
        "frames_received": closed.frames_received,
        "frames_missing": closed.missing,
        "extra_frames": closed.extra_frames,
        "lockstep": lockstep,
        "rate": rate,
        "score_threshold": limits.score_threshold,
        "max_detections": limits.max_detections,
        "bag": str(bag),
        "checkpoint": str(checkpoint),
        "version": version,
        "scenes": sorted({nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in frames.values()}),
        "classes_with_gt": list(m_replay["classes_with_gt"]),
        "replay_publish_error_ms": closed.playback.get("publish_error_ms", {}),
        "trigger_to_detection_ms": closed.latency_ms,
        "message_errors": len(closed.message_errors),
        "messages_lost": closed.lost,
        "node_exit_code": closed.node_exit_code,
        "closed_loop_s": round(closed.seconds, 2),
        "seconds": round(time.monotonic() - t0, 2),
        "out": str(out),
    })
    summary["per_class_AP"] = {"replay": m_replay["per_class_AP"]}
    if m_off is not None:
        summary["per_class_AP"]["offline"] = m_off["per_class_AP"]
    write_json(out / "replay_eval.json", summary)
    if verbose:
        print(format_side_by_side(m_replay, m_off))
        print(f"frames: {closed.frames_received}/{len(frames)} received"
              + (f", missing {closed.missing}" if closed.missing else ""))
    return ReplayEvalReport(summary, closed, m_replay, m_off, dets_off, nusc, ds_reader)


def _version_from_source(source: str) -> str | None:
    """'nuScenes v1.0-synth synth-val-0001' (the converter's imkd.source) -> 'v1.0-synth'."""
    parts = source.split()
    return parts[1] if len(parts) >= 2 and parts[0] == "nuScenes" else None


def _tail(path: Path, n: int = 30) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-replay-eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="a bag written by imkd-nuscenes-to-bag (with ground truth)")
    p.add_argument("--checkpoint", required=True, help="student checkpoint for the node (and the offline run)")
    p.add_argument("--dataroot", required=True,
                   help="the bag's source dataset (the devkit scores against its annotations)")
    p.add_argument("--version", default=None, help="version folder (default: from the bag's custom_data)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    p.add_argument("--realtime", action="store_true",
                   help="no lock-step: publish everything at --rate, frames the node misses count as empty")
    p.add_argument("--out", default="replay_eval_out", help="output folder")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="decode threshold of node and offline Predictor (default: the checkpoint config's)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="top-K per frame of node and offline Predictor (default: the checkpoint config's, <= 1000)")
    p.add_argument("--params-file", default=None, help="node parameters (default: the node's config/detector.yaml)")
    p.add_argument("--node-param", action="append", type=parse_node_param, default=[], metavar="NAME:=VALUE",
                   help="extra node parameter (repeatable), passed as -p NAME:=VALUE")
    p.add_argument("--no-offline", action="store_true", help="skip the offline evaluator")
    p.add_argument("--frame-timeout", type=float, default=60.0, help="seconds to wait for one frame's detections")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to come up")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain for the node and the player")
    p.add_argument("--device", default="cpu", help="inference device of the node and the offline Predictor")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main(also=(BagError, ReplayEvalError, ValueError), prog="imkd-replay-eval")
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success; a user error (bag, checkpoint, dataset, flags) is one line on
    stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        report = run_replay_eval(
            args.bag, args.checkpoint, args.dataroot, args.version, out_dir=args.out, rate=args.rate,
            lockstep=not args.realtime, offline=not args.no_offline, params_file=args.params_file,
            node_params=dict(args.node_param), score_threshold=args.score_threshold,
            max_detections=args.max_detections, frame_timeout=args.frame_timeout,
            startup_timeout=args.startup_timeout, domain_id=args.domain_id, device=args.device,
            progress=not args.no_progress)
    except KeyboardInterrupt:
        print("[imkd-replay-eval] interrupted", file=sys.stderr)
        return 130
    brief = {k: v for k, v in report.summary.items() if k != "per_class_AP"}
    print(json.dumps(_jsonable(brief)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
