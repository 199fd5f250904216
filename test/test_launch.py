"""launch/detector.launch.py, config/detector.yaml, README.md and config/imkd.rviz agree with
the node, without launch/launch_ros (not installable here).

The launch file is run against minimal stand-ins of the launch / launch_ros classes it uses:
once to check its constants (every name it uses exists: package, executable, params file,
parameter and topic names) and once to record what a real `ros2 launch` would be asked to
start. The YAML is also loaded by real rclpy for a namespaced node (the way
the launch file's `namespace` argument starts it).
"""

from __future__ import annotations

import ast
import runpy
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from imkd_core.rig import load_rig
from imkd_ros.diagnostics import BAD_KINDS
from imkd_ros.params import (
    PARAMS,
    RIG_PARAMS,
    assembler_config,
    default_params,
    default_params_file,
    rig_defaults,
    validate_params,
)
from imkd_ros.params import with_default_params_file as _with_default_params_file
from imkd_ros.topics import NODE_NAME

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "detector.launch.py"
YAML = ROOT / "config" / "detector.yaml"
YAML_KEY = f"/**/{NODE_NAME}"


def _setup_kwargs() -> dict[str, Any]:
    """setup.py's setup() arguments (setup() replaced by a recorder; globs run in the repo)."""
    import os

    import setuptools

    seen: dict[str, Any] = {}
    real, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kw: seen.update(kw)
    try:
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    return seen


def _launch_constants() -> dict[str, Any]:
    """Module-level names of the launch file, run against the launch stand-ins (its constants
    come from imkd_ros.topics and imkd_ros.params), and the functions it defines (from its AST)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in _stub_modules().items():
            mp.setitem(sys.modules, name, mod)
        consts = runpy.run_path(str(LAUNCH))
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    consts["_functions"] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return consts


def _yaml_params() -> dict[str, Any]:
    doc = yaml.safe_load(YAML.read_text())
    assert list(doc) == [YAML_KEY]
    return doc[YAML_KEY]["ros__parameters"]


# ------------------------------------------------------------------------------------- config
def test_yaml_holds_every_parameter_with_its_default() -> None:
    params = _yaml_params()
    assert params.pop("use_sim_time") is False
    want = default_params()
    assert set(params) == set(want) - set(RIG_PARAMS)  # those come from the node's rig
    for name, value in want.items():
        assert name in RIG_PARAMS or (params[name] == value and type(params[name]) is type(value)), name
    assert validate_params({**params, **rig_defaults(load_rig(params["rig"]))}, load_rig(params["rig"])) == []
    assert default_params_file() == YAML


def test_yaml_matches_namespaced_node_in_rclpy() -> None:
    """rcl applies '/**/imkd_detector' to the node with or without a namespace."""
    import rclpy
    from rclpy.context import Context

    for ns in ("", "perception"):
        ctx = Context()
        rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(YAML), "-p", "sync_window:=0.07"])
        try:
            node = rclpy.create_node(NODE_NAME, namespace=ns, context=ctx)
            assert node.declare_parameter("image_transport", "unset").value == "compressed"
            assert node.declare_parameter("max_image_size", [1, 1]).value == default_params()["max_image_size"]
            assert node.declare_parameter("camera_offsets", [1.0]).value == [1.0]  # the rig's: not in the YAML
            assert node.declare_parameter("sync_window", 1.0).value == 0.07
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=ctx)


def test_validate_params_names_every_problem() -> None:
    p = default_params()
    assert validate_params(p) == []
    bad = {**p, "score_threshold": 1.0, "image_topics": ["/a"], "device": "gpu", "sync_window": 0.0,
           "jpeg_reduction": 3, "camera_timeout": 1, "fixed_frame": "base_link"}
    errors = "\n".join(validate_params(bad, load_rig("nuscenes")))  # the list lengths are the rig's
    for name in ("score_threshold", "image_topics", "device", "sync_window", "jpeg_reduction", "camera_timeout",
                 "fixed_frame"):
        assert name in errors
    assert "double" in errors  # 1 for a double parameter: a type error, not silently accepted
    dup = {**p, "radar_topics": [p["image_topics"][0]] + p["radar_topics"][1:]}
    assert "distinct" in "\n".join(validate_params(dup))
    assert "radar_buffer_len" in "\n".join(validate_params({**p, "radar_sweeps": 16}))
    assert "radar_max_gap" in "\n".join(validate_params({**p, "radar_max_gap": 0.0, "radar_max_age": 2.0}))


def test_sync_parameters_reach_the_assembler() -> None:
    """Node parameters (s) -> AssemblerConfig (ns); the defaults are the assembler's own."""
    from imkd_ros.assembler import AssemblerConfig

    default = assembler_config(default_params(), 6)
    assert (default.radar_max_gap_ns, default.radar_max_age_ns) == (AssemblerConfig.radar_max_gap_ns,
                                                                    AssemblerConfig.radar_max_age_ns)
    cfg = assembler_config({**default_params(), "radar_max_gap": 0.15, "radar_max_age": 0.5}, 6)
    assert (cfg.radar_max_gap_ns, cfg.radar_max_age_ns) == (150_000_000, 500_000_000)


