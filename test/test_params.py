"""imkd_ros.params is the one home of the node's parameters: the committed config/detector.yaml
and README.md's parameter table are what it generates, its generator round-trips every type,
and every parameter it marks dynamic takes effect when changed on a running node."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from imkd_ros import params as P
from imkd_ros.param_files import load_yaml
from imkd_ros.topics import NODE_NAME

ROOT = Path(__file__).resolve().parents[1]


def test_committed_files_are_generated_from_the_schema() -> None:
    """Fails when config/detector.yaml or README.md's parameter block was edited by hand, or the
    schema changed without `python -m imkd_ros.params --write`."""
    for path, text in P.generated_files(ROOT).items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)}: run python -m imkd_ros.params --write"
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(P.README_BEGIN):readme.index(P.README_END)]
    assert all(f"| `{s.name}` |" in block for s in P.PARAMS)


def test_generated_yaml_reads_back_as_the_defaults_with_their_types() -> None:
    doc = load_yaml(P.params_yaml())
    assert list(doc) == [f"/**/{NODE_NAME}"]
    values = doc[f"/**/{NODE_NAME}"]["ros__parameters"]
    assert values.pop("use_sim_time") is False
    want = {k: v for k, v in P.default_params().items() if k not in P.RIG_PARAMS}  # those: the rig's
    assert list(values) == list(want)  # schema order
    text = P.params_yaml()
    for name in P.RIG_PARAMS:  # shown, commented out, with the nuScenes rig's values
        assert f"\n    # {name}:" in text
    for name, value in want.items():
        assert values[name] == value and type(values[name]) is type(value), name
        if isinstance(value, list):
            assert [type(x) for x in values[name]] == [type(x) for x in value], name
    assert set(P.SECTIONS) <= set(P.default_params()) and next(iter(P.SECTIONS)) == P.PARAMS[0].name


@pytest.mark.parametrize("value", ["", "on", "1.5", "a: b", "x # y", " pad", "1e-6", "true", "[a]", "'q'", "plain"])
def test_yaml_strings_keep_their_type(value: str) -> None:
    """A string default that YAML would read as another type or mangle is quoted."""
    assert load_yaml(f"k: {P._yaml_scalar(value)}") == {"k": value}


@pytest.mark.parametrize("value", [0.06, 1e-06, 1e300, -0.01, 16_000_000, 0, True, False])
def test_yaml_numbers_keep_their_type(value: Any) -> None:
    for loader in (load_yaml, __import__("yaml").safe_load):  # rcl's reading and PyYAML's
        got = loader(f"k: {P._yaml_scalar(value)}")["k"]
        assert got == value and type(got) is type(value)


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "detector.yaml", tmp_path / "config" / "detector.yaml")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_check_finds_stale_files_and_write_renews_only_the_generated_block(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    root = _tree(tmp_path)
    assert P.main(["--root", str(root)]) == 0
    yaml_path, readme = root / "config" / "detector.yaml", root / "README.md"
    yaml_path.write_text(yaml_path.read_text().replace("sync_window: 0.06", "sync_window: 0.07"))
    text = readme.read_text()
    edited = text.replace("| `sync_window` | double | `0.06` |", "| `sync_window` | double | `0.07` |")
    readme.write_text("Hand-written intro.\n" + edited)
    capsys.readouterr()
    assert P.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "-    sync_window: 0.07" in out and "+    sync_window: 0.06" in out and "2 file(s) differ" in out
    assert P.main(["--root", str(root), "--write"]) == 0
    assert P.main(["--root", str(root)]) == 0
    assert yaml_path.read_text() == P.params_yaml()
    assert readme.read_text() == "Hand-written intro.\n" + text  # outside the markers: kept as written


def test_readme_without_markers_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _tree(tmp_path)
    (root / "README.md").write_text("# no table here\n")
    with pytest.raises(SystemExit) as e:
        P.main(["--root", str(root), "--write"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and P.README_BEGIN in err
    assert (root / "README.md").read_text() == "# no table here\n"


def test_dynamic_parameters_are_the_schema_s() -> None:
    assert P.DYNAMIC_PARAMS == tuple(s.name for s in P.PARAMS if s.dynamic)
    assert {"score_threshold", "max_detections", "marker_lifetime", "stall_timeout"} <= set(P.DYNAMIC_PARAMS)
    p = P.default_params()
    assert P.change_problems(p, [("stall_timeout", 0.05), ("use_sim_time", True)]) == []
    assert "read-only" in P.change_problems(p, [("sync_window", 0.05)])[0]
    assert P.change_problems(p, [("score_threshold", 1.5)])[0].startswith("score_threshold")


@pytest.mark.ros
@pytest.mark.slow  # loads the Predictor
def test_every_dynamic_parameter_takes_effect_on_a_running_node(ros_context: Any) -> None:
    """A change accepted at run time reaches the values the node works with (and the Predictor)."""
    from rclpy.parameter import Parameter

    from imkd_core.weights import DEMO_CHECKPOINT
    from imkd_ros.detector_node import DetectorNode

    new = {"score_threshold": 0.45, "max_detections": 7, "marker_lifetime": 2.0, "stall_timeout": 0.05}
    assert set(new) == set(P.DYNAMIC_PARAMS)
    node = DetectorNode(context=ros_context, parameter_overrides=[
        Parameter("checkpoint", value=str(DEMO_CHECKPOINT)), Parameter("device", value="cpu"),
        Parameter("warmup", value=False)])
    try:
        for name, value in new.items():
            assert node.set_parameters([Parameter(name, value=value)])[0].successful, name
            assert node.p[name] == value, name
        assert node.predictor.config.model.score_threshold == 0.45
        assert node.predictor.config.model.max_detections == 7
        refused = node.set_parameters([Parameter("sync_window", value=0.05)])[0]
        assert not refused.successful and node.p["sync_window"] == P.default_params()["sync_window"]
    finally:
        node.destroy_node()


def test_effective_params_follow_rcl_order(tmp_path: Path) -> None:
    """Defaults, then params files in order (matching node keys only), then -p overrides."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("/**/imkd_detector:\n  ros__parameters:\n    camera_timeout: 0.2\n    radar_timeout: 0.3\n"
                     "other_node:\n  ros__parameters:\n    tf_timeout: 0.9\n")
    second.write_text("/**:\n  ros__parameters:\n    radar_timeout: 0.4\n    use_sim_time: true\n")
    got = P.effective_params([P.default_params_file(), first, second], {"tf_timeout": 0.07})
    assert (got["camera_timeout"], got["radar_timeout"], got["tf_timeout"]) == (0.2, 0.4, 0.07)
    assert "use_sim_time" not in got and got["sync_window"] == P.default_params()["sync_window"]
    assert P.effective_params([first], fqn="/perception/imkd_detector")["camera_timeout"] == 0.2


def test_rig_of_args_follows_rcl_order(tmp_path: Path) -> None:
    """The start-up check validates the topic lists against the rig the node will run with."""
    f = tmp_path / "p.yaml"
    f.write_text("/**/imkd_detector:\n  ros__parameters:\n    rig: compact4\n")
    assert P.rig_of_args(["imkd-detector"]) == "nuscenes"
    assert P.rig_of_args(["x", "--ros-args", "--params-file", str(f)]) == "compact4"
    assert P.rig_of_args(["x", "--ros-args", "--params-file", str(f), "-p", "rig:=nuscenes"]) == "nuscenes"
    assert P.rig_of_args(["x", "--ros-args", "-p", "imkd_detector:rig:=/r/van.yaml"]) == "/r/van.yaml"
