"""Two separate OS processes exchange vision_msgs/Detection3DArray and tf2_msgs/TFMessage over
real DDS (Fast DDS, the test run's own ROS_DOMAIN_ID, localhost discovery; see conftest.py).

Topics (<prefix>/detections, <prefix>/tf, <prefix>/tf_static) carry a per-run prefix. The
publisher publishes tf_static once (transient-local, so a late subscriber still gets it)
and then detections and tf every 50 ms until its subscriber has come and gone. The
subscriber decodes everything with imkd_ros.msgs, compares it with the expected content and
exits 0 only if all of it matched. Every wait is bounded; both processes are killed on timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ros

# Shared by both processes: the expected content, built the same way on each side.
COMMON = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy, HistoryPolicy
    from imkd_core.frame import Detections
    from imkd_core.geometry import yaw_to_quat_xyzw
    from imkd_ros import msgs as M
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    STAMP = 1_533_151_603_547_590_000
    DET = Detections(np.array([[10.0, 2.0, 0.9, 4.5, 1.9, 1.6, 0.3, 5.0, -1.0],
                               [-5.0, -3.0, 1.1, 0.7, 0.6, 1.8, -2.9, 0.0, 0.0]], np.float32),
                     [0.91, 0.55], [0, 8], stamp=STAMP)

    def pose(yaw, t):
        T = np.eye(4)
        T[:3, :3] = M.quaternion_to_matrix(yaw_to_quat_xyzw(np.array(yaw)))
        T[:3, 3] = t
        return T

    TF = [("map", "base_link", STAMP, pose(0.7, [100.0, -20.0, 0.0]))]
    TF_STATIC = [("base_link", "CAM_FRONT", 0, pose(-1.2, [1.7, 0.0, 1.5])),
                 ("base_link", "RADAR_FRONT", 0, pose(0.0, [3.4, 0.0, 0.6]))]
    RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    DEADLINE = time.monotonic() + float(sys.argv[1])
    PREFIX = sys.argv[2]  # unique per test run: no cross-talk even if two runs share a domain ID
''')

PUBLISHER = COMMON + textwrap.dedent('''
    rclpy.init()
    node = rclpy.create_node("imkd_test_publisher")
    pub_det = node.create_publisher(Detection3DArray, PREFIX + "/detections", RELIABLE)
    pub_attr = node.create_publisher(PointCloud2, PREFIX + "/detection_attributes", RELIABLE)
    pub_tf = node.create_publisher(TFMessage, PREFIX + "/tf", RELIABLE)
    pub_static = node.create_publisher(TFMessage, PREFIX + "/tf_static", LATCHED)
    pub_static.publish(M.transforms_to_tf_message(TF_STATIC))  # once, before anyone listens
    seen, sent = False, 0
    while time.monotonic() < DEADLINE:
        subs = pub_det.get_subscription_count()
        seen = seen or subs > 0
        if seen and subs == 0:
            break  # the subscriber got what it needed and left
        pub_det.publish(M.detections_to_msg(DET))
        pub_attr.publish(M.detections_to_attributes(DET))
        pub_tf.publish(M.transforms_to_tf_message(TF))
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"saw_subscriber": seen, "sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    sys.exit(0 if seen else 3)
''')

SUBSCRIBER = COMMON + textwrap.dedent('''
    rclpy.init()
    node = rclpy.create_node("imkd_test_subscriber")
    got = {}
    node.create_subscription(Detection3DArray, PREFIX + "/detections",
                             lambda m: got.setdefault("det", m), RELIABLE)
    node.create_subscription(PointCloud2, PREFIX + "/detection_attributes",
                             lambda m: got.setdefault("attr", m), RELIABLE)
    node.create_subscription(TFMessage, PREFIX + "/tf", lambda m: got.setdefault("tf", m), RELIABLE)
    node.create_subscription(TFMessage, PREFIX + "/tf_static", lambda m: got.setdefault("static", m), LATCHED)
    t0 = time.monotonic()
    while len(got) < 4 and time.monotonic() < DEADLINE:
        rclpy.spin_once(node, timeout_sec=0.05)
    report = {"received": sorted(got), "seconds": round(time.monotonic() - t0, 3), "errors": []}

    def check(name, cond):
        if not cond:
            report["errors"].append(name)

    if "det" in got and "attr" in got:
        msg = got["det"]
        back = M.msg_to_detections(msg, got["attr"])
        check("det.frame", msg.header.frame_id == "base_link")
        check("det.stamp", back.stamp == STAMP)
        check("det.classes", [d.results[0].hypothesis.class_id for d in msg.detections] == ["car", "pedestrian"])
        check("det.labels", back.labels.tolist() == DET.labels.tolist())
        check("det.scores", np.allclose(back.scores, DET.scores))
        check("det.boxes", np.allclose(back.boxes, DET.boxes, atol=1e-5))
    if "tf" in got:
        tf = M.tf_message_to_list(got["tf"])
        check("tf.frames", [t[:3] for t in tf] == [t[:3] for t in TF])
        check("tf.matrix", all(np.allclose(a[3], b[3], atol=1e-9) for a, b in zip(tf, TF)))
    if "static" in got:
        st = M.tf_message_to_list(got["static"])
        check("static.frames", [t[:3] for t in st] == [t[:3] for t in TF_STATIC])
        check("static.matrix", all(np.allclose(a[3], b[3], atol=1e-9) for a, b in zip(st, TF_STATIC)))
    print(json.dumps(report), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    sys.exit(0 if len(got) == 4 and not report["errors"] else 4)
''')

TIMEOUT_S = 20.0


def _spawn(code: str, repo_root: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)  # carries conftest's ROS_DOMAIN_ID / discovery range / RMW
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    prefix = f"/imkd_test_{os.getpid()}"
    return subprocess.Popen([sys.executable, "-c", code, str(TIMEOUT_S), prefix], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_exchange_detections_and_tf(repo_root: Path) -> None:
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    t0 = time.monotonic()
    pub = _spawn(PUBLISHER, repo_root)
    time.sleep(0.3)  # let /tf_static be published before the subscriber exists (tests latching)
    sub = _spawn(SUBSCRIBER, repo_root)
    outputs = {}
    try:
        for name, proc in (("subscriber", sub), ("publisher", pub)):
            out, err = proc.communicate(timeout=TIMEOUT_S + 15)
            outputs[name] = (proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        for proc in (pub, sub):
            proc.kill()
            proc.communicate()
        pytest.fail(f"DDS exchange did not finish within {TIMEOUT_S + 15} s; finished: {outputs}")
    finally:
        for proc in (pub, sub):
            if proc.poll() is None:
                proc.kill()

    def tail(name: str) -> str:
        rc, out, err = outputs[name]
        return f"{name} rc={rc}\nstdout: {out}\nstderr: {err[-3000:]}"

    rc, out, _ = outputs["subscriber"]
    assert rc == 0, tail("subscriber") + "\n" + tail("publisher")
    report = json.loads(out.strip().splitlines()[-1])
    assert report["received"] == ["attr", "det", "static", "tf"] and report["errors"] == []
    rc, out, _ = outputs["publisher"]
    assert rc == 0, tail("publisher")
    pub_report = json.loads(out.strip().splitlines()[-1])
    assert pub_report["saw_subscriber"] and pub_report["sent"] >= 1
    assert time.monotonic() - t0 < TIMEOUT_S + 15


def test_in_process_fixtures_round_trip(ros_node: Any, spin_until: Callable[..., bool]) -> None:
    """conftest's ros_context / ros_node / spin_until: a Detection3DArray through DDS in-process."""
    import numpy as np
    from vision_msgs.msg import Detection3DArray

    from imkd_core.frame import Detections
    from imkd_ros import msgs as M

    det = Detections(np.array([[1, 2, 0.5, 4, 2, 1.5, 0.3, 1, 0]], np.float32), [0.8], [1], stamp=42)
    got: list[Detection3DArray] = []
    ros_node.create_subscription(Detection3DArray, f"/imkd_test_{os.getpid()}/in_process", got.append, 10)
    pub = ros_node.create_publisher(Detection3DArray, f"/imkd_test_{os.getpid()}/in_process", 10)

    def published() -> bool:
        pub.publish(M.detections_to_msg(det))
        return bool(got)

    assert spin_until(ros_node, published, timeout=10.0), "no message within 10 s"
    back = M.msg_to_detections(got[0])
    assert back.stamp == 42 and back.labels.tolist() == [1]
    np.testing.assert_allclose(back.boxes[:, :7], det.boxes[:, :7], atol=1e-6)  # velocity: on the companion