def test_console_script_adds_the_yaml_unless_given() -> None:
    assert _with_default_params_file(["imkd-detector"]) == ["imkd-detector", "--ros-args", "--params-file", str(YAML)]
    own = ["imkd-detector", "--ros-args", "--params-file", "mine.yaml"]
    assert _with_default_params_file(own) == own
    # the YAML goes before the user's --ros-args: rcl lets later parameters win, so -p overrides the file
    user = ["imkd-detector", "--ros-args", "-p", "checkpoint:=x.pt", "-p", "sync_window:=0.07"]
    argv = _with_default_params_file(user)
    assert argv == ["imkd-detector", "--ros-args", "--params-file", str(YAML), *user[1:]]

    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, args=argv)
    try:
        node = rclpy.create_node(NODE_NAME, context=ctx)
        assert node.declare_parameter("checkpoint", "unset").value == "x.pt"
        assert node.declare_parameter("sync_window", 1.0).value == 0.07
        assert node.declare_parameter("image_transport", "unset").value == "compressed"  # from the YAML
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


# ------------------------------------------------------------------------------------- launch file
def test_launch_file_names_existing_things() -> None:
    c = _launch_constants()
    assert "generate_launch_description" in c["_functions"]
    package_xml = ET.parse(ROOT / "package.xml").getroot()
    assert c["PACKAGE"] == package_xml.findtext("name") == "imkd_ros"
    deps = {e.text for e in package_xml.iter("exec_depend")}
    assert {"launch", "launch_ros", "rclpy", "vision_msgs", "tf2_msgs", "diagnostic_msgs"} <= deps

    setup = _setup_kwargs()
    scripts = dict(s.replace(" ", "").split("=", 1) for s in setup["entry_points"]["console_scripts"])
    assert scripts[c["EXECUTABLE"]] == "imkd_ros.detector_node:main" == scripts["imkd-detector"]
    import imkd_ros.detector_node as dn

    assert callable(dn.main)
    assert c["NODE_NAME"] == NODE_NAME

    # the params file exists and is installed where FindPackageShare(...)/config/detector.yaml looks
    rel = Path(*c["PARAMS_FILE"])
    assert (ROOT / rel).is_file()
    installed = {dest: [Path(f).as_posix() for f in files] for dest, files in setup["data_files"]}
    assert rel.as_posix() in installed[f"share/{c['PACKAGE']}/{rel.parent.as_posix()}"]
    assert "config/imkd.rviz" in installed[f"share/{c['PACKAGE']}/config"]
    assert LAUNCH.relative_to(ROOT).as_posix() in installed[f"share/{c['PACKAGE']}/launch"]

    # every parameter it sets is declared by the node and in the YAML
    declared = {p.name for p in PARAMS} | {"use_sim_time"}
    assert set(c["PARAM_ARGS"].values()) <= declared
    assert set(c["PARAM_ARGS"].values()) <= set(_yaml_params())
    assert {"checkpoint", "device", "use_sim_time"} <= set(c["PARAM_ARGS"])

    # its input remaps name exactly the node's default input topics; outputs are the node's
    d = default_params()
    assert sorted(c["INPUT_REMAPS"].values()) == sorted(d["image_topics"] + d["camera_info_topics"] +
                                                        d["radar_topics"])
    assert set(c["OUTPUT_REMAPS"].values()) == {"~/detections", "~/detection_attributes", "~/markers"}


