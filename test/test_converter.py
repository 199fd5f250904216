"""nuScenes -> rosbag2 converter on the real subset (../shared/nuscenes; skipped when absent).

One scene (scene-0916, 41 keyframes), converted once per storage: MCAP (bag v8/humble, with
LiDAR) and sqlite3 (bag v9/jazzy, without LiDAR). Everything is checked against the devkit.
"""

from __future__ import annotations

import importlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from imkd_core.pcd import PcdError, PcdTruncatedError, parse_pcd
from imkd_core.radar import RADAR_PCD_FIELDS
from imkd_ros import bag_messages as bm
from imkd_ros import bag_plan as bp
from imkd_ros import nuscenes_to_bag as n2b
from imkd_ros import topics
from imkd_ros.cdr import detection_array_cdr

REPO = Path(__file__).resolve().parents[1]
DATAROOT = Path(os.environ.get("IMKD_NUSCENES_DATAROOT", REPO.parent / "shared" / "nuscenes"))
VERSION = "v1.0-mini"
SCENE = "scene-0916"

pytestmark = pytest.mark.skipif(not (DATAROOT / VERSION).is_dir(),
                                reason=f"real nuScenes subset not found at {DATAROOT}")

PF_NUMPY = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}
CONFIGS = {"mcap": dict(storage="mcap", distro="humble", lidar=True),
           "sqlite3": dict(storage="sqlite3", distro="jazzy", lidar=False)}


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def nusc():
    return n2b.load_nuscenes(DATAROOT, VERSION)


