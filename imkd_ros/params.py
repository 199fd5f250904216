"""The detector node's parameter schema: name, default (its type is the ROS type), meaning,
constraint and check of every parameter, and their validation.

The one home of the parameters: the node declares them from `PARAMS`; config/detector.yaml and
the parameter table of README.md are generated from it (`python -m imkd_ros.params --write`;
without --write it exits 1 with a diff, and test/test_params.py fails, when the committed files
differ); params files and `-p` overrides are checked against it before rcl reads them
(imkd_ros.param_files). Pure Python (no rclpy), so tools, tests and the launch file read the
schema without starting a node.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import UserError, cli_main
from imkd_core.frame import CAMERAS, RADARS
from imkd_core.rig import Rig, load_rig
from imkd_core.weights import DEMO_CHECKPOINT  # named in the checkpoint's description and error
from imkd_ros import param_files
from imkd_ros.assembler import AssemblerConfig
from imkd_ros.topics import CAMERA_INFO_TOPICS, IMAGE_TOPICS, NODE_NAME, RADAR_TOPICS

NS_PER_S = 1_000_000_000
# Largest magnitude of a double parameter: seconds become int64 nanoseconds (and .inf is refused).
MAX_DOUBLE = 1e6
# Shortest diagnostics_period (100 Hz; the lock-step replay uses 50 Hz): no timer spins a core.
MIN_PERIOD = 0.01


class NodeConfigError(RuntimeError):
    """The node's parameters, checkpoint or device cannot work; the message lists why."""


class MissingCheckpoint(NodeConfigError):
    """`checkpoint` is empty: there is no silent default model."""


