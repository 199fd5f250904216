#!/usr/bin/env python3
"""The detector node under a live sensor stream: messages at their recorded (or rig) rate, not
lock-step, measured against the Predictor alone on the same frames in the same run.

    python -m train.bench_live [--dataroot ../shared/nuscenes --version v1.0-mini --scene scene-0916]
                               [--modes clock,wall,burst_12hz,burst_24hz] [--burst-seconds 4]
                               [--bag-seconds 0] [--checkpoint student.pt | --config tiny]

Modes (each runs a fresh node process, config/detector.yaml + the overrides below):
- `real_clock`: the scene's bag (made here with the project's converter, no LiDAR/ground truth)
  published at 1x its recorded timing with /clock (100 Hz and before every message), the node
  with use_sim_time, as `imkd-replay BAG --clock` does;
- `real_wall`: the same bag restamped to the wall clock (every header and /tf stamp shifted by
  one offset), the node on the system clock, as a rig publishes;
- `burst_12hz` / `burst_24hz`: `--burst-seconds` of rig-rate input: 6 cameras at 12 Hz (24 Hz)
  with nuScenes firing offsets (the scene's keyframe JPEGs, cycled), 5 radars at 13 Hz, /tf
  odom -> base_link at 160 Hz, wall-clock stamps.
Without nuScenes data the bag is a synthetic scene made here (`synthetic_clock`,
`synthetic_wall`) and the bursts use synthetic JPEGs of the same size.

Per mode (the last line is one JSON object keyed by mode):
- frames_expected (trigger images published), frames_published (detections received),
  frames_skipped_newest_wins (completed or pending frames dropped because a newer one was
  ready: the model was busy), frames_dropped by reason, resets (buffer resets for clock jumps),
  tf_published / tf_received (/tf messages sent / handled by the node), camera_slots_masked;
- model_ms_node_p50 (the Predictor inside the node), model_ms_alone_p50 (the Predictor in this
  process, on a worker thread, on frames of the same data, after the node stopped) and
  model_ratio; decode_ms_node_p50 / decode_ms_alone_p50 (the JPEG decodes of one frame);
- latency_ms_p50/p95: frame stamp -> detections published (node clock); input_lag_ms_p95:
  node clock at an input callback minus the message stamp (every image, radar and /tf message);
- frames_model_could_take: stream seconds / (model + decode ms alone), at most frames_expected;
  busy_ratio: frames_published / that; busy_ratio_node: the same with the model and decode
  times measured inside the node (1.0 = inference back to back; target >= 0.8);
  player_late_ms_p95: how late this process published against the schedule (if large, the
  numbers measure the player too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
MODES = ("clock", "wall", "burst_12hz", "burst_24hz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=str(ROOT.parent / "shared" / "nuscenes"),
                   help="nuScenes dataroot; absent (or '') -> a synthetic scene")
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--scene", default="scene-0916")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma separated subset of {','.join(MODES)}")
    p.add_argument("--bag-seconds", type=float, default=0.0, help="play only this much of the bag (0 = all)")
    p.add_argument("--burst-seconds", type=float, default=4.0)
    p.add_argument("--synthetic-samples", type=int, default=12, help="samples of the synthetic scene (2 Hz)")
    p.add_argument("--checkpoint", default=None, help="student checkpoint; default: random-init --config")
    p.add_argument("--config", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--alone-frames", type=int, default=10, help="timed Predictor-alone frames per mode")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME=YAML",
                   help="extra node parameter (e.g. executor=multi), repeatable")
    p.add_argument("--timeout", type=float, default=120.0)
    return p.parse_args(argv)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


# ============================================================================ schedules
@dataclass
class Stream:
    """Serialised messages to publish: (offset ns from the start, topic key, CDR bytes, stamp)."""

    events: list[tuple[int, str, bytes, int]]
    static: bytes                       # /tf_static (latched), published before the stream
    span_s: float = 0.0
    triggers: int = 0
    tf_count: int = 0
    clock0: int = 0                     # bag time of the first event (/clock)


@dataclass
class Source:
    """What a mode plays and the same data for the Predictor/decoder alone."""

    name: str                                  # real | synthetic
    bag: Path
    raw: list[Any]                             # RawFrames for the bursts
    frames: dict[str, list[Any]] = field(default_factory=dict)   # bag | burst -> SensorFrames
    jpegs: dict[str, list[list[bytes]]] = field(default_factory=dict)
    reduction: dict[str, int] = field(default_factory=dict)


def _patch_header_stamp(raw: bytes, stamp: int) -> bytes:
    """A message that starts with std_msgs/Header, with header.stamp set (CDR offsets 4..12)."""
    b = bytearray(raw)
    order = "little" if b[1] & 1 else "big"
    b[4:8] = int(stamp // NS).to_bytes(4, order, signed=True)
    b[8:12] = int(stamp % NS).to_bytes(4, order)
    return bytes(b)


def make_bag(args: argparse.Namespace, out: Path) -> tuple[Path, str, Any]:
    """(bag, source, nusc): the real scene converted, else a synthetic scene made and converted."""
    from imkd_ros import nuscenes_to_bag as n2b

    opts = n2b.ConvertOptions(lidar=False, ground_truth=False, progress=False, fsync=False)
    root = Path(args.dataroot) if args.dataroot else None
    if root is not None and (root / args.version).is_dir():
        nusc = n2b.load_nuscenes(root, args.version)
        stats = n2b.convert_scene(nusc, args.scene, out, opts)
        return Path(stats.bag), "real", nusc
    from imkd_core.data.synthetic import SyntheticConfig, generate

    data = out / "synthetic_data"
    generate(data, SyntheticConfig(scenes=1, samples_per_scene=args.synthetic_samples, seed=5,
                                   image_size=(1600, 900), sweeps=True, lidar_azimuth_steps=90))
    nusc = n2b.load_nuscenes(data, "v1.0-synth")
    stats = n2b.convert_scene(nusc, nusc.scene[0]["name"], out, opts)
    return Path(stats.bag), "synthetic", nusc


def bag_frames(bag: Path, image_size: tuple[int, int]) -> tuple[list[Any], list[list[bytes]], int]:
    """(SensorFrames the node's assembler builds from the bag (first 12), the 6 JPEGs of those
    frames, the JPEG reduction): the Predictor-alone and decode-alone inputs of the bag modes."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage

    from imkd_core.frame import CAMERAS
    from imkd_core.preprocess import jpeg_reduction
    from imkd_ros.harness import assemble_bag
    from imkd_ros.replay import open_bag
    from imkd_ros.topics import TOPICS

    topics = {TOPICS[c]: c for c in CAMERAS}
    info_topic = TOPICS["CAM_FRONT/camera_info"]
    jpegs: list[list[bytes]] = []
    reduction = 1
    reader = open_bag(bag)
    try:
        conns = [c for c in reader.connections if c.topic in topics or c.topic == info_topic]
        for conn, _, raw in reader.messages(connections=conns):
            if conn.topic == info_topic:
                info = deserialize_message(raw, CameraInfo)
                reduction = jpeg_reduction((int(info.height), int(info.width)), image_size)
                continue
            if topics[conn.topic] == "CAM_FRONT":
                if len(jpegs) == 12:
                    break
                jpegs.append([])
            if jpegs:
                jpegs[-1].append(bytes(deserialize_message(raw, CompressedImage).data))
    finally:
        reader.close()
    frames = list(assemble_bag(bag, 1, image_size, params={"radar_tolerance": 0.01}).values())[:12]
    return frames, [j for j in jpegs if len(j) == len(CAMERAS)], reduction


