"""The node under a live stream over real DDS (one node process, wall clock, no lock-step):

1. a rig-rate burst (6 cameras at 12 Hz, 5 radars at 13 Hz, /tf at 160 Hz): no reset, every
   /tf message handled, every frame either published or skipped because a newer one won (the
   newest one published), no camera slot masked;
2. the same rig with every image arriving 150 ms after the radar and /tf of its time (a constant
   camera transport latency): every camera slot of every built frame is filled;
3. one radar sweep stamped 30 s old and a TFMessage whose second transform is NaN: each costs
   only itself (counted), nothing resets and the good transform of that message is used.

Speed is not asserted here (train/bench_live.py measures it); the publishing is paced like a
rig, the assertions are about what the node did with it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from tf2_msgs.msg import TFMessage

from imkd_ros import msgs as M
from imkd_ros.harness import HARNESS_NODE_PARAMS, DetectorClient, NodeProcess, make_test_checkpoint
from imkd_ros.raw_frames import RawSweep, radar_cloud_msg
from imkd_ros.topics import ODOM_FRAME
from test.node_support import node_frames
from train.bench_live import NS, Stream, burst_stream, play

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _frames(diag: dict) -> dict[str, int]:
    return {k: int(v) for k, v in diag.get("frames", {}).items() if not k.startswith("_") and v.isdigit()}


def _settle(client: DetectorClient, tf_total: int, timeout: float = 30.0) -> dict:
    """Diagnostics once the node has handled every /tf message and stopped publishing."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        v = client.diagnostics_values()
        n = len(client.received.detections)
        if n != last:
            last, since = n, time.monotonic()
        if v and int(v["inputs"].get("count /tf", 0)) >= tf_total and time.monotonic() - since > 1.5:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    return client.diagnostics_values()


def _delay_cameras(stream: Stream, delay_ns: int) -> Stream:
    """The same messages, each image (and its CameraInfo) published `delay_ns` after its stamp."""
    ev = [(t + delay_ns if k.startswith("CAM") else t, k, raw, s) for t, k, raw, s in stream.events]
    ev.sort(key=lambda e: e[0])
    return Stream(ev, stream.static, stream.span_s + delay_ns / NS, stream.triggers, stream.tf_count)


def test_live_stream_burst_latency_and_bad_messages(tmp_path: Path) -> None:
    ckpt = make_test_checkpoint(tmp_path / "student.pt")
    params = {**HARNESS_NODE_PARAMS, "checkpoint": str(ckpt), "device": "cpu", "radar_sweeps": 1,
              "stall_timeout": 0.5, "diagnostics_period": 0.5}
    raw = node_frames(real=False, per_scene=4, offline=False).raw
    node = NodeProcess(params, tmp_path / "detector.log")
    try:
        with DetectorClient() as client:
            client.wait_for_node(240, node)
            tf_total = 0

            # 1. rig-rate burst, 2 s
            start = time.time_ns() + 2 * NS
            burst = burst_stream(raw, 12.0, 2.0, start)
            client.pubs["tf_static"].publish(burst.static)
            time.sleep(0.5)
            play(client, burst, clock=False, start_wall=start)
            tf_total += burst.tf_count
            d1 = _settle(client, tf_total)
            f1 = _frames(d1)
            triggers = sorted(s for _, k, _, s in burst.events if k == "CAM_FRONT")
            published = set(client.received.detections)
            assert f1["clock_resets"] == 0 and f1["ros_clock_resets"] == 0, d1["frames"]
            assert int(d1["inputs"]["count /tf"]) == burst.tf_count
            assert published <= set(triggers) and triggers[-1] in published, "the newest frame is published"
            assert f1["frames_published"] == len(published) >= 1
            assert f1["frames_published"] + f1["frames_dropped_overload"] == len(triggers), d1["frames"]
            assert f1["cameras_masked"] == f1["cameras_masked_tf"] == f1["frames_dropped_tf"] == 0

            # 2. the images 150 ms late against radar and /tf
            start = time.time_ns() + 2 * NS
            late = _delay_cameras(burst_stream(raw, 12.0, 1.5, start), 150_000_000)
            play(client, late, clock=False, start_wall=start)
            tf_total += late.tf_count
            d2 = _settle(client, tf_total)
            f2 = _frames(d2)
            assert f2["frames_published"] > f1["frames_published"]
            assert f2["cameras_masked"] == 0 and f2["cameras_masked_tf"] == 0, d2["frames"]
            assert f2["clock_resets"] == 0

            # 3. a stale radar sweep and a NaN transform among good ones: each costs only itself
            start = time.time_ns() + 2 * NS
            s3 = burst_stream(raw, 12.0, 1.5, start)
            events = []
            nan_tf = 0
            for t, k, data, stamp in s3.events:
                if k == "tf":  # every /tf message also carries a NaN transform of another frame
                    items = M.tf_message_to_list(deserialize_message(data, TFMessage))
                    msg = M.transforms_to_tf_message(items + [(ODOM_FRAME, "ghost", stamp, np.eye(4))])
                    msg.transforms[1].transform.translation.x = float("nan")
                    data = serialize_message(msg)
                    nan_tf += 1
                events.append((t, k, data, stamp))
            sweep = raw[0].sweeps[0]
            old = radar_cloud_msg(RawSweep(sweep.name, sweep.frame_id, start - 30 * NS, sweep.points))
            events.append((events[len(events) // 2][0], sweep.name, serialize_message(old), start - 30 * NS))
            events.sort(key=lambda e: e[0])
            play(client, Stream(events, s3.static, s3.span_s, s3.triggers, s3.tf_count), clock=False,
                 start_wall=start)
            tf_total += s3.tf_count
            d3 = _settle(client, tf_total)
            f3 = _frames(d3)
            assert f3["clock_resets"] == 0 and f3["inputs_stale"] == 1, d3["frames"]
            assert int(d3["bad input"]["tf_invalid"]) == nan_tf
            assert f3["frames_published"] > f2["frames_published"]
            assert f3["frames_dropped_tf"] == 0 and f3["cameras_masked_tf"] == 0, d3["frames"]
        assert node.alive()
        assert "Traceback" not in node.output(), node.output()[-3000:]
    finally:
        node.stop()


def test_executor_choice_falls_back_where_rclpy_lacks_the_events_executor(ros_context, monkeypatch) -> None:
    """Humble's rclpy has no rclpy.experimental: 'events' then runs on a SingleThreadedExecutor."""
    import sys

    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from imkd_ros.rclpy_compat import make_executor

    ex, kind = make_executor("single", context=ros_context)
    assert kind == "single" and isinstance(ex, SingleThreadedExecutor)
    ex.shutdown()
    ex, kind = make_executor("multi", 3, context=ros_context)
    assert kind == "multi" and isinstance(ex, MultiThreadedExecutor)
    ex.shutdown()
    monkeypatch.setitem(sys.modules, "rclpy.experimental", None)  # import of it raises ImportError
    ex, kind = make_executor("events", context=ros_context)
    assert kind == "single" and isinstance(ex, SingleThreadedExecutor)
    ex.shutdown()