def resolve_checkpoint(value: str) -> Path:
    """The checkpoint parameter -> a path; MissingCheckpoint when it is empty."""
    if not value.strip():
        raise MissingCheckpoint(
            "checkpoint is required (pass checkpoint:=/path/to/student.pt); the bundled demo checkpoint "
            f"{DEMO_CHECKPOINT} is trained on synthetic data only: pass it explicitly to try the pipeline")
    return Path(os.path.expanduser(value.strip()))


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default (its type is the ROS type), meaning, constraint, check."""

    name: str
    default: Any
    description: str
    constraint: str = ""
    check: Callable[[Any], bool] | None = None
    dynamic: bool = False
    float_range: tuple[float, float] | None = None  # for ROS tools (rqt sliders); dynamic ones only
    int_range: tuple[int, int] | None = None


def _ge(lo: float) -> Callable[[Any], bool]:
    return lambda v: v >= lo


def _gt(lo: float) -> Callable[[Any], bool]:
    return lambda v: v > lo


def _topics_ok(v: Any) -> bool:
    return len(v) >= 1 and all(isinstance(t, str) and t.strip() for t in v)


PARAMS: tuple[ParamSpec, ...] = (
    # ---- inputs
    ParamSpec("rig", "nuscenes",
              "Sensor rig (imkd_core.rig, docs/rigs.md): a shipped rig's name (nuscenes, compact4) or a rig YAML "
              "path. It fixes the camera and radar order, the defaults of the topic lists, trigger_camera and "
              "camera_offsets, and each radar's PointCloud2 field mapping; it must be the rig the checkpoint was "
              "trained for.", "a rig name or YAML path", lambda v: bool(v.strip())),
    ParamSpec("image_topics", list(IMAGE_TOPICS),
              "Image topics, one per rig camera in the rig's order (absolute or ~/-relative; remappable). "
              f"Default: the rig's (nuScenes: {', '.join(CAMERAS)}, the bag converter's topics).",
              "one non-empty name per rig camera", _topics_ok),
    ParamSpec("camera_info_topics", list(CAMERA_INFO_TOPICS),
              "CameraInfo topics, same camera order. Default: the rig's.", "one non-empty name per rig camera",
              _topics_ok),
    ParamSpec("radar_topics", list(RADAR_TOPICS),
              f"Radar PointCloud2 topics in the rig's radar order (nuScenes: {', '.join(RADARS)}, all 18 ARS408 "
              "fields; other rigs: the fields their rig file maps). Default: the rig's.",
              "one non-empty name per rig radar", _topics_ok),
    ParamSpec("image_transport", "compressed",
              "'compressed': sensor_msgs/CompressedImage (JPEG/PNG); 'raw': sensor_msgs/Image.",
              "compressed | raw", lambda v: v in ("compressed", "raw")),
    ParamSpec("sensor_reliability", "best_effort",
              "QoS reliability of the camera/radar subscriptions (SensorDataQoS otherwise: keep last 5, "
              "volatile). best_effort matches every publisher; reliable gives lossless delivery from reliable "
              "publishers (bag replay tools, tests) but does not match best-effort drivers.",
              "best_effort | reliable", lambda v: v in ("best_effort", "reliable")),
    ParamSpec("sensor_queue_depth", 5,
              "History depth (keep last N) of the camera/radar subscriptions; 5 = SensorDataQoS. Raise it with "
              "reliable delivery from a bag player that publishes faster than the node decodes, so nothing is "
              "overwritten in the reader's history.",
              "1 .. 1000", lambda v: 1 <= v <= 1000),
    ParamSpec("decode_threads", 1,
              "Threads decoding the six images of the frame about to be inferred (OpenCV decodes without the GIL; "
              "1 = on the inference thread).", "1 .. 16", lambda v: 1 <= v <= 16),
    ParamSpec("jpeg_reduction", 0,
              "Decode images at 1/N scale: 0 = the largest N in {1, 2, 4, 8} that keeps the image at least as "
              "large as the model input (imkd_core.preprocess.jpeg_reduction, as the offline reader does).",
              "0, 1, 2, 4 or 8", lambda v: v in (0, 1, 2, 4, 8)),
    # ---- frames
    ParamSpec("base_frame", "base_link", "Ego frame of the detections (REP-105).", "non-empty", bool),
    ParamSpec("fixed_frame", "odom", "World-fixed frame for ego-motion compensation of every input.",
              "non-empty, != base_frame", bool),
    ParamSpec("global_frame", "map", "Frame of SensorFrame.ego_to_global ('' = none; diagnostics only).", "", None),
    # ---- synchronisation (imkd_ros.assembler)
    ParamSpec("trigger_camera", "CAM_FRONT", "Camera whose image starts a frame; its stamp is the frame stamp. "
              "Default: the rig's first (reference) camera.", "one of the rig's cameras", lambda v: bool(v.strip())),
    ParamSpec("sync_window", 0.06, "s: max |image stamp - (trigger stamp + camera offset)| to join a frame.",
              "> 0", _gt(0.0)),
    ParamSpec("camera_offsets", [0.0, 0.0, 0.0, 0.0, 0.0, -0.01],
              "s: expected stamp of each camera minus the trigger's (camera order). A camera's slot is final "
              "once it has sent an image at/after its expected stamp; nuScenes' CAM_FRONT_LEFT fires ~8 ms "
              "before CAM_FRONT, hence -0.01. Default: the rig's sync_offset of each camera.",
              "one value per rig camera, |v| < 1", lambda v: len(v) >= 1 and all(abs(x) < 1.0 for x in v)),
    ParamSpec("camera_timeout", 0.1, "s of input time after the trigger before a missing camera is masked.",
              ">= 0", _ge(0.0)),
    ParamSpec("camera_buffer_len", 4, "Images kept per camera for matching.", ">= 1", _ge(1)),
    ParamSpec("radar_sweeps", 0,
              "Radar sweeps per radar accumulated into a frame; 0 = the model config's data.radar_sweeps.",
              ">= 0", _ge(0)),
    ParamSpec("radar_mode", "closing",
              "'closing': up to the first sweep at/after frame stamp - radar_tolerance (the nuScenes "
              "keyframe sweep); 'causal': sweeps at/before frame stamp + radar_tolerance.",
              "closing | causal", lambda v: v in ("closing", "causal")),
    ParamSpec("radar_tolerance", 0.001, "s, see radar_mode.", ">= 0", _ge(0.0)),
    ParamSpec("radar_timeout", 0.1, "s of input time a frame waits for the sweep that settles its radar choice.",
              ">= 0", _ge(0.0)),
    ParamSpec("radar_max_gap", 0.3,
              "s: walking back from a radar's newest selected sweep, accumulation stops at a gap between "
              "consecutive sweeps longer than this (the offline reader's sweep chain ends there too; nuScenes "
              "radars run at ~13 Hz, so 0.3 spans one dropped sweep but not a keyframe-only bag's 2 Hz).",
              "> 0", _gt(0.0)),
    ParamSpec("radar_max_age", 1.0, "s: sweeps older than the frame stamp minus this are never accumulated.",
              "> 0", _gt(0.0)),
    ParamSpec("radar_buffer_len", 16, "Sweeps kept per radar.", "> radar_sweeps", _ge(2)),
    ParamSpec("tf_timeout", 0.05, "s of input time a frame waits for odometry to cover its stamps.", ">= 0",
              _ge(0.0)),
    ParamSpec("max_pending_triggers", 8, "Frames in assembly (bounded memory).", ">= 1", _ge(1)),
    ParamSpec("max_pending_frames", 1,
              "Completed frames waiting for inference; older ones are dropped (newest frame wins).", ">= 1",
              _ge(1)),
    ParamSpec("max_clock_jump_back", 1.0,
              "s: an input stamped this far behind the newest of its own stream is held back; once every active "
              "stream has jumped back (or the ROS clock does), every buffer resets (bag loop). A stream whose next "
              "message is on time again had one stale message: dropped and counted alone.", "> 0", _gt(0.0)),
    ParamSpec("max_stream_lag", 0.5,
              "s: camera and radar timeouts run on their own stamps (a constant transport latency does not expire "
              "them), but never more than this behind the newest input of any kind (a silent kind cannot hold "
              "frames).", "> 0", _gt(0.0)),
    ParamSpec("stall_timeout", 0.5,
              "s of node-clock time without any input after which pending frames are completed by their "
              "timeouts (end of a bag, sensors stopped; run-time changeable: the lock-step replay holds it "
              "long and shortens it after the bag's last message).", "(0, 3600]", lambda v: 0.0 < v <= 3600.0,
              dynamic=True, float_range=(0.0, 3600.0)),
    ParamSpec("tf_cache_time", 10.0, "s of history kept per dynamic TF edge.", "> 0", _gt(0.0)),
    ParamSpec("tf_max_extrapolation", 0.05, "s a TF lookup may hold the nearest sample beyond its history.",
              ">= 0", _ge(0.0)),
    # ---- input sanity limits
    ParamSpec("max_radar_points", 5000, "Radar clouds with more points are dropped unparsed (nuScenes: ~125).",
              ">= 1", _ge(1)),
    ParamSpec("max_image_bytes", 16_000_000, "Image messages with more data bytes are dropped undecoded.",
              ">= 1", _ge(1)),
    ParamSpec("max_image_size", [4096, 4096],
              "Largest image [width, height] in pixels, read from the JPEG/PNG header (or Image fields) before "
              "decoding: larger images are dropped undecoded (a tiny JPEG may declare 60000 x 60000).",
              "2 values >= 1", lambda v: len(v) == 2 and all(x >= 1 for x in v)),
    ParamSpec("max_stamp_future", 10.0, "s: inputs stamped further ahead of the node clock are dropped.",
              "> 0", _gt(0.0)),
    # ---- model
    ParamSpec("checkpoint", "",
              "Student checkpoint (.pt, imkd_core.checkpoint format). Required: the node does not start without "
              f"one. The bundled imkd_core/weights/{DEMO_CHECKPOINT.name} is trained on synthetic data only; pass "
              "it explicitly to try the pipeline, never on a vehicle.", "an existing file (required)", None),
    ParamSpec("model_config", "",
              "Model config: '' = the checkpoint's own, else a preset name (tiny, paper_r50_256x704) or a YAML "
              "path; must fit the checkpoint's weights.", "", None),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda, cuda:N.",
              "auto | cpu | cuda | cuda:N", lambda v: v in ("auto", "cpu", "cuda") or
              (v.startswith("cuda:") and v[5:].isdigit())),
    ParamSpec("backend", "torch", "Inference backend: torch (eager), onnxruntime (graph exported at start), "
              "torchscript.", "torch | onnxruntime | torchscript",
              lambda v: v in ("torch", "onnxruntime", "torchscript")),
    ParamSpec("precision", "fp32",
              "Inference precision: fp32, fp16 (CUDA), bf16; fp16 and bf16 with backend torch only.",
              "fp32 | fp16 | bf16", lambda v: v in ("fp32", "fp16", "bf16")),
    ParamSpec("warmup", True, "Run one dummy frame at start so the first real frame is not slow.", "", None),
    ParamSpec("score_threshold", 0.3, "Detections scoring below are not published (run-time changeable).",
              "[0, 1)", lambda v: 0.0 <= v < 1.0, dynamic=True, float_range=(0.0, 1.0)),
    ParamSpec("max_detections", 100, "Most detections per frame, best first (run-time changeable).",
              "1 .. 1000", lambda v: 1 <= v <= 1000, dynamic=True, int_range=(1, 1000)),
    # ---- outputs
    ParamSpec("marker_lifetime", 0.5, "s RViz keeps a box marker without a newer frame (run-time changeable).",
              "[0, 3600]", lambda v: 0.0 <= v <= 3600.0, dynamic=True, float_range=(0.0, 3600.0)),
    ParamSpec("diagnostics_period", 1.0, "s between /diagnostics messages.", f"[{MIN_PERIOD}, 3600]",
              lambda v: MIN_PERIOD <= v <= 3600.0),
    ParamSpec("executor", "single",
              "Executor of the input callbacks (inference has its own thread): 'single' = SingleThreadedExecutor, "
              "'multi' = MultiThreadedExecutor (executor_threads), 'events' = rclpy.experimental.EventsExecutor "
              "('single' where rclpy lacks it, e.g. Humble; see docs/design.md before using it).",
              "single | multi | events", lambda v: v in ("events", "single", "multi")),
    ParamSpec("executor_threads", 0, "Threads of the MultiThreadedExecutor (executor: multi; 0 = 8).", ">= 0",
              _ge(0)),
)
PARAM_SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
# Parameters that may change while the node runs; every other one is read-only.
DYNAMIC_PARAMS: tuple[str, ...] = tuple(p.name for p in PARAMS if p.dynamic)
# Sections of config/detector.yaml: first parameter of the section -> its heading.
SECTIONS: dict[str, str] = {
    "rig": "Inputs (topics are absolute or ~/-relative; remap them in the launch file)",
    "base_frame": "Frames",
    "trigger_camera": "Time synchronisation (imkd_ros/assembler.py); times in seconds",
    "tf_cache_time": "TF buffer",
    "max_radar_points": "Input sanity limits (bad input is dropped and counted on /diagnostics)",
    "checkpoint": "Model",
    "marker_lifetime": "Outputs",
    "executor": "Execution",
}


def default_params() -> dict[str, Any]:
    """name -> default of every node parameter (what config/detector.yaml holds)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default) for p in PARAMS}


