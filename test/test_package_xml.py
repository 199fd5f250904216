"""package.xml: every dependency key resolves for Humble (ubuntu jammy) and Jazzy (ubuntu noble),
and the declarations are exactly what the code imports.

`rosdep install --from-paths src --ignore-src` fails on the first key it cannot resolve, so a
wrong key breaks a user's first workspace step. The rosdistro snapshot in ../shared/rosdistro
(rosdep base.yaml / python.yaml, each distro's distribution.yaml) is the resolver's data: a key
is a ROS package released into the distro, or a rosdep rule with an ubuntu entry for the
release's codename (apt packages or pip packages). Read without network.

Declarations: the third-party modules that imkd_core, imkd_ros and launch/ import (the installed
package, run time) map to exec_depend keys, and those test/ and train/ import on top map to
test_depend keys, one to one; an import missing from IMPORT_KEYS fails, so a new dependency
cannot slip in undeclared.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROSDISTRO = (REPO / ".." / "shared" / "rosdistro").resolve()
DISTROS = {"humble": "jammy", "jazzy": "noble"}
DEPEND_TAGS = ("depend", "build_depend", "build_export_depend", "buildtool_depend", "exec_depend", "test_depend")

# top-level import -> rosdep key
IMPORT_KEYS: dict[str, str] = {
    **{m: m for m in ("rclpy", "rcl_interfaces", "ament_index_python", "launch", "launch_ros", "builtin_interfaces",
                      "std_msgs", "geometry_msgs", "sensor_msgs", "vision_msgs", "visualization_msgs",
                      "diagnostic_msgs", "tf2_msgs", "rosgraph_msgs", "cv_bridge")},
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib", "torch": "python3-pytorch-pip", "nuscenes": "python3-nuscenes-devkit-pip",
    "pyquaternion": "python3-nuscenes-devkit-pip",  # installed with nuscenes-devkit; it has no key of its own
    "rosbags": "python3-rosbags-pip", "pytest": "python3-pytest", "scipy": "python3-scipy",
    "setuptools": "python3-setuptools",
}
# test/train-only modules the tests skip without (pytest.importorskip): not declared
OPTIONAL = {"onnx", "onnxruntime"}
# run-time modules only an opt-in parameter needs (imported where used): package.xml cannot say
# "optional", so they are not declared and the README says how to install them
OPTIONAL_RUNTIME = {"onnxruntime": "pip install onnxruntime-gpu"}
OWN = {"imkd_core", "imkd_ros", "train", "test", "conftest", "datasets", "train_support"}


def package_depends() -> dict[str, set[str]]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {tag: {e.text.strip() for e in root.iter(tag) if e.text} for tag in DEPEND_TAGS}


def ros_packages(distro: str) -> set[str]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser: 2 MB of YAML per distro
    data = yaml.load((ROSDISTRO / distro / "distribution.yaml").read_text(), Loader=loader)
    out: set[str] = set()
    for name, repo in data["repositories"].items():
        release = repo.get("release")
        if release:
            out |= set(release.get("packages", [name]))
    return out


def resolve(rule: object, codename: str) -> list[str] | None:
    """A rosdep rule's ubuntu entry for `codename` -> what it installs (None: unresolvable)."""
    if not isinstance(rule, dict) or "ubuntu" not in rule:
        return None
    u = rule["ubuntu"]
    if isinstance(u, dict) and not ("pip" in u or "apt" in u or "packages" in u):
        u = u[codename] if codename in u else u.get("*")  # per-release entries (null = not available)
    if u is None:
        return None
    if isinstance(u, list):
        return [f"apt {p}" for p in u] or None
    for installer in ("pip", "apt"):
        if isinstance(u.get(installer), dict) and u[installer].get("packages"):
            return [f"{installer} {p}" for p in u[installer]["packages"]]
    return [f"apt {p}" for p in u.get("packages", [])] or None


@pytest.fixture(scope="module")
def rosdep_rules() -> dict[str, object]:
    if not ROSDISTRO.is_dir():
        pytest.skip("../shared/rosdistro is absent")
    rules: dict[str, object] = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((ROSDISTRO / "rosdep" / name).read_text()))
    return rules


@pytest.mark.parametrize("distro", sorted(DISTROS))
def test_every_key_resolves(distro: str, rosdep_rules: dict[str, object]) -> None:
    released = ros_packages(distro)
    codename = DISTROS[distro]
    unresolved, table = [], []
    for tag, keys in package_depends().items():
        for key in sorted(keys):
            if key in released:
                how = [f"ros-{distro}-{key.replace('_', '-')}"]
            else:
                how = resolve(rosdep_rules.get(key), codename)
            table.append(f"{distro}/{codename} {tag:<12} {key:<30} -> {', '.join(how) if how else 'UNRESOLVED'}")
            if not how:
                unresolved.append(f"{tag} {key}")
    print("\n".join(table))
    assert not unresolved, f"keys that rosdep cannot resolve on {distro} ({codename}): {unresolved}"


def _imports(paths: list[Path]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names and m not in OWN and m != "__future__"}


def _py(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((REPO / d).rglob("*.py"))]


def test_declarations_match_imports() -> None:
    runtime = _imports(_py("imkd_core", "imkd_ros", "launch")) - set(OPTIONAL_RUNTIME)
    readme = (REPO / "README.md").read_text()
    for module, install in OPTIONAL_RUNTIME.items():
        assert install in readme, f"README must say how to install the optional {module} ({install!r})"
    tests = _imports(_py("test", "train")) - runtime - OPTIONAL
    unknown = sorted((runtime | tests) - set(IMPORT_KEYS))
    assert not unknown, f"imported but not mapped to a rosdep key in IMPORT_KEYS: {unknown}"
    deps = package_depends()
    exec_keys = deps["exec_depend"] | deps["depend"]
    want_exec = {IMPORT_KEYS[m] for m in runtime}
    assert exec_keys == want_exec, (f"exec_depend missing {sorted(want_exec - exec_keys)}, "
                                    f"declared but not imported at run time {sorted(exec_keys - want_exec)}")
    want_test = {IMPORT_KEYS[m] for m in tests} - want_exec
    assert deps["test_depend"] == want_test, (f"test_depend missing {sorted(want_test - deps['test_depend'])}, "
                                              f"not imported by tests {sorted(deps['test_depend'] - want_test)}")


def test_resolver_rejects_what_rosdep_rejects(rosdep_rules: dict[str, object]) -> None:
    """The old torch key and an EOL-only rule do not resolve; per-codename nulls are honoured."""
    assert resolve(rosdep_rules.get("python3-torch-pip"), "jammy") is None
    assert resolve(rosdep_rules.get("python3-pytorch-pip"), "noble") == ["pip torch", "pip torchvision"]
    assert resolve({"ubuntu": {"*": ["x"], "jammy": None}}, "jammy") is None
    assert resolve({"ubuntu": {"*": ["x"], "jammy": None}}, "noble") == ["apt x"]
    assert "nav_msgs" in ros_packages("humble") and "imkd_ros" not in ros_packages("jazzy")