@pytest.fixture(scope="module")
def scene_records(nusc):
    """Devkit view of the scene: sample_data per channel, samples, in time order."""
    scene = next(s for s in nusc.scene if s["name"] == SCENE)
    samples, tok = [], scene["first_sample_token"]
    while tok:
        samples.append(nusc.get("sample", tok))
        tok = samples[-1]["next"]
    tokens = {s["token"] for s in samples}
    by_channel = defaultdict(list)
    for sd in nusc.sample_data:
        if sd["sample_token"] in tokens:
            by_channel[sd["channel"]].append(sd)
    for recs in by_channel.values():
        recs.sort(key=lambda r: r["timestamp"])
    return {"samples": samples, "by_channel": dict(by_channel)}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def bag(request, nusc, tmp_path_factory):
    cfg = CONFIGS[request.param]
    opts = n2b.ConvertOptions(storage=cfg["storage"], distro=cfg["distro"], lidar=cfg["lidar"], progress=False)
    out = tmp_path_factory.mktemp(f"bags_{request.param}")
    stats = n2b.convert_scene(nusc, SCENE, out, opts)
    assert stats.status == "ok" and stats.bag == out / SCENE
    from rosbags.rosbag2 import Reader

    msgs = []
    with Reader(stats.bag) as reader:
        conns = {c.topic: c for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            msgs.append((conn.topic, conn.msgtype, stamp, bytes(raw)))
    return {"path": stats.bag, "opts": opts, "stats": stats, "msgs": msgs, "conns": conns,
            "ts": n2b.get_typestore(cfg["distro"])}


def _topic_msgs(bag, topic):
    return [(stamp, bag["ts"].deserialize_cdr(raw, typ)) for t, typ, stamp, raw in bag["msgs"] if t == topic]


def _ns(msg_stamp) -> int:
    return msg_stamp.sec * 1_000_000_000 + msg_stamp.nanosec


def _cloud(fields, point_step: int, width: int, data: bytes) -> np.ndarray:
    dtype = np.dtype({"names": [f.name for f in fields], "formats": [PF_NUMPY[f.datatype] for f in fields],
                      "offsets": [f.offset for f in fields], "itemsize": point_step})
    return np.frombuffer(data, dtype=dtype, count=width)


# ---------------------------------------------------------------------------------------- tests


def test_topic_counts_match_devkit(bag, nusc, scene_records):
    by_channel = scene_records["by_channel"]
    expected = Counter()
    for ch, recs in by_channel.items():
        if ch == "LIDAR_TOP" and not bag["opts"].lidar:
            continue
        present = sum((DATAROOT / r["filename"]).is_file() for r in recs)
        if ch.startswith("CAM"):
            expected[topics.image_topic(ch)] = present
            expected[topics.camera_info_topic(ch)] = present
        else:
            expected[topics.points_topic(ch)] = present
    # /tf and /odom: every ego pose of the scene (also those of absent sweep files), one per stamp
    pose_stamps = {nusc.get("ego_pose", r["ego_pose_token"])["timestamp"] for recs in by_channel.values() for r in recs}
    expected["/tf"] = expected["/odom"] = len(pose_stamps)
    expected["/tf_static"] = 1
    expected["/ground_truth/detections"] = expected["/ground_truth/markers"] = len(scene_records["samples"])
    got = Counter(t for t, *_ in bag["msgs"])
    assert got == expected
    assert bag["stats"].messages == dict(expected)
    assert topics.TOPICS["CAM_FRONT"] in got and topics.TOPICS["RADAR_FRONT"] in got
    # sweeps are listed but absent in this subset: counted as missing, per channel
    missing = {ch: sum(not (DATAROOT / r["filename"]).is_file() for r in recs) for ch, recs in by_channel.items()}
    if not bag["opts"].lidar:
        missing.pop("LIDAR_TOP")
    assert bag["stats"].missing == {ch: n for ch, n in missing.items() if n}


def test_time_order_and_header_stamps(bag):
    stamps = [s for _, _, s, _ in bag["msgs"]]
    assert stamps == sorted(stamps)
    for topic, typ, stamp, raw in bag["msgs"][:2000]:
        msg = bag["ts"].deserialize_cdr(raw, typ)
        header = getattr(msg, "header", None) or (msg.transforms[0].header if hasattr(msg, "transforms") else None)
        if header is None:
            header = msg.markers[0].header
        assert _ns(header.stamp) == stamp, topic
    if bag["opts"].storage == "sqlite3":  # written (not only read back) in time order
        db = next(bag["path"].glob("*.db3"))
        with sqlite3.connect(db) as con:
            written = [r[0] for r in con.execute("SELECT timestamp FROM messages ORDER BY id")]
        assert written == sorted(written)


def test_images_are_the_jpeg_files(bag, nusc, scene_records):
    for ch, recs in scene_records["by_channel"].items():
        if not ch.startswith("CAM"):
            continue
        files = {r["timestamp"] * 1000: r for r in recs if (DATAROOT / r["filename"]).is_file()}
        images = _topic_msgs(bag, topics.image_topic(ch))
        infos = dict(_topic_msgs(bag, topics.camera_info_topic(ch)))
        assert len(images) == len(files) > 0
        k = np.array(nusc.get("calibrated_sensor", recs[0]["calibrated_sensor_token"])["camera_intrinsic"])
        for stamp, img in images:
            rec = files[stamp]
            assert img.format == "jpeg" and img.header.frame_id == ch.lower()
            assert img.data.tobytes() == (DATAROOT / rec["filename"]).read_bytes()
            info = infos[stamp]
            assert (info.width, info.height) == (rec["width"], rec["height"])
            assert info.header.frame_id == ch.lower() and info.distortion_model == "plumb_bob"
            np.testing.assert_array_equal(info.k.reshape(3, 3), k)
            np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], k)
            assert not info.d.any()


def test_radar_points_equal_devkit_unfiltered(bag, scene_records):
    from nuscenes.utils.data_classes import RadarPointCloud
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    RadarPointCloud.disable_filters()
    try:
        n = 0
        for ch, recs in scene_records["by_channel"].items():
            if not ch.startswith("RADAR"):
                continue
            files = {r["timestamp"] * 1000: DATAROOT / r["filename"] for r in recs}
            for topic, typ, stamp, raw in bag["msgs"]:
                if topic != topics.points_topic(ch):
                    continue
                ref = RadarPointCloud.from_file(str(files[stamp])).points
                msg = bag["ts"].deserialize_cdr(raw, typ)
                assert [f.name for f in msg.fields] == list(RADAR_PCD_FIELDS)
                assert msg.point_step == 43 and msg.header.frame_id == ch.lower()
                arr = _cloud(msg.fields, msg.point_step, msg.width, msg.data.tobytes())
                pts = np.stack([arr[name].astype(np.float64) for name in RADAR_PCD_FIELDS])
                assert pts.shape == ref.shape and pts.shape[1] > 0
                np.testing.assert_array_equal(pts, ref)
                r = deserialize_message(raw, PointCloud2)  # the same through rclpy
                arr2 = _cloud(r.fields, r.point_step, r.width, bytes(r.data))
                np.testing.assert_array_equal(np.stack([arr2[f].astype(np.float64) for f in RADAR_PCD_FIELDS]), ref)
                n += 1
        assert n > 0
    finally:
        RadarPointCloud.default_filters()