# Parameters whose defaults come from the rig (rig_defaults). config/detector.yaml shows them as
# comments: a params file that set them would pin nuScenes' topics whatever the rig.
RIG_PARAMS: tuple[str, ...] = ("image_topics", "camera_info_topics", "radar_topics", "trigger_camera",
                               "camera_offsets")


def rig_defaults(rig: Rig) -> dict[str, Any]:
    """The parameters whose defaults come from the rig: topics, trigger camera, camera offsets."""
    return {"image_topics": [c.topic for c in rig.cameras], "camera_info_topics": [c.info_topic for c in rig.cameras],
            "radar_topics": [r.topic for r in rig.radars], "trigger_camera": rig.reference_camera,
            "camera_offsets": [float(c.sync_offset) for c in rig.cameras]}


def specs_for_rig(rig: Rig) -> tuple[ParamSpec, ...]:
    """PARAMS with the rig's defaults (rig_defaults): what the node declares once it knows its rig."""
    import dataclasses

    d = rig_defaults(rig)
    return tuple(dataclasses.replace(s, default=d[s.name]) if s.name in d else s for s in PARAMS)


def rig_problems(params: Mapping[str, Any], rig: Rig) -> list[str]:
    """Why parameters do not fit the rig: list lengths, trigger camera (one line each)."""
    errors = []
    for name, want in (("image_topics", len(rig.cameras)), ("camera_info_topics", len(rig.cameras)),
                       ("radar_topics", len(rig.radars)), ("camera_offsets", len(rig.cameras))):
        if len(params[name]) != want:
            what = "radar" if name == "radar_topics" else "camera"
            errors.append(f"{name} has {len(params[name])} entries but rig {rig.name!r} has {want} {what}s "
                          f"({', '.join(rig.radar_names if what == 'radar' else rig.camera_names)})")
    if params["trigger_camera"] not in rig.camera_names:
        errors.append(f"trigger_camera = {params['trigger_camera']!r}: not a camera of rig {rig.name!r} "
                      f"({', '.join(rig.camera_names)})")
    return errors


