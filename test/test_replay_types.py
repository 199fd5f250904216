"""imkd-replay names message types only from the bag's own definitions and never imports a module
a bag names unless it is an installed ROS interface package.

Small rosbag2 files are written with rosbags, each with one good topic (std_msgs/String) next
to a hostile one: `this/msg/Zen` (a stdlib module whose import prints the Zen of Python), a
type name that is no ROS 2 name, a package that is not an interface package (json), and a
real type whose bag definition differs from the installed message. The CLI runs in its own
process: the good topic is played, each bad one is skipped with one warning line, the Zen is
never printed and `this` is never imported, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy")

from imkd_ros.replay import message_class  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOOD = ("/good", "std_msgs/msg/String", "string data")
HOSTILE = {
    "zen": ("/zen", "this/msg/Zen", "string data"),
    "json": ("/json", "json/msg/Decoder", "string data"),
    "mismatch": ("/mismatch", "std_msgs/msg/Int32", "float64 other"),
}


def _write_bag(path: Path, topics: list[tuple[str, str, str]]) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)  # only the bag's own definitions, hostile ones included
    types = {}
    for _, msgtype, text in topics:
        types.update(get_types_from_msg(text, msgtype))
    store.register(types)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        for i, (topic, msgtype, _) in enumerate(topics):
            conn = w.add_connection(topic, msgtype, typestore=store)
            msg = store.types[msgtype](data="hello") if msgtype == "std_msgs/msg/String" else None
            raw = store.serialize_cdr(msg, msgtype) if msg is not None else bytes([0, 1, 0, 0, 0, 0, 0, 0])
            w.write(conn, 1_000_000_000 + i, raw)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_replay_plays_only_named_installed_types(case: str, tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / f"bag_{case}", [GOOD, HOSTILE[case]])
    code = ("import runpy, sys; sys.argv = ['imkd-replay', sys.argv[1], '--rate', '100']\n"
            "try:\n    runpy.run_module('imkd_ros.replay', run_name='__main__')\n"
            "except SystemExit as e:\n    print('IMPORTED_THIS' if 'this' in sys.modules else 'CLEAN'); "
            "raise SystemExit(e.code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(bag)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Beautiful is better than ugly" not in out and "IMPORTED_THIS" not in out and "CLEAN" in out
    assert "Traceback" not in out
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    topic = HOSTILE[case][0]
    assert summary["published"] == {"/good": 1}, summary
    warnings = [ln for ln in proc.stderr.splitlines() if f"skipping {topic}" in ln]
    assert len(warnings) == 1, proc.stderr


def test_message_class_rules() -> None:
    from std_msgs.msg import String

    assert message_class("std_msgs/msg/String", "string data") is String
    assert message_class("std_msgs/msg/String") is String  # a bag without stored definitions
    with pytest.raises(ValueError, match="not a ROS 2 message type name"):
        message_class("../evil/msg/X")
    with pytest.raises(ValueError, match="not a ROS 2 message type name"):
        message_class("std_msgs/srv/String")
    with pytest.raises(ImportError, match="no ROS interface package 'this'"):
        message_class("this/msg/Zen", "string data")
    assert "this" not in sys.modules
    with pytest.raises(ImportError, match="no ROS interface package 'os'"):
        message_class("os/msg/Path")
    with pytest.raises(ValueError, match="differs from the installed one"):
        message_class("std_msgs/msg/String", "int32 data\nint32 more")
    with pytest.raises(ValueError, match="does not parse"):
        message_class("std_msgs/msg/String", "int32[ data")
    vision = pytest.importorskip("vision_msgs.msg")
    assert message_class("vision_msgs/msg/Detection3DArray") is vision.Detection3DArray  # rosidl file names