def test_lidar_points_equal_devkit(bag, scene_records):
    if not bag["opts"].lidar:
        pytest.skip("this bag was converted with --no-lidar")
    recs = scene_records["by_channel"]["LIDAR_TOP"]
    files = {r["timestamp"] * 1000: DATAROOT / r["filename"] for r in recs}
    clouds = _topic_msgs(bag, topics.points_topic("LIDAR_TOP"))
    assert len(clouds) == sum(f.is_file() for f in files.values())
    for stamp, msg in clouds[:5]:
        scan = np.fromfile(files[stamp], dtype=np.float32).reshape(-1, 5)
        arr = _cloud(msg.fields, msg.point_step, msg.width, msg.data.tobytes())
        assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity", "ring"]
        np.testing.assert_array_equal(np.stack([arr[c] for c in ("x", "y", "z", "intensity")], 1), scan[:, :4])
        np.testing.assert_array_equal(arr["ring"], scan[:, 4].astype(np.uint16))


def test_tf_static_and_poses(bag, nusc, scene_records):
    (stamp, static), = _topic_msgs(bag, "/tf_static")
    assert stamp == bag["msgs"][0][2]  # first message of the bag
    tfs = {(t.header.frame_id, t.child_frame_id): t.transform for t in static.transforms}
    ident = tfs[("map", "odom")]
    assert (ident.translation.x, ident.translation.y, ident.translation.z, ident.rotation.w) == (0, 0, 0, 1)
    for ch, recs in scene_records["by_channel"].items():
        cs = nusc.get("calibrated_sensor", recs[0]["calibrated_sensor_token"])
        tr = tfs[("base_link", ch.lower())]
        assert [tr.translation.x, tr.translation.y, tr.translation.z] == cs["translation"]
        assert [tr.rotation.w, tr.rotation.x, tr.rotation.y, tr.rotation.z] == cs["rotation"]
    # odom->base_link at every ego pose equals the devkit's ego_pose
    poses = {}
    for recs in scene_records["by_channel"].values():
        for r in recs:
            p = nusc.get("ego_pose", r["ego_pose_token"])
            poses.setdefault(p["timestamp"] * 1000, p)
    tf_msgs = _topic_msgs(bag, "/tf")
    assert sorted(s for s, _ in tf_msgs) == sorted(poses)
    for s, m in tf_msgs[::50]:
        (t,) = m.transforms
        assert (t.header.frame_id, t.child_frame_id) == ("odom", "base_link")
        assert [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z] == \
            poses[s]["translation"]
    odom = _topic_msgs(bag, "/odom")
    speed = np.array([m.twist.twist.linear.x for _, m in odom])
    assert odom[0][1].child_frame_id == "base_link" and np.isfinite(speed).all() and np.abs(speed).max() < 40