def validate_params(params: Mapping[str, Any], rig: Rig | None = None) -> list[str]:
    """Every problem of a full parameter set, one readable line each (empty = valid); with `rig`,
    also rig_problems. Pure."""
    errors: list[str] = []
    bad: set[str] = set()
    for spec in PARAMS:
        problem = _problem(spec, params)
        if problem:
            errors.append(problem)
            bad.add(spec.name)
    p = params
    if not bad & {"base_frame", "fixed_frame"} and p["base_frame"] == p["fixed_frame"]:
        errors.append(f"fixed_frame = {p['fixed_frame']!r}: must differ from base_frame")
    if not bad & {"radar_sweeps", "radar_buffer_len"} and p["radar_sweeps"] and \
            p["radar_buffer_len"] <= p["radar_sweeps"]:
        errors.append(f"radar_buffer_len = {p['radar_buffer_len']}: must exceed radar_sweeps ({p['radar_sweeps']})")
    if not bad & {"image_topics", "camera_info_topics", "radar_topics"}:
        all_topics = list(p["image_topics"]) + list(p["camera_info_topics"]) + list(p["radar_topics"])
        dup = sorted(t for t, n in Counter(all_topics).items() if n > 1)
        if dup:
            errors.append(f"input topics must be distinct; repeated: {dup}")
    if rig is not None and not bad & set(RIG_PARAMS):
        errors += rig_problems(p, rig)
    return errors