def bag_stream(bag: Path, seconds: float, wall0: int | None) -> Stream:
    """The bag's node inputs in bag order; `wall0`: restamp so the first message is stamped wall0."""
    from rclpy.serialization import deserialize_message, serialize_message
    from tf2_msgs.msg import TFMessage

    from imkd_core.frame import CAMERAS, RADARS
    from imkd_ros.replay import open_bag
    from imkd_ros.topics import TOPICS

    keys = {TOPICS[k]: k for k in [*CAMERAS, *(f"{c}/camera_info" for c in CAMERAS), *RADARS, "tf", "tf_static"]}
    reader = open_bag(bag)
    events: list[tuple[int, str, bytes, int]] = []
    static = b""
    t0 = None
    try:
        conns = [c for c in reader.connections if c.topic in keys]
        for conn, t, raw in reader.messages(connections=conns):
            key = keys[conn.topic]
            raw = bytes(raw)
            if key == "tf_static":
                static = raw
                continue
            t0 = t if t0 is None else t0
            if seconds and t - t0 > seconds * NS:
                break
            shift = 0 if wall0 is None else wall0 - t0
            if key == "tf":
                msg = deserialize_message(raw, TFMessage)
                stamp = max(x.header.stamp.sec * NS + x.header.stamp.nanosec for x in msg.transforms)
                if shift:
                    for x in msg.transforms:
                        s = x.header.stamp.sec * NS + x.header.stamp.nanosec + shift
                        x.header.stamp.sec, x.header.stamp.nanosec = s // NS, s % NS
                    raw = serialize_message(msg)
                stamp += shift
            else:
                order = "little" if raw[1] & 1 else "big"
                stamp = int.from_bytes(raw[4:8], order, signed=True) * NS + int.from_bytes(raw[8:12], order) + shift
                if shift:
                    raw = _patch_header_stamp(raw, stamp)
            events.append((t - t0, key, raw, stamp))
    finally:
        reader.close()
    s = Stream(events, static, clock0=t0 or 0)
    s.span_s = events[-1][0] / NS if events else 0.0
    s.triggers = sum(k == "CAM_FRONT" for _, k, _, _ in events)
    s.tf_count = sum(k == "tf" for _, k, _, _ in events)
    return s


