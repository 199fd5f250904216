"""Every rclpy API the package uses exists in Humble's rclpy (3.3.x) or sits behind a fallback.

The dev/CI venv runs Jazzy's rclpy, so nothing at run time would show a Humble-only gap. Here
the Python sources of Humble's rclpy (../shared/rclpy-humble, read with ast, never imported)
and of the installed Jazzy rclpy are indexed: module-level names, class members and the
keyword parameters of every function. Each imkd_ros module is then scanned for

- `from rclpy.X import Y` / `import rclpy.X` where Humble has no module X or no name Y in it;
- `obj.attr` where attr is an rclpy name that Jazzy has and Humble lacks (e.g.
  Node.add_pre_set_parameters_callback, Iron and later);
- keyword arguments that a Jazzy rclpy function takes and Humble's same-named function does not,

unless the use is guarded: inside `if hasattr(..., "attr")` / `getattr(...)` on that name, or
inside a `try` that catches ImportError / AttributeError / TypeError. The scanner is checked
on snippets that must and must not be flagged, so the test can fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HUMBLE = (REPO / ".." / "shared" / "rclpy-humble" / "rclpy" / "rclpy").resolve()


@dataclass
class RclpyIndex:
    """Names one rclpy source tree defines."""

    modules: dict[str, set[str]] = field(default_factory=dict)  # "rclpy.node" -> top-level names
    members: set[str] = field(default_factory=set)  # public functions, methods, classes, modules
    params: dict[str, set[str] | None] = field(default_factory=dict)  # func name -> kwargs (None: **kw)


def _top_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try)):  # conditional definitions
            names |= _top_names(ast.Module(body=[*getattr(node, "body", []), *getattr(node, "orelse", [])],
                                           type_ignores=[]))
    return names


def index_rclpy(root: Path) -> RclpyIndex:
    idx = RclpyIndex()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        tree = ast.parse(path.read_text(), str(path))
        idx.modules[mod] = _top_names(tree)
        for node in ast.walk(tree):
            defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            if isinstance(node, defs) and not node.name.startswith("_") and not any(
                    "property" in ast.unparse(d) or ast.unparse(d).endswith(".setter") for d in node.decorator_list):
                idx.members.add(node.name)  # properties ("version", ...) are too generic a name to match
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                kw = {x.arg for x in a.args + a.kwonlyargs}
                prev = idx.params.get(node.name, set())
                idx.params[node.name] = None if a.kwarg is not None or prev is None else prev | kw
    for mod in list(idx.modules):  # a package also "defines" its submodules
        parent = mod.rsplit(".", 1)[0]
        if parent != mod and parent in idx.modules:
            idx.modules[parent].add(mod.rsplit(".", 1)[1])
    return idx


def _guard_names(node: ast.AST) -> tuple[set[str], set[str]]:
    """(names tested by hasattr/getattr in an `if` test, exception names a `try` catches)."""
    names: set[str] = set()
    if isinstance(node, (ast.If, ast.IfExp)):
        for sub in ast.walk(node.test):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("hasattr", "getattr") \
                    and len(sub.args) >= 2 and isinstance(sub.args[1], ast.Constant):
                names.add(str(sub.args[1].value))
    caught: set[str] = set()
    if isinstance(node, ast.Try):
        for h in node.handlers:
            for sub in ast.walk(h.type) if h.type is not None else ():
                if isinstance(sub, ast.Name):
                    caught.add(sub.id)
    return names, caught


def scan(source: str, humble: RclpyIndex, jazzy: RclpyIndex, filename: str = "<src>") -> list[str]:
    """Findings: uses of rclpy API Humble lacks that no fallback guards (one line each)."""
    tree = ast.parse(source, filename)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def guarded(node: ast.AST, name: str, exceptions: set[str]) -> bool:
        child, cur = node, parents.get(node)
        while cur is not None:
            names, caught = _guard_names(cur)
            if name in names and child is not getattr(cur, "test", None):
                return True
            if caught & (exceptions | {"Exception"}) and child in getattr(cur, "body", []):
                return True
            child, cur = cur, parents.get(cur)
        return False

    out: list[str] = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rclpy":
            have = humble.modules.get(node.module)
            for a in node.names:
                if (have is None or a.name not in have) and not guarded(node, a.name, {"ImportError",
                                                                                       "ModuleNotFoundError"}):
                    out.append(f"{where}: from {node.module} import {a.name}: not in Humble's rclpy")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "rclpy" and a.name not in humble.modules \
                        and not guarded(node, a.name, {"ImportError", "ModuleNotFoundError"}):
                    out.append(f"{where}: import {a.name}: not in Humble's rclpy")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if isinstance(node.value, ast.Name) and node.value.id == "rclpy":  # rclpy.<name>
                if attr not in humble.modules["rclpy"] and not guarded(node, attr, {"AttributeError"}):
                    out.append(f"{where}: rclpy.{attr}: not in Humble's rclpy")
            elif attr in jazzy.members and attr not in humble.members and not attr.startswith("__") \
                    and not guarded(node, attr, {"AttributeError"}):
                out.append(f"{where}: .{attr}: rclpy (Jazzy) has it, Humble's rclpy does not")
        if isinstance(node, ast.Call):
            fname = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else None
            # a callable Humble lacks altogether is the import rule's finding, not a keyword gap
            jz, hb = jazzy.params.get(fname or ""), humble.params.get(fname or "")
            if fname and jz and hb is not None:
                for kw in node.keywords:
                    if kw.arg and kw.arg in jz and kw.arg not in hb and not guarded(node, kw.arg, {"TypeError"}):
                        out.append(f"{where}: {fname}(..., {kw.arg}=): keyword Humble's rclpy lacks")
    return out


@pytest.fixture(scope="module")
def indexes() -> tuple[RclpyIndex, RclpyIndex]:
    if not HUMBLE.is_dir():
        pytest.skip("../shared/rclpy-humble is absent")
    import rclpy

    return index_rclpy(HUMBLE), index_rclpy(Path(rclpy.__file__).parent)


def package_sources() -> list[Path]:
    return sorted((REPO / "imkd_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))


def test_package_uses_only_humble_rclpy_api_or_guarded_fallbacks(indexes: tuple[RclpyIndex, RclpyIndex]) -> None:
    humble, jazzy = indexes
    findings = [f for p in package_sources() for f in scan(p.read_text(), humble, jazzy, str(p.relative_to(REPO)))]
    assert not findings, "rclpy API missing on Humble without a fallback:\n" + "\n".join(findings)


@pytest.mark.parametrize("snippet, flagged", [
    ("node.add_pre_set_parameters_callback(cb)", True),
    ("if hasattr(node, 'add_pre_set_parameters_callback'):\n    node.add_pre_set_parameters_callback(cb)", False),
    ("if hasattr(node, 'add_pre_set_parameters_callback'):\n    pass\nnode.add_pre_set_parameters_callback(cb)",
     True),
    ("from rclpy.parameter_client import AsyncParameterClient", True),
    ("from rclpy.experimental import EventsExecutor", True),
    ("try:\n    from rclpy.experimental import EventsExecutor\nexcept ImportError:\n    EventsExecutor = None", False),
    ("from rclpy.node import Node\nfrom rclpy.clock import ClockType", False),
    ("import rclpy\nrclpy.try_shutdown()", False),
    ("import rclpy\nrclpy.shutdown_all()", True),
    ("node.create_subscription(T, 't', cb, 10, raw=True)", False),
    ("node.create_timer(1.0, cb, autostart=False)", True),
    ("try:\n    from rclpy.experimental import EventsExecutor\nexcept ImportError:\n    pass\n"
     "else:\n    EventsExecutor(context=c)", False),
    ("node.get_logger().warning('x')", False),
])
def test_scanner_flags_exactly_the_missing_api(indexes: tuple[RclpyIndex, RclpyIndex], snippet: str,
                                               flagged: bool) -> None:
    humble, jazzy = indexes
    assert bool(scan(snippet, humble, jazzy)) == flagged, scan(snippet, humble, jazzy)


def test_humble_sources_lack_the_iron_api(indexes: tuple[RclpyIndex, RclpyIndex]) -> None:
    """The reference really is Humble's: the Iron+ API is missing there and present here."""
    humble, jazzy = indexes
    assert "add_pre_set_parameters_callback" not in humble.members
    assert "add_pre_set_parameters_callback" in jazzy.members
    assert "rclpy.parameter_client" not in humble.modules and "rclpy.node" in humble.modules