def change_problems(current: Mapping[str, Any], changes: Iterable[tuple[str, Any]]) -> list[str]:
    """Why run-time changes (name, value) of a running parameter set `current` would be refused:
    read-only, type, value. Names outside PARAMS (use_sim_time, rclpy's own) are not judged here."""
    reasons = []
    for name, value in changes:
        spec = PARAM_SPECS.get(name)
        if spec is None:
            continue
        if not spec.dynamic:
            reasons.append(f"{name} is read-only at run time (restart the node to change it)")
            continue
        reasons += [e for e in validate_params({**current, name: value}) if e.startswith(name)]
    return reasons


def effective_params(params_files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
                     fqn: str = f"/{NODE_NAME}") -> dict[str, Any]:
    """The values the node will run with, in rcl's order: the defaults, then each params file in
    turn (the sections whose node key matches the node's name `fqn`), then `overrides` (-p
    name:=value); later ones win. For tools that must know the node's settings without asking it."""
    values = default_params()
    given: set[str] = set()
    for path in params_files:
        doc = param_files.load_yaml(Path(path).read_text()) or {}
        for key, body in doc.items() if isinstance(doc, dict) else ():
            if isinstance(body, dict) and param_files.key_matches(key, fqn):
                body = {k: v for k, v in (body.get("ros__parameters") or {}).items() if k in PARAM_SPECS}
                values.update(body)
                given |= set(body)
    values.update({k: v for k, v in (overrides or {}).items() if k in PARAM_SPECS})
    given |= set(overrides or {})
    if values["rig"] != PARAM_SPECS["rig"].default:  # the node takes these defaults from its rig
        values.update({k: v for k, v in rig_defaults(load_rig(values["rig"])).items() if k not in given})
    return values