class _Recorder:
    """Stand-in for a launch / launch_ros class: records its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def _stub_modules() -> dict[str, types.ModuleType]:
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction", "IncludeLaunchDescription", "GroupAction",
                           "SetEnvironmentVariable", "LogInfo"],
        "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution", "TextSubstitution"],
        "launch.conditions": ["IfCondition", "UnlessCondition"],
        "launch_ros": [],
        "launch_ros.actions": ["Node", "PushRosNamespace"],
        "launch_ros.substitutions": ["FindPackageShare"],
        "launch_ros.parameter_descriptions": ["ParameterValue", "ParameterFile"],
    }
    mods = {}
    for mod, classes in names.items():
        m = types.ModuleType(mod)
        for cls in classes:
            setattr(m, cls, type(cls, (_Recorder,), {}))
        mods[mod] = m
    return mods


def test_launch_file_runs_against_launch_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, mod in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    ns = runpy.run_path(str(LAUNCH))
    ld = ns["generate_launch_description"]()
    entities = ld.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert {"params_file", "checkpoint", "device", "use_sim_time", "namespace", "cam_front_image",
            "radar_back_right_points", "detections_topic"} <= set(declared)
    share = declared["params_file"]["default_value"]
    assert type(share).__name__ == "PathJoinSubstitution"
    find, *rest = share.args[0]
    assert type(find).__name__ == "FindPackageShare" and find.args == ("imkd_ros",)
    assert rest == ["config", "detector.yaml"]
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]

    # what `ros2 launch ... checkpoint:=/w/s.pt use_sim_time:=true namespace:=perception
    # cam_front_image:=/car/front/compressed` would start
    cfg = {a: str(k.get("default_value", "")) for a, k in declared.items()}
    cfg.update(params_file=str(YAML), checkpoint="/w/s.pt", use_sim_time="true", namespace="perception",
               cam_front_image="/car/front/compressed", detections_topic="/objects")
    context = types.SimpleNamespace(launch_configurations=cfg)
    (node,) = opaque.kwargs["function"](context)
    k = node.kwargs
    assert (k["package"], k["executable"], k["name"], k["namespace"]) == ("imkd_ros", "detector_node",
                                                                          NODE_NAME, "perception")
    assert k["parameters"] == [str(YAML), {"checkpoint": "/w/s.pt", "use_sim_time": True}]
    assert sorted(k["remappings"]) == [("/sensors/camera/cam_front/image_rect_color/compressed",
                                        "/car/front/compressed"), ("~/detections", "/objects")]
    for p in k["parameters"][1]:
        assert p in {s.name for s in PARAMS} | {"use_sim_time"}

    # launch_ros passes remappings as `-r from:=to`: rcl resolves them as intended
    import rclpy
    from rclpy.context import Context
    from sensor_msgs.msg import CompressedImage
    from vision_msgs.msg import Detection3DArray

    ctx = Context()
    rules = [a for src, dst in k["remappings"] for a in ("-r", f"{src}:={dst}")]
    rclpy.init(context=ctx, args=["--ros-args", *rules])
    try:
        rnode = rclpy.create_node(NODE_NAME, namespace=k["namespace"], context=ctx)
        assert rnode.create_publisher(Detection3DArray, "~/detections", 1).topic_name == "/objects"
        markers = rnode.create_publisher(Detection3DArray, "~/markers", 1)
        assert markers.topic_name == "/perception/imkd_detector/markers"
        sub = rnode.create_subscription(CompressedImage, default_params()["image_topics"][0], lambda m: None, 1)
        assert sub.topic_name == "/car/front/compressed"
        rnode.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)

    # all arguments at their defaults: only the params file, no overrides, no remaps
    cfg = {a: str(k.get("default_value", "")) for a, k in declared.items()}
    cfg["params_file"] = str(YAML)
    (node,) = opaque.kwargs["function"](types.SimpleNamespace(launch_configurations=cfg))
    assert node.kwargs["parameters"] == [str(YAML)] and node.kwargs["remappings"] == []


# ------------------------------------------------------------------------------------- docs, rviz
def test_docs_list_every_parameter_and_topic() -> None:
    text = (ROOT / "README.md").read_text()
    d = default_params()
    for p in PARAMS:
        assert f"| `{p.name}` |" in text, p.name
    for t in d["image_topics"] + d["camera_info_topics"] + d["radar_topics"] + ["/tf", "/tf_static"]:
        assert f"`{t}`" in text, t
    for t in ("~/detections", "~/markers", "~/timing", "/diagnostics"):
        assert f"`{t}`" in text
    for kind in BAD_KINDS:
        assert f"`{kind}`" in text, kind


def test_rviz_config_shows_the_node() -> None:
    rv = yaml.safe_load((ROOT / "config" / "imkd.rviz").read_text())
    vm = rv["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "base_link"
    by_class: dict[str, list] = {}
    for disp in vm["Displays"]:
        by_class.setdefault(disp["Class"], []).append(disp)
    markers = [d["Topic"]["Value"] for d in by_class["rviz_default_plugins/MarkerArray"] if d["Enabled"]]
    assert markers == [f"/{NODE_NAME}/markers"]
    images = [d["Topic"]["Value"] for d in by_class["rviz_default_plugins/Image"]]
    assert images == [default_params()["image_topics"][0]]
    assert "rviz_default_plugins/TF" in by_class
