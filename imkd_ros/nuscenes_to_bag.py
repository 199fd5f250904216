"""nuScenes -> rosbag2 converter: one bag per scene, written with `rosbags` (no rclpy needed).

    imkd-nuscenes-to-bag --dataroot DIR --version v1.0-mini --scenes scene-0916 --out bags/
        [--storage mcap|sqlite3] [--distro humble|jazzy] [--compression none|zstd]
        [--no-lidar] [--no-gt] [--jobs N] [--on-corrupt skip|stop] [--overwrite] [--no-fsync]

Works on any version folder of the devkit layout (v1.0-mini, v1.0-trainval, the synthetic
'v1.0-synth'). Python API: `convert_scene(nusc, scene_name, out_dir, options) -> ConversionStats`.

Topics (the one table, `TOPICS`; the detector config and the replay/eval tools reuse it):

    key                       topic                                                type
    <CAM>                     /sensors/camera/<cam>/image_rect_color/compressed    sensor_msgs/CompressedImage
    <CAM>/camera_info         /sensors/camera/<cam>/camera_info                    sensor_msgs/CameraInfo
    <RADAR>                   /sensors/radar/<radar>/points                        sensor_msgs/PointCloud2
    LIDAR_TOP                 /sensors/lidar/lidar_top/points                      sensor_msgs/PointCloud2
    tf                        /tf                                                  tf2_msgs/TFMessage
    tf_static                 /tf_static                                           tf2_msgs/TFMessage
    odom                      /odom                                                nav_msgs/Odometry
    gt_detections             /ground_truth/detections                             vision_msgs/Detection3DArray
    gt_markers                /ground_truth/markers                                visualization_msgs/MarkerArray

(<cam>, <radar>: the nuScenes channel name lowercased, e.g. cam_front, radar_front_left.)
With --rig (imkd_core.rig; default nuscenes, which is this table), the channels the rig names
get the rig file's topics and frames, in the rig's order, and its reference camera (first) stamps
the keyframes instead of CAM_FRONT; a radar PCD of another layout is passed on with its own fields.
Image topics follow image_transport: `<ns>/image_rect_color/compressed` next to
`<ns>/camera_info` (nuScenes images are already undistorted, hence "rect").

Content:
- CompressedImage: the ORIGINAL JPEG bytes, format "jpeg"; CameraInfo with the same header:
  K from calibrated_sensor, plumb_bob with zero distortion, R = I, P = [K|0], width/height read
  from the JPEG's SOF marker.
- Radar PointCloud2: every point of the PCD file (no filters), all 18 fields with their PCD
  types/sizes (INT8/INT16/FLOAT32, point_step 43, packed); `data` is the PCD payload byte for
  byte. LiDAR PointCloud2: x, y, z, intensity (float32), ring (uint16), point_step 20.
- /tf_static (once, at the bag start; offered as reliable + transient local, depth 1, in the
  bag's offered_qos_profiles metadata, for every storage and distro; the other topics offer no
  profile, so `ros2 bag play` uses its default, reliable + volatile, which both reliable and
  best-effort subscribers accept): map->odom identity and base_link->sensor extrinsics
  from calibrated_sensor. /tf: odom->base_link at every ego pose of the scene (all
  sample_data records, also those whose files are absent). /odom (nav_msgs/Odometry, frame
  odom, child base_link) at the same stamps; twist by central finite differences over +-50 ms,
  expressed in base_link (the child frame, as nav_msgs specifies).
- Ground truth at every keyframe, stamped with the keyframe's CAM_FRONT time (= the project's
  SensorFrame.stamp) in base_link at that time: Detection3DArray (class_id = nuScenes
  detection class, score 1, bbox centre/yaw/size in metres, id = sample_annotation token;
  boxes of the 10 detection classes, unfiltered) and a MarkerArray (DELETEALL, a CUBE per
  box, an ARROW per velocity). The bag's custom_data holds `imkd.keyframes`: a JSON map
  {CAM_FRONT stamp ns: sample token}, and `imkd.source`.

Frames (REP-105/REP-103): map (nuScenes global frame) -> odom (identity, static; nuScenes poses
are already global) -> base_link (ego) -> <channel lowercased> (sensor frame; camera frames are
optical frames: z forward, x right, y down, as in nuScenes' calibration). Every message is
written at its header stamp (sample_data timestamp), all topics in one global time order.

Robustness: sweeps are included where their files exist (the real subset has none); missing
files are counted per channel and summarised, never an error. Paths come only from inside
--dataroot and go only inside --out: a sample_data record without a filename, or with an
absolute or '..' one, is counted ("records skipped") and skipped like a corrupt file (or stops
the run under --on-corrupt stop); a scene whose name is not one plain folder name ('../x') fails
alone ("failed", exit 1), nothing written for it. A corrupt input (not a JPEG, a
JPEG without EOI, a truncated or malformed PCD, a LiDAR .bin of odd size, an unreadable file) is
reported by name and skipped (--on-corrupt skip, the default) or ends the run with exit code 2
(--on-corrupt stop). A bag is written into `<out>/<scene>.partial/` and renamed to
`<out>/<scene>` only when complete (after fsync), so an interrupted run never leaves a
finished-looking bag; a stale `.partial` is replaced on the next run; an existing bag is kept
(reported as "exists") unless --overwrite.

Bag format: --distro humble (the default) writes rosbag2 metadata version 8, which Humble's and
Jazzy's `ros2 bag` both read; --distro jazzy writes version 9 (Jazzy and newer only). MCAP is
Jazzy's default storage (on Humble it needs ros-humble-rosbag2-storage-mcap, or use --storage
sqlite3); --compression zstd is MCAP chunk compression or sqlite3 per-message zstd. Why, with
sources: docs/design.md, "Bags for Humble and Jazzy". Message building and wire format:
imkd_ros.bag_messages; the scene plan and ground truth: imkd_ros.bag_plan.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.data.nuscenes import load_nuscenes
from imkd_core.errors import UserError, cli_main, writable_dir
from imkd_core.rig import load_rig
from imkd_ros.bag_messages import (
    BAG_VERSIONS,
    DEFAULT_DISTRO,
    CorruptInputError,
    camera_info_msg,
    check_markers_cdr,
    check_sensor_cdr,
    get_typestore,
    image_file_cdr,
    lidar_file_cdr,
    markers_cdr,
    pose_messages,
    radar_pcd_cdr,
    require_vision_msgs,
    tf_msg,
    transform_stamped,
)
from imkd_ros.bag_plan import (
    EVENT_GT,
    EVENT_POSE,
    EVENT_SENSOR,
    EVENT_TF_STATIC,
    ConvertOptions,
    ScenePlan,
    plan_scene,
    sample_ground_truth,
    warn,
)
from imkd_ros.cdr import detection_array_cdr
from imkd_ros.topics import (
    BASE_FRAME,
    CAMERA_INFO_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    MAP_FRAME,
    MARKERS_TYPE,
    ODOM_FRAME,
    ODOM_TYPE,
    POINTS_TYPE,
    TF_TYPE,
    TOPICS,
    channel_frame,
    channel_topics,
)

# Names other tools import from the converter (the messages, plan and PCD parser live apart;
# topic names and frames live in imkd_ros.topics).
__all__ = [
    "BAG_VERSIONS", "DEFAULT_DISTRO", "ConversionStats", "ConvertOptions", "CorruptInputError",
    "UnsafeSceneNameError", "bag_dir", "convert_scene", "format_summary", "get_typestore",
    "load_nuscenes", "main", "plan_scene",
]

# ----------------------------------------------------------------------------------------------
# Errors, stats
# ----------------------------------------------------------------------------------------------


class UnsafeSceneNameError(UserError, ValueError):
    """A scene name that would place its bag outside the output folder."""



@dataclass
class ConversionStats:
    """Result of converting one scene."""

    scene: str
    bag: Path | None = None
    status: str = "ok"  # ok | exists | failed
    messages: dict[str, int] = field(default_factory=dict)  # topic -> count
    missing: dict[str, int] = field(default_factory=dict)  # channel -> files absent
    corrupt: list[str] = field(default_factory=list)  # paths of skipped corrupt files
    refused: list[str] = field(default_factory=list)  # sample_data records skipped: no or unsafe filename
    input_bytes: int = 0  # bytes of the input files read
    output_bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (plan, camera, ..., close)

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0



# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _qos(durability: str = "volatile", depth: int = 10) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    dur = QosDurability.TRANSIENT_LOCAL if durability == "transient_local" else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, dur, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def _write_bag(nusc: Any, plan: ScenePlan, bag_path: Path, options: ConvertOptions,
               stats: ConversionStats) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
    from tqdm import tqdm

    ts = get_typestore(options.distro)
    if options.ground_truth:
        require_vision_msgs(ts)
    storage = StoragePlugin.MCAP if options.storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(bag_path, version=BAG_VERSIONS[options.distro], storage_plugin=storage)
    if options.compression == "zstd":
        mode = CompressionMode.STORAGE if options.storage == "mcap" else CompressionMode.MESSAGE
        writer.set_compression(mode, CompressionFormat.ZSTD)
    writer.set_custom_data("imkd.source", f"nuScenes {nusc.version} {plan.scene['name']}")
    writer.set_custom_data("imkd.keyframes", json.dumps({str(k): v for k, v in plan.keyframes.items()}))
    serialize = ts.serialize_cdr

    # Offered QoS: /tf_static reliable + transient local (depth 1), as tf2's static broadcaster;
    # the other topics carry none, so players use their default (reliable, volatile), which
    # matches both reliable and best-effort subscribers.
    topics: dict[str, tuple[str, str, list]] = {
        "tf_static": (TOPICS["tf_static"], TF_TYPE, [_qos("transient_local", 1)]),
        "tf": (TOPICS["tf"], TF_TYPE, []),
        "odom": (TOPICS["odom"], ODOM_TYPE, [])}
    rig = load_rig(options.rig)
    frames = {ch: channel_frame(ch, rig) for ch in plan.channels}
    for ch, modality in plan.channels.items():
        data_topic, info_topic = channel_topics(ch, rig)
        if modality == "camera":
            topics[ch] = (data_topic, IMAGE_TYPE, [])
            topics[f"{ch}/camera_info"] = (info_topic, CAMERA_INFO_TYPE, [])
        elif modality == "radar" or (modality == "lidar" and options.lidar):
            topics[ch] = (data_topic, POINTS_TYPE, [])
    if options.ground_truth:
        topics["gt_detections"] = (TOPICS["gt_detections"], DETECTIONS_TYPE, [])
        topics["gt_markers"] = (TOPICS["gt_markers"], MARKERS_TYPE, [])
    t_pose = time.perf_counter()
    tf_rows, odom_rows = pose_messages(ts, plan.pose_stamps, plan.pose_positions, plan.pose_rotations,
                                       plan.pose_linear, plan.pose_angular)
    stats.timings["tf_odom"] = time.perf_counter() - t_pose

    bar = tqdm(total=len(plan.events), desc=plan.scene["name"], unit="msg", disable=not options.progress,
               mininterval=0.5, leave=False, file=sys.stderr)
    with writer:
        conns = {key: writer.add_connection(topic, typ, typestore=ts, offered_qos_profiles=qos)
                 for key, (topic, typ, qos) in topics.items()}

        def put(key: str, stamp: int, msg: Any, typ: str) -> None:
            writer.write(conns[key], stamp, serialize(msg, typ))

        gt_checked = False
        checked: set[str] = set()
        timings = stats.timings
        stage = ("tf_static", "tf_odom", "sensor", "ground_truth")
        clock = time.perf_counter
        for ev in plan.events:
            t_ev = clock()
            bar.update()
            if ev.kind == EVENT_TF_STATIC:
                tfs = [transform_stamped(ts, ev.stamp, MAP_FRAME, ODOM_FRAME, (0, 0, 0), (1, 0, 0, 0))]
                tfs += [transform_stamped(ts, ev.stamp, BASE_FRAME, frames[ch], cs["translation"],
                                          cs["rotation"]) for ch, cs in plan.calib.items()]
                put("tf_static", ev.stamp, tf_msg(ts, tfs), TF_TYPE)
            elif ev.kind == EVENT_POSE:
                writer.write(conns["tf"], ev.stamp, tf_rows[ev.seq].data)
                writer.write(conns["odom"], ev.stamp, odom_rows[ev.seq].data)
            elif ev.kind == EVENT_SENSOR:
                ch, modality, path, rec = ev.ref
                try:
                    frame = frames[ch]
                    if modality == "camera":
                        k = np.asarray(plan.calib[ch]["camera_intrinsic"], np.float64)
                        if k.shape != (3, 3):
                            raise CorruptInputError(f"calibrated_sensor of {ch} has no 3x3 camera_intrinsic")
                        blob, size, width, height = image_file_cdr(ts, ev.stamp, frame, path)
                        info = serialize(camera_info_msg(ts, ev.stamp, frame, k, width, height), CAMERA_INFO_TYPE)
                        writer.write(conns[ch], ev.stamp, blob)
                        writer.write(conns[f"{ch}/camera_info"], ev.stamp, info)
                    elif modality == "radar":
                        raw = path.read_bytes()
                        size = len(raw)
                        blob = radar_pcd_cdr(ts, ev.stamp, frame, raw)
                        writer.write(conns[ch], ev.stamp, blob)
                    else:  # lidar
                        blob, size = lidar_file_cdr(ts, ev.stamp, frame, path)
                        writer.write(conns[ch], ev.stamp, blob)
                    stats.input_bytes += size
                    if modality not in checked:  # the one-copy encoders against rosbags, once per bag
                        check_sensor_cdr(ts, modality, ev.stamp, frame, path.read_bytes(), blob)
                        checked.add(modality)
                except (CorruptInputError, OSError) as exc:
                    reason = exc.reason if isinstance(exc, CorruptInputError) else f"unreadable ({exc})"
                    err = CorruptInputError(reason, path)
                    if options.on_corrupt == "stop":
                        raise err from None
                    stats.corrupt.append(str(path))
                    warn(f"[nuscenes_to_bag] corrupt input skipped: {path}: {reason}")
            elif ev.kind == EVENT_GT:
                sample_token, ref = ev.ref
                boxes, names, ids = sample_ground_truth(nusc, sample_token, ref)
                dets = detection_array_cdr(ev.stamp, boxes, names, ids=ids)
                marks = markers_cdr(ts, ev.stamp, boxes, names)
                if not gt_checked:  # the fast marker encoder against rosbags' serialiser, once per bag
                    check_markers_cdr(ts, ev.stamp, boxes, names, marks)
                    gt_checked = True
                writer.write(conns["gt_detections"], ev.stamp, dets)
                writer.write(conns["gt_markers"], ev.stamp, marks)
            key = ev.ref[1] if ev.kind == EVENT_SENSOR else stage[ev.kind]
            timings[key] = timings.get(key, 0.0) + clock() - t_ev
        t_close = clock()
        bar.close()
        stats.messages = {topics[key][0]: writer.counts[c.id] for key, c in conns.items()}
    timings["close"] = clock() - t_close


def bag_dir(out_dir: str | os.PathLike, scene_name: str) -> Path:
    """`<out_dir>/<scene_name>`, refusing a scene name (from scene.json) that is not one plain folder
    name: with '/', '..' or a NUL it would put the bag (and its .partial) outside --out."""
    if (not scene_name or scene_name in (".", "..") or "/" in scene_name or "\\" in scene_name
            or "\0" in scene_name):
        raise UnsafeSceneNameError(f"scene name {scene_name!r} in scene.json is not a plain folder name "
                                   "(empty, '.', '..', or holding '/', '\\' or NUL); refused, nothing written")
    return Path(out_dir) / scene_name


def convert_scene(nusc: Any, scene_name: str, out_dir: str | os.PathLike,
                  options: ConvertOptions | None = None) -> ConversionStats:
    """Convert one scene of a loaded `NuScenes` into the bag `<out_dir>/<scene_name>`.

    The bag is written under `<out_dir>/<scene_name>.partial/` and moved into place only when
    complete. Raises CorruptInputError (with `.path`) under on_corrupt="stop"; an existing bag
    is left alone (status "exists") unless options.overwrite.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    out = Path(out_dir)
    final = bag_dir(out, scene_name)
    stats = ConversionStats(scene=scene_name, bag=final)
    if final.exists() and not options.overwrite:
        stats.status = "exists"
        return stats
    plan = plan_scene(nusc, scene_name, options)
    stats.missing = dict(plan.missing)
    stats.refused = list(plan.refused)
    stats.timings["plan"] = time.perf_counter() - start
    partial = out / f"{scene_name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # a stale one from an interrupted run
    partial.mkdir(parents=True)
    try:
        bag_tmp = partial / scene_name
        _write_bag(nusc, plan, bag_tmp, options, stats)
        if options.fsync:
            t_sync = time.perf_counter()
            _fsync_tree(bag_tmp)
            stats.timings["fsync"] = time.perf_counter() - t_sync
        old = None
        if final.exists():  # --overwrite: keep the old bag until the new one is in place
            old = out / f"{scene_name}.old.partial"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(bag_tmp, final)
        if old is not None:
            shutil.rmtree(old)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    stats.output_bytes = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    stats.seconds = time.perf_counter() - start
    return stats


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