def _problem(spec: ParamSpec, params: Mapping[str, Any]) -> str | None:
    """Why one parameter's value is unusable on its own (missing, type, finiteness, check), or None."""
    if spec.name not in params:
        return f"{spec.name}: missing"
    v = params[spec.name]
    if param_files.yaml_type(v) != param_files.yaml_type(spec.default):
        return f"{spec.name} = {v!r}: expected a {param_files.yaml_type(spec.default)} (like {spec.default!r})"
    floats = [v] if isinstance(v, float) else [x for x in v if isinstance(x, float)] if isinstance(v, list) else []
    if not all(math.isfinite(x) and abs(x) <= MAX_DOUBLE for x in floats):
        return f"{spec.name} = {v!r}: must be finite (|v| <= {MAX_DOUBLE:g})"
    try:
        ok = spec.check is None or bool(spec.check(v))
    except (TypeError, ValueError):
        ok = False
    return None if ok else f"{spec.name} = {v!r}: must be {spec.constraint}"


def assembler_config(p: Mapping[str, Any], radar_sweeps: int, rig: Rig | None = None) -> AssemblerConfig:
    """Node parameters (seconds) -> AssemblerConfig (nanoseconds), in the rig's sensor order
    (default: nuScenes')."""
    ns = lambda s: int(round(float(s) * NS_PER_S))  # noqa: E731
    rig = rig or load_rig()
    cameras = rig.camera_names
    return AssemblerConfig(
        cameras=cameras, radars=rig.radar_names, trigger_camera=p["trigger_camera"],
        match_window_ns=ns(p["sync_window"]),
        camera_offsets_ns={c: ns(o) for c, o in zip(cameras, p["camera_offsets"]) if o},
        camera_timeout_ns=ns(p["camera_timeout"]), camera_buffer_len=int(p["camera_buffer_len"]),
        radar_sweeps=int(radar_sweeps), radar_mode=p["radar_mode"], radar_tolerance_ns=ns(p["radar_tolerance"]),
        radar_timeout_ns=ns(p["radar_timeout"]), radar_max_gap_ns=ns(p["radar_max_gap"]),
        radar_max_age_ns=ns(p["radar_max_age"]), radar_buffer_len=int(p["radar_buffer_len"]),
        tf_timeout_ns=ns(p["tf_timeout"]), max_pending_frames=int(p["max_pending_frames"]),
        max_pending_triggers=int(p["max_pending_triggers"]), base_frame=p["base_frame"],
        fixed_frame=p["fixed_frame"], global_frame=p["global_frame"] or None,
        max_clock_jump_back_ns=ns(p["max_clock_jump_back"]), max_stream_lag_ns=ns(p["max_stream_lag"]),
        decode_threads=int(p["decode_threads"]),
        clear_tf_on_reset=True,
    ).validate()