def test_tf_static_offered_transient_local(bag):
    meta = yaml.safe_load((bag["path"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == n2b.BAG_VERSIONS[bag["opts"].distro]
    qos_by_topic = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
                    for t in meta["topics_with_message_count"]}
    qos = qos_by_topic["/tf_static"]
    if meta["version"] <= 8:  # a YAML string with integer enums (what Humble parses)
        assert isinstance(qos, str)
        (profile,) = yaml.safe_load(qos)
        assert profile["durability"] == 1 and profile["reliability"] == 1 and profile["depth"] == 1
    else:  # v9: a list with enum names
        (profile,) = qos
        assert profile["durability"] == "transient_local"
    from rosbags.interfaces import QosDurability
    assert bag["conns"]["/tf_static"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    # the other topics offer no profile: players fall back to their default (reliable, volatile)
    assert all(not c.ext.offered_qos_profiles for t, c in bag["conns"].items() if t != "/tf_static")


def _rclpy_class(msgtype: str):
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _check_rclpy(bag, packages):
    from rclpy.serialization import deserialize_message

    n = 0
    for topic, typ, stamp, raw in bag["msgs"]:
        if typ.split("/")[0] not in packages:
            continue
        msg = deserialize_message(raw, _rclpy_class(typ))
        header = getattr(msg, "header", None)
        if header is None:
            header = msg.transforms[0].header if typ.startswith("tf2_msgs") else msg.markers[0].header
        assert header.stamp.sec * 1_000_000_000 + header.stamp.nanosec == stamp, topic
        ref = bag["ts"].deserialize_cdr(raw, typ)
        if typ.endswith(("CompressedImage", "PointCloud2")):
            assert bytes(msg.data) == ref.data.tobytes()
        elif typ.endswith("Detection3DArray"):
            assert [d.bbox.size.x for d in msg.detections] == [d.bbox.size.x for d in ref.detections]
            assert [d.results[0].hypothesis.class_id for d in msg.detections] == \
                [d.results[0].hypothesis.class_id for d in ref.detections]
        elif typ.endswith("TFMessage"):
            assert [t.child_frame_id for t in msg.transforms] == [t.child_frame_id for t in ref.transforms]
        n += 1
    return n


def test_every_message_deserialises_with_rclpy(bag):
    n = _check_rclpy(bag, {"sensor_msgs", "nav_msgs", "visualization_msgs"})
    assert n == sum(1 for _, typ, _, _ in bag["msgs"] if typ.split("/")[0] in
                    {"sensor_msgs", "nav_msgs", "visualization_msgs"}) > 0


def test_tf_and_vision_msgs_deserialise_with_rclpy(bag):
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built into the venv (tools/build_interfaces.sh)")
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built into the venv (tools/build_interfaces.sh)")
    assert _check_rclpy(bag, {"tf2_msgs", "vision_msgs"}) > 0


def test_ground_truth_at_cam_front_stamps(bag, nusc, scene_records):
    from nuscenes.eval.common.utils import quaternion_yaw
    from nuscenes.eval.detection.utils import category_to_detection_name
    from pyquaternion import Quaternion

    gt = _topic_msgs(bag, "/ground_truth/detections")
    samples = scene_records["samples"]
    assert len(gt) == len(samples)
    for (stamp, msg), sample in zip(gt, samples):
        cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        assert stamp == cam["timestamp"] * 1000 and msg.header.frame_id == "base_link"
        anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        anns = [a for a in anns if category_to_detection_name(a["category_name"]) is not None]
        assert [d.id for d in msg.detections] == [a["token"] for a in anns]
        pose = nusc.get("ego_pose", cam["ego_pose_token"])
        for det, ann in list(zip(msg.detections, anns))[:10]:
            box = nusc.get_box(ann["token"])
            box.translate(-np.array(pose["translation"]))
            box.rotate(Quaternion(pose["rotation"]).inverse)
            c = det.bbox.center
            np.testing.assert_allclose([c.position.x, c.position.y, c.position.z], box.center, atol=1e-6)
            np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z],
                                       [box.wlh[1], box.wlh[0], box.wlh[2]])
            yaw = 2 * np.arctan2(c.orientation.z, c.orientation.w)
            assert abs(np.angle(np.exp(1j * (yaw - quaternion_yaw(box.orientation))))) < 1e-9
            assert det.results[0].hypothesis.class_id == category_to_detection_name(ann["category_name"])
    meta = yaml.safe_load((bag["path"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    keyframes = yaml.safe_load(meta["custom_data"]["imkd.keyframes"])
    assert [int(k) for k in keyframes] == [s for s, _ in gt]
    assert list(keyframes.values()) == [s["token"] for s in samples]


# ------------------------------------------------------------------------- interruption, corruption


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow  # converts in a child process and kills it mid-write
def test_killed_conversion_leaves_no_finished_bag(tmp_path, nusc):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "imkd_ros.nuscenes_to_bag", "--dataroot", str(DATAROOT), "--version", VERSION,
           "--scenes", SCENE, "--out", str(out), "--no-gt"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / f"{SCENE}.partial"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and any(f.stat().st_size > 2_000_000 for f in partial.rglob("*.mcap")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the conversion finished (or failed) before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / SCENE).exists()
    assert partial.exists() and not (partial / SCENE / "metadata.yaml").exists()
    # the next run replaces the stale partial; a finished bag is then kept, not clobbered
    opts = n2b.ConvertOptions(lidar=False, ground_truth=False, progress=False)
    stats = n2b.convert_scene(nusc, SCENE, out, opts)
    assert stats.status == "ok" and (out / SCENE / "metadata.yaml").is_file() and not partial.exists()
    mtime = (out / SCENE / "metadata.yaml").stat().st_mtime_ns
    assert n2b.convert_scene(nusc, SCENE, out, opts).status == "exists"
    assert (out / SCENE / "metadata.yaml").stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory, scene_records):
    """A dataroot of symlinks to the real data, with one JPEG replaced by garbage and one radar
    PCD truncated (the JPEG comes first in time)."""
    root = tmp_path_factory.mktemp("corrupt_root")
    (root / VERSION).symlink_to(DATAROOT / VERSION)
    (root / "maps").symlink_to(DATAROOT / "maps")
    samples = scene_records["samples"]
    jpg = DATAROOT / scene_records_file(scene_records, samples[5], "CAM_FRONT")
    pcd = DATAROOT / scene_records_file(scene_records, samples[20], "RADAR_FRONT")
    (root / "samples").mkdir()
    for chdir in (DATAROOT / "samples").iterdir():
        if chdir.name in ("CAM_FRONT", "RADAR_FRONT"):
            (root / "samples" / chdir.name).mkdir()
            for f in chdir.iterdir():
                (root / "samples" / chdir.name / f.name).symlink_to(f)
        else:
            (root / "samples" / chdir.name).symlink_to(chdir)
    bad_jpg = root / "samples" / "CAM_FRONT" / jpg.name
    bad_jpg.unlink()
    bad_jpg.write_bytes(b"this is not a jpeg " * 64)
    bad_pcd = root / "samples" / "RADAR_FRONT" / pcd.name
    bad_pcd.unlink()
    bad_pcd.write_bytes(_truncated_pcd(pcd.read_bytes()))
    return root, bad_jpg, bad_pcd


def _truncated_pcd(raw: bytes) -> bytes:
    """Cut a PCD in the middle of its points (nuScenes radar files carry ~3.7 kB zero padding)."""
    pcd = parse_pcd(raw)
    start = len(raw) - len(memoryview(raw)[raw.find(b"\n", raw.find(b"\nDATA ") + 1) + 1:])
    return raw[: start + len(pcd.data) // 2]


def scene_records_file(scene_records, sample, channel):
    tok = sample["data"][channel]
    return next(r["filename"] for r in scene_records["by_channel"][channel] if r["token"] == tok)


def test_corrupt_input_skipped_and_reported(corrupt_root, tmp_path, capsys):
    root, bad_jpg, bad_pcd = corrupt_root
    out = tmp_path / "out"
    rc = n2b.main(["--dataroot", str(root), "--version", VERSION, "--scenes", SCENE, "--out", str(out),
                   "--no-lidar", "--no-gt", "--no-progress", "--on-corrupt", "skip"])
    captured = capsys.readouterr()
    assert rc == 0
    assert str(bad_jpg) in captured.err and str(bad_pcd) in captured.err
    assert str(bad_jpg) in captured.out and str(bad_pcd) in captured.out  # the summary lists them
    from rosbags.rosbag2 import Reader

    with Reader(out / SCENE) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[topics.image_topic("CAM_FRONT")] == counts[topics.image_topic("CAM_BACK")] - 1
    assert counts[topics.camera_info_topic("CAM_FRONT")] == counts[topics.image_topic("CAM_FRONT")]
    assert counts[topics.points_topic("RADAR_FRONT")] == counts[topics.points_topic("RADAR_BACK_LEFT")] - 1


def test_corrupt_input_stops_run(corrupt_root, tmp_path, capsys):
    root, bad_jpg, _ = corrupt_root
    out = tmp_path / "out"
    rc = n2b.main(["--dataroot", str(root), "--version", VERSION, "--scenes", SCENE, "--out", str(out),
                   "--no-lidar", "--no-gt", "--no-progress", "--on-corrupt", "stop"])
    assert rc == 2
    assert str(bad_jpg) in capsys.readouterr().err
    assert not (out / SCENE).exists() and not (out / f"{SCENE}.partial").exists()


def test_parsers_reject_corrupt_bytes():
    good = next((DATAROOT / "samples" / "RADAR_FRONT").iterdir()).read_bytes()
    pcd = parse_pcd(good)
    assert pcd.point_step == 43 and len(pcd.data) == pcd.width * 43
    with pytest.raises(PcdTruncatedError, match="truncated PCD"):
        parse_pcd(_truncated_pcd(good))
    with pytest.raises(PcdError, match="not a PCD"):
        parse_pcd(b"\x00" * 100)
    ts = bm.get_typestore()
    for bad, reason in ((_truncated_pcd(good), "truncated PCD"), (b"\x00" * 100, "not a PCD")):
        with pytest.raises(bm.CorruptInputError, match=reason):  # what the converter reports and skips
            bm.radar_pcd_cdr(ts, 0, "radar_front", bad)
    jpg = next((DATAROOT / "samples" / "CAM_FRONT").iterdir()).read_bytes()
    assert bm.jpeg_size(jpg) == (1600, 900)
    with pytest.raises(bm.CorruptInputError, match="not a JPEG"):
        bm.jpeg_size(b"garbage" * 10)
    with pytest.raises(bm.CorruptInputError, match="truncated JPEG"):
        bm.jpeg_size(jpg[: len(jpg) // 2])
    with pytest.raises(bm.CorruptInputError, match="LiDAR"):
        bm.lidar_points(b"\x00" * 21)


def detection_array_msg(ts, stamp_ns: int, boxes: np.ndarray, class_names, ids) -> object:
    """An independent reference: the ground-truth Detection3DArray built as rosbags message objects
    (one hypothesis with score 1 and pose = bbox centre, yaw as a quaternion about +z)."""
    import math

    v, g = "vision_msgs/msg/", "geometry_msgs/msg/"
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)

    def header():
        return ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                               frame_id="base_link")

    def pose(b):
        return ts.types[g + "Pose"](position=ts.types[g + "Point"](x=float(b[0]), y=float(b[1]), z=float(b[2])),
                                    orientation=ts.types[g + "Quaternion"](x=0.0, y=0.0, z=math.sin(b[6] / 2),
                                                                           w=math.cos(b[6] / 2)))
    dets = []
    for i, b in enumerate(np.asarray(boxes, np.float64).reshape(-1, 9)):
        hyp = ts.types[v + "ObjectHypothesisWithPose"](
            hypothesis=ts.types[v + "ObjectHypothesis"](class_id=str(class_names[i]), score=1.0),
            pose=ts.types[g + "PoseWithCovariance"](pose=pose(b), covariance=np.zeros(36)))
        bbox = ts.types[v + "BoundingBox3D"](center=pose(b), size=ts.types[g + "Vector3"](
            x=float(b[3]), y=float(b[4]), z=float(b[5])))
        dets.append(ts.types[v + "Detection3D"](header=header(), results=[hyp], bbox=bbox, id=str(ids[i])))
    return ts.types[bm.DETECTIONS_TYPE](header=header(), detections=dets)


def test_fast_serialisers_match_rosbags(bag, nusc, scene_records):
    """The one-copy / struct-compiled encoders the converter writes with are byte-identical to
    rosbags' serialiser of the pure message builders (which replay/eval reuse)."""
    ts = bag["ts"]
    ser = ts.serialize_cdr
    samples = scene_records["samples"]
    for sample in samples[::10]:
        for ch, sd_tok in sample["data"].items():
            sd = nusc.get("sample_data", sd_tok)
            path = DATAROOT / sd["filename"]
            raw = path.read_bytes()
            stamp = sd["timestamp"] * 1000
            if ch.startswith("CAM"):
                fast, size, w, h = bm.image_file_cdr(ts, stamp, ch.lower(), path)
                assert bytes(fast) == bytes(ser(bm.compressed_image_msg(ts, stamp, ch.lower(), raw), bm.IMAGE_TYPE))
                assert (size, w, h) == (len(raw), sd["width"], sd["height"])
            elif ch.startswith("RADAR"):
                fast = bm.radar_pcd_cdr(ts, stamp, ch.lower(), raw)
                assert bytes(fast) == bytes(ser(bm.radar_pointcloud2_msg(ts, stamp, ch.lower(), raw), bm.POINTS_TYPE))
            else:
                fast, _ = bm.lidar_file_cdr(ts, stamp, ch.lower(), path)
                assert bytes(fast) == bytes(ser(bm.lidar_pointcloud2_msg(ts, stamp, ch.lower(), raw), bm.POINTS_TYPE))
        ref = sample["data"]["CAM_FRONT"]
        stamp = nusc.get("sample_data", ref)["timestamp"] * 1000
        boxes, names, ids = bp.sample_ground_truth(nusc, sample["token"], ref)
        assert detection_array_cdr(stamp, boxes, names, ids=ids) == \
            bytes(ser(detection_array_msg(ts, stamp, boxes, names, ids), bm.DETECTIONS_TYPE))
        assert bm.markers_cdr(ts, stamp, boxes, names) == bytes(ser(bm.markers_msg(ts, stamp, boxes, names),
                                                                     bm.MARKERS_TYPE))
    # /tf and /odom rows, vectorised over all poses, against rosbags for a sample of them
    plan = bp.plan_scene(nusc, SCENE, bag["opts"])
    tf_rows, odom_rows = bm.pose_messages(ts, plan.pose_stamps, plan.pose_positions, plan.pose_rotations,
                                           plan.pose_linear, plan.pose_angular)
    for i in range(0, len(plan.pose_stamps), 97):
        args = (plan.pose_positions[i], plan.pose_rotations[i])
        stamp = int(plan.pose_stamps[i])
        assert tf_rows[i].tobytes() == bytes(ser(bm.tf_msg(ts, [bm.transform_stamped(
            ts, stamp, "odom", "base_link", *args)]), bm.TF_TYPE))
        assert odom_rows[i].tobytes() == bytes(ser(bm.odometry_msg(
            ts, stamp, *args, plan.pose_linear[i], plan.pose_angular[i]), bm.ODOM_TYPE))



def test_bag_through_the_assembler_equals_the_reader(bag, nusc):
    """Real keyframe-only data: the node's FrameAssembler fed the converted bag (no DDS) builds
    every keyframe exactly as the offline reader does (images, K, poses, radar by the shared
    SweepRule: one sweep per radar at 2 Hz), so closed-loop and offline results can agree."""
    from imkd_core.config import get_config
    from imkd_ros.harness import assemble_bag
    from imkd_ros.replay import bag_keyframes, open_bag
    from imkd_ros.replay_eval import make_reader
    from test.node_support import frame_differences

    cfg = get_config("tiny")
    reader = open_bag(bag["path"])
    try:
        keyframes = bag_keyframes(reader)
    finally:
        reader.close()
    built = assemble_bag(bag["path"], cfg.data.radar_sweeps, tuple(cfg.data.image_size), triggers=keyframes)
    assert sorted(built) == sorted(keyframes)
    offline = make_reader(nusc, list(keyframes.values()), cfg)
    for stamp, token in keyframes.items():
        ref, _ = offline[offline.index_of(token)]
        assert frame_differences(built[stamp], ref) == [], (stamp, frame_differences(built[stamp], ref))