_NUSC: Any = None  # the devkit handle shared with forked workers


def _worker(scene: str, out_dir: str, options: ConvertOptions) -> ConversionStats:
    return convert_scene(_NUSC, scene, out_dir, options)


def _parse_scenes(values: Sequence[str], nusc: Any) -> list[str]:
    names = [n for v in values for n in v.split(",") if n]
    if names == ["all"]:
        return [s["name"] for s in nusc.scene]
    known = {s["name"] for s in nusc.scene}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scene(s) {unknown} in {nusc.version}; available: {sorted(known)}")
    return list(dict.fromkeys(names))


def format_summary(results: Iterable[ConversionStats]) -> str:
    """A table of the converted scenes and the missing/corrupt files per channel."""
    results = list(results)
    lines = [f"{'scene':<14} {'status':<7} {'msgs':>7} {'in MB':>8} {'out MB':>8} {'s':>7} {'MB/s':>7}  bag"]
    missing: Counter = Counter()
    corrupt: list[str] = []
    for r in results:
        lines.append(f"{r.scene:<14} {r.status:<7} {r.total_messages:>7} {r.input_bytes / 1e6:>8.1f} "
                     f"{r.output_bytes / 1e6:>8.1f} {r.seconds:>7.2f} {r.mb_per_s:>7.1f}  {r.bag or ''}"
                     + (f"  ({r.error})" if r.error else ""))
        missing.update(r.missing)
        corrupt += r.corrupt
    if missing:
        lines.append("missing files (listed in sample_data, absent on disk; skipped): "
                     + ", ".join(f"{ch} {n}" for ch, n in sorted(missing.items())))
    elif any(r.status == "ok" for r in results):
        lines.append("missing files: none")
    if corrupt:
        lines.append(f"corrupt files skipped ({len(corrupt)}):")
        lines += [f"  {p}" for p in corrupt]
    refused = [x for r in results for x in r.refused]
    if refused:
        lines.append(f"sample_data records skipped, no usable filename ({len(refused)}):")
        lines += [f"  {x}" for x in refused]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-nuscenes-to-bag", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="nuScenes root (holds <version>/, samples/, sweeps/)")
    p.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini, v1.0-trainval")
    p.add_argument("--scenes", nargs="+", default=["all"], help="scene names (space/comma separated) or 'all'")
    p.add_argument("--out", required=True, help="output directory; one bag folder per scene")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--distro", choices=tuple(BAG_VERSIONS), default=DEFAULT_DISTRO,
                   help="humble: bag v8, plays on Humble and Jazzy (default); jazzy: bag v9, Jazzy+ only")
    p.add_argument("--compression", choices=("none", "zstd"), default="none")
    p.add_argument("--no-lidar", action="store_true", help="leave out LIDAR_TOP point clouds")
    p.add_argument("--no-gt", action="store_true", help="leave out ground-truth detections and markers")
    p.add_argument("--jobs", type=int, default=1, help="scenes converted in parallel processes")
    p.add_argument("--on-corrupt", choices=("skip", "stop"), default="skip",
                   help="a corrupt input file is reported and skipped, or stops the run (exit 2)")
    p.add_argument("--overwrite", action="store_true", help="replace existing bags")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync before the final rename (faster, "
                   "still atomic against a killed process, not against a power loss)")
    p.add_argument("--rig", default="nuscenes", help="sensor rig (imkd_core.rig): a shipped name or a YAML "
                   "path; its cameras, radars and LiDAR get the rig's topics and frames, in its order")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main(also=(ValueError,), prog="imkd-nuscenes-to-bag")
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 1 when a scene failed, 2 on a user error (one line: bad flags,
    missing/broken tables, an unwritable --out) or when stopped by a corrupt input."""
    global _NUSC
    args = build_parser().parse_args(argv)
    options = ConvertOptions(storage=args.storage, distro=args.distro, compression=args.compression,
                             lidar=not args.no_lidar, ground_truth=not args.no_gt,
                             on_corrupt=args.on_corrupt, overwrite=args.overwrite, fsync=not args.no_fsync,
                             progress=not args.no_progress and args.jobs <= 1, rig=args.rig)
    load_rig(options.rig)  # a bad rig file: one line, exit 2, before any table is loaded
    if options.ground_truth:
        require_vision_msgs(get_typestore(options.distro))  # fail early, before loading tables
    writable_dir(args.out)
    t0 = time.perf_counter()
    _NUSC = load_nuscenes(args.dataroot, args.version)
    scenes = _parse_scenes(args.scenes, _NUSC)
    print(f"[nuscenes_to_bag] {len(scenes)} scene(s) of {args.version} -> {args.out} "
          f"({options.storage}, bag v{BAG_VERSIONS[options.distro]}/{options.distro}, "
          f"loaded tables in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    results: list[ConversionStats] = []
    rc = 0
    try:
        if args.jobs <= 1 or len(scenes) == 1:
            for scene in scenes:
                results.append(_convert_reporting(scene, args.out, options))
        else:
            from tqdm import tqdm
            ctx = mp.get_context("fork")  # workers inherit the loaded tables
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
                futures = {pool.submit(_worker, s, args.out, options): s for s in scenes}
                try:
                    for fut in tqdm(as_completed(futures), total=len(futures), desc="scenes", unit="scene",
                                    disable=args.no_progress, file=sys.stderr):
                        results.append(_result_of(fut.result, futures[fut]))
                except CorruptInputError:
                    pool.shutdown(wait=True, cancel_futures=True)
                    done = {r.scene for r in results}
                    results += [f.result() for f, s in futures.items()  # scenes that finished meanwhile
                                if s not in done and f.done() and not f.cancelled() and f.exception() is None]
                    raise
    except CorruptInputError as exc:
        print(f"[nuscenes_to_bag] corrupt input, stopping (--on-corrupt stop): {exc}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print("[nuscenes_to_bag] interrupted; unfinished bags removed", file=sys.stderr)
        return 130
    results.sort(key=lambda r: scenes.index(r.scene))
    print(format_summary(results))
    if any(r.status == "exists" for r in results):
        print("[nuscenes_to_bag] existing bags were kept (use --overwrite to replace them)", file=sys.stderr)
    if rc == 0 and any(r.status == "failed" for r in results):
        rc = 1
    return rc


def _result_of(call: Any, scene: str) -> ConversionStats:
    """Run `call()`; a non-corrupt-input exception becomes a failed ConversionStats."""
    try:
        return call()
    except CorruptInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported per scene, the run goes on
        print(f"[nuscenes_to_bag] {scene} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ConversionStats(scene=scene, bag=None, status="failed", error=f"{type(exc).__name__}: {exc}")


def _convert_reporting(scene: str, out_dir: str, options: ConvertOptions) -> ConversionStats:
    return _result_of(lambda: convert_scene(_NUSC, scene, out_dir, options), scene)


if __name__ == "__main__":
    sys.exit(main())