def rig_of_args(argv: Sequence[str]) -> str:
    """The `rig` value the node will run with, read from argv's params files and -p overrides
    (rcl's order, as effective_params): what the start-up check of the other parameters needs."""
    files: list[str] = []
    overrides: dict[str, Any] = {}
    for group in param_files.ros_args(argv):
        for flag, value in zip(group, group[1:]):
            if flag == "--params-file" and Path(value).is_file():
                files.append(value)
            elif flag in ("-p", "--param") and value.partition(":=")[0].rpartition(":")[2] == "rig":
                text = value.partition(":=")[2]
                overrides["rig"] = param_files.load_yaml(text) if text else text
    try:
        values = effective_params(files, overrides, param_files.node_fqn(argv, NODE_NAME))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the full check itself
        values = {"rig": overrides.get("rig", PARAM_SPECS["rig"].default)}
    return str(values["rig"])


def apply_detection_limits(predictor: Any, score_threshold: float, max_detections: int) -> None:
    """Set the decode score threshold and top-K of a Predictor (the model reads them per call).

    The node and the offline reference in tests/benchmarks configure their Predictors through
    this one function, so both decode alike."""
    predictor.config.model.score_threshold = float(score_threshold)
    predictor.config.model.max_detections = int(max_detections)


def default_params_file() -> Path | None:
    """config/detector.yaml: the installed share dir (ament index) or this source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory("imkd_ros")) / "config" / "detector.yaml"
        if p.is_file():
            return p
    except (ImportError, LookupError, OSError, ValueError):  # not installed in an ament prefix
        pass
    p = Path(__file__).resolve().parents[1] / "config" / "detector.yaml"
    return p if p.is_file() else None


def with_default_params_file(argv: Sequence[str]) -> list[str]:
    """argv with `--ros-args --params-file <config/detector.yaml>` unless a params file is given.

    The file goes before the user's first `--ros-args` (else at the end): rcl applies parameter
    overrides in argv order, later ones winning, so the user's `-p name:=value` beat the file."""
    argv = list(argv)
    if "--params-file" in argv:
        return argv
    path = default_params_file()
    if path is None:
        return argv
    at = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    return argv[:at] + ["--ros-args", "--params-file", str(path)] + argv[at:]


# ============================================================================ generated files
YAML_PATH = Path("config") / "detector.yaml"
README_PATH = Path("README.md")
README_BEGIN, README_END = "<!-- params:begin -->", "<!-- params:end -->"
_YAML_HEADER = f"""\
# Parameters of the {NODE_NAME} node, every one with its default (those the rig decides, commented
# out: the node takes them from its `rig`). Generated from imkd_ros/params.py
# by `python -m imkd_ros.params --write`: edit that file, not this one (test/test_params.py fails
# when they differ). The node declares the same defaults, so a params file may list only what it
# changes. README.md explains each parameter.
#
# Key '/**/{NODE_NAME}' matches the node in any namespace (a plain '{NODE_NAME}:' key would
# not match once the launch file's `namespace` argument is set); '/**:' works too.
/**/{NODE_NAME}:
  ros__parameters:
    use_sim_time: false   # true when replaying a bag with --clock
"""


def _meaning(spec: ParamSpec) -> str:
    return spec.description + (f" Constraint: {spec.constraint}." if spec.constraint else "")


