#!/usr/bin/env python3
"""End-to-end latency of the detector node over DDS against the Predictor alone, and the cost of
turning messages into a SensorFrame.

    python -m train.bench_node [--dataroot ../shared/nuscenes --version v1.0-mini] [--frames 20]
                               [--checkpoint student.pt | --config tiny] [--device auto]

The node runs in its own process (imkd-detector, config/detector.yaml + the overrides of
imkd_ros.harness); this process publishes real frames as the bag converter writes them (original
JPEG bytes, CameraInfo, 18-field radar PointCloud2, /tf, /tf_static) one at a time and waits for
each frame's Detection3DArray, so the latency (last input message published -> detections
received) holds no queueing. The same frames, read by the offline NuScenesReader, go through the
Predictor in this process, interleaved frame by frame with the node (both see the same machine
load). Without nuScenes data (no --dataroot found) a synthetic scene is written and used.

Without --checkpoint a random-init student of --config is saved in a temp dir: latency does not
depend on the weights (the heatmap head is scaled so a realistic number of boxes pass the score
threshold; decode and message building scale with that number, printed below).

The Predictor runs on a worker thread, as the node's inference runs on an executor thread: on a
machine with more runnable threads than cores, torch's OpenMP threads spin-waiting in the
process's main thread made inference 3-10x slower there than on another thread (or than with
OMP_WAIT_POLICY=PASSIVE) in our measurements, which would flatter the node.

Conversion costs, per frame, measured after the node has stopped: the 6 JPEG decodes at full
scale + resize (INTER_AREA) to the reduced size vs decoding at the reduced scale in the DCT (what
the node and the offline reader do), and parsing the 5 radar PointCloud2s to (18, N) arrays.

Prints a table and, as its LAST line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# an isolated ROS graph for this run (set before rclpy loads), unless the caller chose one
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=str(ROOT.parent / "shared" / "nuscenes"),
                   help="nuScenes dataroot (devkit layout; real or synthetic); absent -> a synthetic scene")
    p.add_argument("--version", default="v1.0-mini", help="version folder (v1.0-mini, v1.0-synth, ...)")
    p.add_argument("--frames", type=int, default=20, help="timed frames (cycled when the data has fewer)")
    p.add_argument("--warmup", type=int, default=2, help="untimed frames first")
    p.add_argument("--checkpoint", default=None, help="student checkpoint; default: random-init --config")
    p.add_argument("--config", default="tiny", help="model config of the random-init checkpoint")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (node and Predictor)")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--radar-sweeps", type=int, default=1,
                   help="sweeps per radar (the real subset has only keyframe sweeps: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (both processes)")
    p.add_argument("--decode-repeats", type=int, default=3, help="repeats of the conversion timings per frame")
    p.add_argument("--timeout", type=float, default=300.0, help="s to wait for the node / one frame")
    return p.parse_args(argv)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def conversion_costs(frames: list, reduction: int, repeats: int) -> dict[str, float]:
    """Median per-frame ms: 6 full decodes + resize, 6 reduced decodes, 5 radar parses."""
    import cv2

    from imkd_core.preprocess import decode_image
    from imkd_ros.msgs import radar_points
    from imkd_ros.raw_frames import radar_cloud_msg

    full, reduced, radar = [], [], []
    for raw in frames:
        msgs = [radar_cloud_msg(s) for s in raw.sweeps]
        for _ in range(repeats):
            t0 = time.perf_counter()
            for cam in raw.cameras:
                img = decode_image(cam.data, 1)
                h, w = img.shape[:2]
                cv2.resize(img, (-(-w // reduction), -(-h // reduction)), interpolation=cv2.INTER_AREA)
            t1 = time.perf_counter()
            for cam in raw.cameras:
                decode_image(cam.data, reduction)
            t2 = time.perf_counter()
            for m in msgs:
                pts = radar_points(m)
                np.isfinite(pts[:3]).all(axis=0)
            t3 = time.perf_counter()
            full.append((t1 - t0) * 1e3)
            reduced.append((t2 - t1) * 1e3)
            radar.append((t3 - t2) * 1e3)
    return {"decode_full_ms": statistics.median(full), "decode_reduced_ms": statistics.median(reduced),
            "radar_parse_ms": statistics.median(radar)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the node process
    import torch

    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig
    from imkd_core.predict import Predictor
    from imkd_ros.harness import (
        HARNESS_NODE_PARAMS,
        DetectorClient,
        FramePlayer,
        NodeProcess,
        compare_detections,
        make_test_checkpoint,
    )
    from imkd_ros.params import apply_detection_limits
    from imkd_ros.raw_frames import load_frames, synthetic_dataroot

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="imkd_bench_node_")
    ckpt = Path(args.checkpoint) if args.checkpoint else make_test_checkpoint(Path(tmp.name) / "student.pt",
                                                                            config=args.config)
    cfg = IMKDConfig.from_dict(load_checkpoint(ckpt)["config"])
    dataroot = Path(args.dataroot) if args.dataroot and Path(args.dataroot).is_dir() else None
    needed = args.frames + args.warmup

    # the node first: it imports torch and loads the model while the frames are read here
    params = {**HARNESS_NODE_PARAMS, "checkpoint": str(ckpt.resolve()), "device": args.device,
              "radar_sweeps": args.radar_sweeps, "score_threshold": args.score_threshold,
              "max_detections": args.max_detections}
    node = NodeProcess(params, Path(tmp.name) / "detector.log")
    try:
        version = args.version
        if dataroot is None:
            dataroot, version = synthetic_dataroot(Path(tmp.name) / "synthetic"), "v1.0-synth"
        from imkd_core.data.nuscenes import load_nuscenes

        n_scenes = len(load_nuscenes(str(dataroot), version).scene)
        per_scene = -(-needed // max(n_scenes, 1))
        frames = load_frames(dataroot, version, per_scene=per_scene, image_size=tuple(cfg.data.image_size),
                             radar_sweeps=args.radar_sweeps)
        predictor = Predictor(checkpoint=ckpt, device=args.device)
        apply_detection_limits(predictor, args.score_threshold, args.max_detections)
        # like the node, whose inference runs on an executor thread (see the module docstring)
        worker = ThreadPoolExecutor(max_workers=1)

        def timed_predict(frame):
            t0 = time.perf_counter()
            det = predictor.predict(frame)
            return det, (time.perf_counter() - t0) * 1e3
        order = [i % len(frames.raw) for i in range(needed)]

        node_ms, pred_ms, n_det, mismatched = [], [], [], 0
        timing: list[dict] = []
        with DetectorClient() as client:
            client.wait_for_node(args.timeout, node)
            player = FramePlayer(client)
            for k, i in enumerate(order):
                ref, p_ms = worker.submit(timed_predict, frames.offline[i]).result()
                client.forget(frames.raw[i].stamp)  # a cycled frame: wait for its new result
                det, _, latency = player.play(frames.raw[i], timeout=args.timeout)
                client.wait_until(lambda i=i: frames.raw[i].stamp in client.received.timing, 5.0)
                if k < args.warmup:
                    continue
                node_ms.append(latency * 1e3)
                pred_ms.append(p_ms)
                n_det.append(len(det))
                mismatched += bool(compare_detections(ref, det))
                t = client.received.timing.get(frames.raw[i].stamp)
                if t is not None:
                    mono = t.get("monotonic", {})
                    if mono.get("last_input") is not None:  # same host: comparable monotonic clocks
                        t["dds_in_ms"] = (mono["last_input"] - player.last_sent) * 1e3
                        t["dds_out_ms"] = (player.last_received - mono["published"]) * 1e3
                    timing.append(t)
        worker.shutdown()
    finally:
        node.stop()
    if not node_ms:
        print("no frames timed", file=sys.stderr)
        return 1
    conv = conversion_costs([frames.raw[i] for i in sorted(set(order))][:10], frames.image_reduction,
                            args.decode_repeats)

    def tp50(key: str, stage: bool = False) -> float:
        vals = [t["stages_ms"].get(key) if stage else t.get(key) for t in timing]
        return pct([v for v in vals if v is not None], 50)

    res = {
        "frames": len(node_ms), "source": frames.source, "config": cfg.name, "device": str(predictor.device),
        "node_p50_ms": pct(node_ms, 50), "node_p95_ms": pct(node_ms, 95),
        "predictor_p50_ms": pct(pred_ms, 50), "predictor_p95_ms": pct(pred_ms, 95),
        "overhead_ratio": pct(node_ms, 50) / pct(pred_ms, 50),
        "decode_full_ms": conv["decode_full_ms"], "decode_reduced_ms": conv["decode_reduced_ms"],
        "decode_speedup": conv["decode_full_ms"] / conv["decode_reduced_ms"],
        "radar_parse_ms": conv["radar_parse_ms"], "image_reduction": frames.image_reduction,
        "node_internal_latency_p50_ms": tp50("latency_ms"), "node_predictor_p50_ms": tp50("total", True),
        "node_build_p50_ms": tp50("build", True), "node_publish_p50_ms": tp50("publish", True),
        "node_markers_p50_ms": tp50("markers", True), "dds_in_p50_ms": tp50("dds_in_ms"),
        "dds_out_p50_ms": tp50("dds_out_ms"),
        "node_wait_p50_ms": tp50("wait_ms"), "detections_mean": float(np.mean(n_det)),
        "frames_differing_from_offline": mismatched,
    }
    print(f"frames: {res['frames']} timed ({args.warmup} warm-up) from {frames.source}"
          f"{' ' + str(dataroot) if dataroot else ''}; model {cfg.name} {tuple(cfg.data.image_size)} on "
          f"{res['device']}, torch threads {torch.get_num_threads()}; checkpoint "
          f"{'random-init' if not args.checkpoint else ckpt}; {res['detections_mean']:.1f} detections/frame "
          f"(score >= {args.score_threshold}); node == offline on {res['frames'] - mismatched}/{res['frames']}")
    rows = [
        ("node end-to-end (last msg published -> detections received)", res["node_p50_ms"], res["node_p95_ms"]),
        ("Predictor alone (same frames, this process)", res["predictor_p50_ms"], res["predictor_p95_ms"]),
        ("  last message published -> its callback in the node", res["dds_in_p50_ms"], None),
        ("  in node: last input received -> detections published", res["node_internal_latency_p50_ms"], None),
        ("    last input -> inference start", res["node_wait_p50_ms"], None),
        ("    frame build (sync, TF, radar compensation, stacking)", res["node_build_p50_ms"], None),
        ("    Predictor", res["node_predictor_p50_ms"], None),
        ("    Detection3DArray built + published", res["node_publish_p50_ms"], None),
        ("  detections published -> received here", res["dds_out_p50_ms"], None),
        ("  (after that, not in the latency: MarkerArray built + published)", res["node_markers_p50_ms"], None),
        (f"6 JPEG decodes, full scale + resize to 1/{frames.image_reduction}", res["decode_full_ms"], None),
        (f"6 JPEG decodes at 1/{frames.image_reduction} scale (DCT)", res["decode_reduced_ms"], None),
        ("5 radar PointCloud2 -> (18, N)", res["radar_parse_ms"], None),
    ]
    print(f"{'what':<62} {'p50 ms':>9} {'p95 ms':>9}")
    for name, p50, p95 in rows:
        print(f"{name:<62} {p50:>9.1f} {'' if p95 is None else f'{p95:.1f}':>9}")
    print(f"overhead ratio node/Predictor (p50): {res['overhead_ratio']:.3f} (target <= 1.25 on CPU, tiny); "
          f"reduced-scale decode speed-up: {res['decode_speedup']:.2f}x (target >= 2)")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