def _burst_ego(t_s: float) -> np.ndarray:
    """odom <- base_link of the bursts' drive: 8 m/s along a gentle left curve."""
    yaw = 0.05 * t_s
    T = np.eye(4)
    T[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    T[:3, 3] = (8.0 * t_s, 0.2 * t_s * t_s, 0.0)
    return T


def burst_stream(raw_frames: list[Any], rate_hz: float, seconds: float, wall0: int) -> Stream:
    """Rig-rate input: cameras at rate_hz (the raw frames' JPEGs cycled, their firing offsets kept),
    5 radars at 13 Hz, /tf odom -> base_link at 160 Hz; stamps from wall0 on."""
    from rclpy.serialization import serialize_message

    from imkd_ros import msgs as M
    from imkd_ros.raw_frames import RawSweep, radar_cloud_msg, static_tf_items
    from imkd_ros.topics import BASE_FRAME, ODOM_FRAME

    events: list[tuple[int, str, bytes, int]] = []
    n_frames = int(seconds * rate_hz)
    for k in range(n_frames):
        raw = raw_frames[k % len(raw_frames)]
        base = int(k * NS / rate_hz)
        for cam in raw.cameras:
            off = max(-8_000_000, min(cam.stamp - raw.stamp, int(0.6 * NS / rate_hz)))
            t = base + off + 10_000_000  # +10 ms: CAM_FRONT_LEFT fires before the trigger
            info = M.K_to_camera_info(cam.K, cam.width, cam.height, wall0 + t, cam.frame_id)
            img = M.bytes_to_compressed(cam.data, wall0 + t, cam.frame_id, "jpeg")
            events.append((t, f"{cam.name}/camera_info", serialize_message(info), wall0 + t))
            events.append((t, cam.name, serialize_message(img), wall0 + t))
    n_sweeps = int(seconds * 13.0)
    for j in range(n_sweeps):
        raw = raw_frames[j % len(raw_frames)]
        for i, s in enumerate(raw.sweeps):
            t = int(j * NS / 13.0) + (5 + 15 * i) * 1_000_000
            msg = radar_cloud_msg(RawSweep(s.name, s.frame_id, wall0 + t, s.points))
            events.append((t, s.name, serialize_message(msg), wall0 + t))
    span = int(seconds * NS) + 80_000_000
    for j in range(int(span * 160 / NS) + 1):
        t = int(j * NS / 160.0)
        tf = M.transforms_to_tf_message([(ODOM_FRAME, BASE_FRAME, wall0 + t, _burst_ego(t / NS))])
        events.append((t, "tf", serialize_message(tf), wall0 + t))
    events.sort(key=lambda e: e[0])  # stable: a CameraInfo stays right before its image
    s = Stream(events, serialize_message(M.transforms_to_tf_message(static_tf_items(raw_frames[0]))))
    s.span_s = events[-1][0] / NS
    s.triggers = n_frames
    s.tf_count = sum(k == "tf" for _, k, _, _ in events)
    return s


# ============================================================================ playing
def play(client: Any, stream: Stream, clock: bool, start_wall: int | None) -> list[float]:
    """Publish the stream on schedule (monotonic); returns how late each publish was (ms)."""
    from rosgraph_msgs.msg import Clock

    from imkd_ros.msgs import ns_to_stamp

    pubs = client.pubs
    clock_pub = client.clock_pub
    late: list[float] = []
    clock0 = stream.clock0
    if start_wall is not None:  # stamps are wall times: start when the wall clock reaches the first
        while time.time_ns() < start_wall:
            time.sleep(min(0.05, (start_wall - time.time_ns()) / NS))
    anchor = time.monotonic_ns()
    next_clock = anchor
    bag_t0 = stream.events[0][0] if stream.events else 0
    for t_rel, key, raw, _ in stream.events:
        target = anchor + (t_rel - bag_t0)
        while True:
            now = time.monotonic_ns()
            if clock and now >= next_clock:  # like imkd-replay: 100 Hz, never past the next message
                clock_pub.publish(Clock(clock=ns_to_stamp(clock0 + min(now, target) - anchor)))
                next_clock += 10_000_000
            if now >= target:
                break
            wait = min(target, next_clock if clock else target) - now
            time.sleep(max(wait, 0) / NS if wait > 300_000 else 0)
        if clock:
            clock_pub.publish(Clock(clock=ns_to_stamp(clock0 + t_rel)))
        pubs[key].publish(raw)
        late.append((time.monotonic_ns() - target) / 1e6)
    if clock:  # keep the clock running a little: a node on sim time decides its stall flush in it
        end = time.monotonic_ns() + int(1.5 * NS)
        while time.monotonic_ns() < end:
            now = time.monotonic_ns()
            clock_pub.publish(Clock(clock=ns_to_stamp(clock0 + now - anchor)))
            time.sleep(0.01)
    return late


def _num(v: dict, key: str) -> float:
    try:
        return float(v.get(key, "nan"))
    except ValueError:
        return float("nan")


def run_mode(name: str, make_stream: Any, clock: bool, ckpt: Path, args: argparse.Namespace,
             tmp: Path) -> tuple[dict[str, Any], Stream]:
    """Start a node, build the stream (wall stamps from a moment just ahead), play it, collect."""
    from imkd_ros.harness import HARNESS_NODE_PARAMS, DetectorClient, NodeProcess

    params: dict[str, Any] = {"checkpoint": str(ckpt.resolve()), "device": args.device, "radar_sweeps": 1,
                              "radar_tolerance": HARNESS_NODE_PARAMS["radar_tolerance"],
                              "diagnostics_period": 0.5, "use_sim_time": bool(clock)}
    for item in args.node_param:
        import yaml

        k, _, v = item.partition("=")
        params[k] = yaml.safe_load(v)
    node = NodeProcess(params, tmp / f"{name}.log")
    try:
        with DetectorClient() as client:
            client.wait_for_node(args.timeout, node)
            start_wall = None if clock else time.time_ns() + 3 * NS  # restamping takes ~1 s
            stream = make_stream(start_wall)
            client.pubs["tf_static"].publish(stream.static)
            if clock:
                client.publish_clock(stream.clock0)
            time.sleep(0.5)
            if start_wall is not None and time.time_ns() > start_wall:
                print(f"  {name}: building the stream overran its lead; stamps are in the past", file=sys.stderr)
            late = play(client, stream, clock, start_wall)
            # until the node has handled all of /tf and nothing more is published
            deadline = time.monotonic() + 15.0
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline:
                v = client.diagnostics_values()
                done = _num(v.get("inputs", {}), "count /tf") >= stream.tf_count
                n = len(client.received.detections)
                if n != last:
                    last, since = n, time.monotonic()
                if done and time.monotonic() - since > 1.5:
                    break
                time.sleep(0.25)
            time.sleep(1.0)  # one more diagnostics period
            diag = client.diagnostics_values()
            timing = list(client.received.timing.values())
            published = len(client.received.detections)
    finally:
        node.stop()
    fr, bad, lat, inp = (diag.get(k, {}) for k in ("frames", "bad input", "latency", "inputs"))
    stages = [t.get("stages_ms", {}) for t in timing]
    node_model = [s["total"] for s in stages if "total" in s]
    node_decode = [s["decode_images"] for s in stages if "decode_images" in s]
    dropped = {"tf": _num(fr, "frames_dropped_tf"), "invalid": _num(fr, "frames_invalid"),
               "inference_errors": _num(bad, "inference_errors")}
    if "frames_dropped_decode" in fr:
        dropped["decode"] = _num(fr, "frames_dropped_decode")
    if "frames_dropped_stale" in fr:
        dropped["stale"] = _num(fr, "frames_dropped_stale")
    res: dict[str, Any] = {
        "frames_expected": stream.triggers, "frames_published": published,
        "frames_skipped_newest_wins": _num(fr, "frames_dropped_overload"),
        "frames_dropped": dropped,
        "resets": _num(fr, "clock_resets") + _num(fr, "ros_clock_resets"),
        "tf_published": stream.tf_count, "tf_received": _num(inp, "count /tf"),
        "camera_slots_masked": _num(fr, "cameras_masked") + _num(fr, "cameras_masked_tf"),
        "model_ms_node_p50": pct(node_model, 50), "decode_ms_node_p50": pct(node_decode, 50) if node_decode else None,
        "latency_ms_p50": pct([t["age_ms"] for t in timing], 50),
        "latency_ms_p95": pct([t["age_ms"] for t in timing], 95),
        "input_lag_ms_p95": _num(lat, "input_lag_ms p95"),
        "stream_s": round(stream.span_s, 3), "player_late_ms_p95": pct(late, 95),
        "stages_ms_node_p50": {k: pct([s[k] for s in stages if k in s], 50) for k in sorted({k for s in stages
                                                                                             for k in s})},
    }
    return res, stream


def alone(frames: list[Any], jpegs: list[list[bytes]], reduction: int, ckpt: Path,
          args: argparse.Namespace) -> tuple[float, float]:
    """(Predictor p50 ms, 6-JPEG decode p50 ms) in this process on the stream's frames."""
    import torch  # noqa: F401

    from imkd_core.predict import Predictor
    from imkd_core.preprocess import decode_image
    from imkd_ros.params import apply_detection_limits, default_params

    p = default_params()
    predictor = Predictor(checkpoint=ckpt, device=args.device)
    apply_detection_limits(predictor, p["score_threshold"], p["max_detections"])
    worker = ThreadPoolExecutor(max_workers=1)  # like the node: inference off the main thread

    def timed(frame: Any) -> float:
        t0 = time.perf_counter()
        predictor.predict(frame)
        return (time.perf_counter() - t0) * 1e3

    times = [worker.submit(timed, frames[i % len(frames)]).result() for i in range(args.alone_frames + 2)][2:]
    worker.shutdown()
    dec = []
    for i in range(max(3, min(10, len(jpegs)))):
        t0 = time.perf_counter()
        for data in jpegs[i % len(jpegs)]:
            decode_image(data, reduction)
        dec.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), statistics.median(dec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        print(f"unknown mode(s) {unknown}; choose from {MODES}", file=sys.stderr)
        return 2
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig
    from imkd_core.data.nuscenes import NuScenesReader
    from imkd_core.preprocess import jpeg_reduction
    from imkd_ros.harness import make_test_checkpoint
    from imkd_ros.raw_frames import nuscenes_raw_frames

    t_start = time.monotonic()
    tmpdir = tempfile.TemporaryDirectory(prefix="imkd_bench_live_")
    tmp = Path(tmpdir.name)
    ckpt = Path(args.checkpoint) if args.checkpoint else make_test_checkpoint(tmp / "student.pt", config=args.config)
    cfg = IMKDConfig.from_dict(load_checkpoint(ckpt)["config"])
    image_size = tuple(cfg.data.image_size)
    bag, source, nusc = make_bag(args, tmp / "bags")
    src = Source(source, bag, [])
    if any(m in ("clock", "wall") for m in modes):
        src.frames["bag"], src.jpegs["bag"], src.reduction["bag"] = bag_frames(bag, image_size)
    if any(m.startswith("burst") for m in modes):
        scene = next(s for s in nusc.scene if s["name"] == args.scene) if source == "real" else nusc.scene[0]
        tokens, tok = [], scene["first_sample_token"]
        while tok and len(tokens) < 4:
            tokens.append(tok)
            tok = nusc.get("sample", tok)["next"]
        src.raw = nuscenes_raw_frames(nusc, tokens, 1)
        cam = src.raw[0].cameras[0]
        src.reduction["burst"] = r = jpeg_reduction((cam.height, cam.width), image_size)
        reader = NuScenesReader(nusc.dataroot, nusc.version, radar_sweeps=1, load_lidar=False, image_reduction=r,
                                nusc=nusc)
        src.frames["burst"] = [reader[reader.index_of(t)][0] for t in tokens]
        src.jpegs["burst"] = [[c.data for c in f.cameras] for f in src.raw]
    print(f"data: {source} ({bag.name}); model {cfg.name} {image_size}; prepared in "
          f"{time.monotonic() - t_start:.0f} s", flush=True)
    results: dict[str, Any] = {}
    for mode in modes:
        t0 = time.monotonic()
        if mode in ("clock", "wall"):
            name, kind = f"{source}_{mode}", "bag"

            def make(start_wall: int | None) -> Stream:
                return bag_stream(bag, args.bag_seconds, start_wall)
        else:
            name, kind = mode, "burst"
            rate = 12.0 if mode == "burst_12hz" else 24.0

            def make(start_wall: int | None, rate: float = rate) -> Stream:
                return burst_stream(src.raw, rate, args.burst_seconds, start_wall or 0)
        res, stream = run_mode(name, make, mode == "clock", ckpt, args, tmp)
        model_alone, decode_alone = alone(src.frames[kind], src.jpegs[kind], src.reduction[kind], ckpt, args)
        res["model_ms_alone_p50"] = model_alone
        res["decode_ms_alone_p50"] = decode_alone
        res["model_ratio"] = (res["model_ms_node_p50"] / model_alone) if res["model_ms_node_p50"] else None
        could = min(stream.triggers, stream.span_s * 1e3 / (model_alone + decode_alone))
        res["frames_model_could_take"] = could
        res["busy_ratio"] = res["frames_published"] / could if could else None
        node_ms = (res["model_ms_node_p50"] or 0.0) + (res["decode_ms_node_p50"] or 0.0)
        could_node = min(stream.triggers, stream.span_s * 1e3 / node_ms) if node_ms else None
        res["busy_ratio_node"] = res["frames_published"] / could_node if could_node else None
        res["mode_wall_s"] = time.monotonic() - t0
        results[name] = res
        print(f"{name}: published {res['frames_published']}/{res['frames_expected']} "
              f"(could take {could:.1f}), skipped {res['frames_skipped_newest_wins']}, dropped "
              f"{res['frames_dropped']}, resets {res['resets']}, tf {res['tf_received']}/{res['tf_published']}, "
              f"masked {res['camera_slots_masked']}, model node/alone {res['model_ms_node_p50']}/"
              f"{model_alone:.1f} ms, latency p50/p95 {res['latency_ms_p50']}/{res['latency_ms_p95']} ms, "
              f"input lag p95 {res['input_lag_ms_p95']} ms ({res['mode_wall_s']:.0f} s)", flush=True)
    print(f"total {time.monotonic() - t_start:.0f} s")

    def rnd(x: Any) -> Any:
        if isinstance(x, float):
            return None if math.isnan(x) else round(x, 3)
        if isinstance(x, dict):
            return {k: rnd(v) for k, v in x.items()}
        return x
    tmpdir.cleanup()
    print(json.dumps(rnd(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