def _yaml_scalar(v: Any) -> str:
    """A value as rcl and PyYAML read back with its type (a double keeps its dot, '' stays a string)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        mantissa, e, exp = text.partition("e")
        return f"{mantissa}.0e{exp}" if e and "." not in mantissa else text
    if isinstance(v, int):
        return str(v)
    if v and param_files.load_yaml(v) == v and v.strip() == v and not any(c in v for c in ":#{}[],&*!|>'\"%@`"):
        return v
    return json.dumps(v)  # a JSON string is a YAML double-quoted scalar


def params_yaml() -> str:
    """The text of config/detector.yaml: every parameter with its default and description (the
    constraints are in README.md and the parameter descriptors)."""
    out = [_YAML_HEADER]
    for s in PARAMS:
        if s.name in SECTIONS:
            out.append(f"\n    # ---- {SECTIONS[s.name]}\n")
        out.append(textwrap.fill(s.description, width=104, initial_indent="    # ", subsequent_indent="    # ",
                                 break_on_hyphens=False) + "\n")
        v = s.default
        indent = "    "
        if s.name in RIG_PARAMS:  # commented out: the node takes them from its rig (nuScenes' shown)
            out.append("    # (default: the rig's; uncomment to override; the nuScenes rig's values:)\n")
            indent = "    # "
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            out.append(f"{indent}{s.name}:\n" + "".join(f"{indent}  - {_yaml_scalar(x)}\n" for x in v))
        elif isinstance(v, list):
            out.append(f"{indent}{s.name}: [{', '.join(_yaml_scalar(x) for x in v)}]\n")
        else:
            out.append(f"{indent}{s.name}: {_yaml_scalar(v)}\n")
    text = "".join(out)
    doc = param_files.load_yaml(text)[f"/**/{NODE_NAME}"]["ros__parameters"]
    doc.pop("use_sim_time")
    want = {k: v for k, v in default_params().items() if k not in RIG_PARAMS}
    if doc != want or any(type(doc[k]) is not type(want[k]) for k in want):  # a formatting bug, never a user's
        raise AssertionError("generated config/detector.yaml does not read back as the defaults")
    return text


def parameter_table_markdown() -> str:
    """The parameter table of README.md (name, type, default, meaning), from PARAMS."""
    rows = ["| name | type | default | meaning |", "|---|---|---|---|"]
    for s in PARAMS:
        d = s.default
        shown = ("`''`" if d == "" else "the topics of *Inputs*" if isinstance(d, list) and isinstance(d[0], str)
                 else f"`{json.dumps(d)}`")
        meaning = (_meaning(s) + (" **Dynamic.**" if s.dynamic else "")).replace("|", r"\|")  # not a cell border
        rows.append(f"| `{s.name}` | {param_files.yaml_type(d)} | {shown} | {meaning} |")
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    """README.md's text with the block between the params markers replaced by the table."""
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md lacks the {README_BEGIN} ... {README_END} markers around the parameter table")
    return readme[:begin + len(README_BEGIN)] + "\n" + parameter_table_markdown() + "\n" + readme[end:]


def generated_files(root: Path) -> dict[Path, str]:
    """Path under `root` -> the text it must hold (config/detector.yaml, README.md)."""
    return {root / YAML_PATH: params_yaml(), root / README_PATH: readme_with_table((root / README_PATH).read_text())}


@cli_main(prog="python -m imkd_ros.params")
def main(argv: Sequence[str] | None = None) -> int:
    """Check that config/detector.yaml and README.md's parameter table are what PARAMS generates
    (exit 1 with a diff when not), or rewrite them with --write."""
    ap = argparse.ArgumentParser(prog="python -m imkd_ros.params", description=main.__doc__)
    ap.add_argument("--write", action="store_true", help="rewrite the stale generated files")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="source tree holding config/ and README.md (default: this one)")
    args = ap.parse_args(argv)
    try:
        files = generated_files(args.root)
    except ValueError as e:  # README.md without the markers
        raise UserError(str(e)) from e
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    for p in stale:
        if args.write:
            atomic_write_text(p, files[p])
            print(f"wrote {os.path.relpath(p)}")
        else:
            old = p.read_text().splitlines(keepends=True) if p.is_file() else []
            print("".join(difflib.unified_diff(old, files[p].splitlines(keepends=True), str(p), "generated")))
    if stale and not args.write:
        print(f"{len(stale)} file(s) differ from imkd_ros/params.py: run `python -m imkd_ros.params --write`")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