def test_fallbacks_work_without_the_newer_api(monkeypatch: pytest.MonkeyPatch, ros_context) -> None:
    """imkd_ros.rclpy_compat with the Iron+ API deleted from this rclpy (as on Humble): the
    pre-set hook still sees every change first (also refused read-only ones), and publisher
    counts come from the graph."""
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.subscription import Subscription
    from std_msgs.msg import String

    from imkd_ros import rclpy_compat

    monkeypatch.delattr(Node, "add_pre_set_parameters_callback")
    monkeypatch.delattr(Subscription, "get_publisher_count")
    node = rclpy.create_node("imkd_compat_test", context=ros_context)
    try:
        node.declare_parameter("fixed", 1.0, ParameterDescriptor(read_only=True))
        node.declare_parameter("free", 1.0)
        seen: list[str] = []
        rclpy_compat.pre_set_parameters_callback(node, lambda ps: seen.extend(p.name for p in ps) or ps)
        assert not node.set_parameters([Parameter("fixed", value=2.0)])[0].successful  # read-only: refused
        assert node.set_parameters_atomically([Parameter("free", value=3.0)]).successful
        assert seen == ["fixed", "free"] and node.get_parameter("free").value == 3.0
        sub = node.create_subscription(String, "/imkd_compat_topic", lambda m: None, 10)
        assert rclpy_compat.publisher_count(node, sub) == 0
        node.create_publisher(String, "/imkd_compat_topic", 10)
        assert rclpy_compat.publisher_count(node, sub) == 1
    finally:
        node.destroy_node()
