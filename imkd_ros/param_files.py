"""Check the node's command line and every params file before rcl reads them.

rcl's own handling is lenient or loud in the wrong places: a YAML syntax error or an override
without a value ends in an RCLError traceback; when two params files set one parameter with
different types the second is dropped silently (a string `camera_timeout: "abc"` after a
double keeps the first file's 0.1); a misspelled key, or a node key that does not match the
node (`imkd_detectr:`, which drops the whole file), is ignored without a word. Here every params
file is read alike, with PyYAML, and its values are checked against the node's parameter table:

- errors (the node exits with code 2, one line each): unreadable file, YAML syntax error, a
  file that is not `{node key: {ros__parameters: {...}}}`, a value of the wrong type or out of
  range, `use_sim_time` that is not a bool, a `-p name:=` override without a value;
- warnings (the node starts): unknown parameter names, with the closest known name as a hint;
  node keys that do not match this node, with the key that would.

Pure functions of argv and file contents (no rclpy), so they are tested without a node.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# parameters rclpy itself declares on every node, with their type
RCLPY_PARAMS: dict[str, type] = {"use_sim_time": bool}
# `--ros-args` flags that take one value (what rcl accepts; the value is skipped, not checked)
_FLAGS_WITH_VALUE = {"-r", "--remap", "--log-level", "--enclave", "-e", "--log-config-file", "--log-file-name"}


class RclYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as rcl does: `1e-6` and `1e300` are doubles (YAML 1.1
    wants a dot in the mantissa and would read strings; rcl's parser falls back to strtod)."""


RclYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """A params file's (or a -p value's) YAML, typed like rcl."""
    return yaml.load(text, Loader=RclYamlLoader)


@dataclass
class ArgsCheck:
    """What `check_args` found: errors stop the node, warnings are logged at start."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def ros_args(argv: Sequence[str]) -> list[list[str]]:
    """The argument groups between `--ros-args` and `--` (or the end), in order."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for a in argv:
        if a == "--ros-args":
            current = []
            groups.append(current)
        elif a == "--" and current is not None:
            current = None
        elif current is not None:
            current.append(a)
    return groups


def node_fqn(argv: Sequence[str], node_name: str) -> str:
    """The node's fully qualified name after `-r __ns:=` / `-r __node:=` remaps."""
    ns, name = "", node_name
    for group in ros_args(argv):
        for flag, value in zip(group, group[1:]):
            if flag in ("-r", "--remap"):
                key, _, val = value.partition(":=")
                key = key.split(":", 1)[1] if key.startswith(f"{node_name}:") else key
                if key == "__ns":
                    ns = val.rstrip("/")
                elif key == "__node":
                    name = val
    return f"{ns if ns.startswith('/') or not ns else '/' + ns}/{name}"


def key_matches(key: str, fqn: str) -> bool:
    """rcl's node-key rule: `/**` any namespaces, `*` one token, a relative key starts at /."""
    key = str(key)
    key = key if key.startswith("/") else "/" + key
    pattern = ""
    for part in key.split("/")[1:]:
        pattern += "(/[^/]+)*" if part == "**" else "/" + re.escape(part).replace(r"\*", "[^/]+")
    return re.fullmatch(pattern, fqn) is not None


def yaml_type(v: Any) -> str:
    """A YAML value's ROS parameter type name (bool, integer, double, string, <type> array)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        kinds = {yaml_type(x) for x in v}
        return f"{kinds.pop() if len(kinds) == 1 else 'mixed'} array" if v else "empty array"
    return type(v).__name__


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_file(path: str | Path, fqn: str, known: Iterable[str],
               check_value: Callable[[str, Any], list[str]]) -> ArgsCheck:
    """One params file: syntax, layout, node keys, names, and each value through `check_value`
    (name, value) -> problems (the node's own per-parameter validation)."""
    out = ArgsCheck(files=[str(path)])
    known = set(known)
    try:
        text = Path(path).read_text()
    except OSError as e:
        out.errors.append(f"params file {path}: cannot read it ({e.strerror or e})")
        return out
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        out.errors.append(f"params file {path}: YAML syntax error{where}: {problem}")
        return out
    if doc is None:
        out.warnings.append(f"params file {path}: empty")
        return out
    if not isinstance(doc, dict):
        out.errors.append(f"params file {path}: expected '<node key>: {{ros__parameters: {{...}}}}', "
                          f"got a YAML {type(doc).__name__}")
        return out
    matched = False
    for key, body in doc.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            out.errors.append(f"params file {path}: node key {key!r} has no 'ros__parameters' mapping")
            continue
        params = body["ros__parameters"] or {}
        if not isinstance(params, dict):
            out.errors.append(f"params file {path}: {key!r}: ros__parameters must be a mapping")
            continue
        if not key_matches(key, fqn):
            node = fqn.rsplit("/", 1)[1]
            out.warnings.append(f"params file {path}: node key {key!r} does not match this node ({fqn}): its "
                                f"{len(params)} parameter(s) are ignored (use '/**/{node}' to match it in any "
                                "namespace)")
            continue
        matched = True
        for name, value in params.items():
            name = str(name)
            if name in RCLPY_PARAMS:
                if not isinstance(value, RCLPY_PARAMS[name]):
                    out.errors.append(f"params file {path}: {name} = {value!r}: expected a "
                                      f"{RCLPY_PARAMS[name].__name__} (true or false)")
            elif name not in known:
                out.warnings.append(f"params file {path}: unknown parameter {name!r} ignored{_hint(name, known)}")
            else:
                out.errors += [f"params file {path}: {e}" for e in check_value(name, value)]
    if not matched and doc:
        out.warnings.append(f"params file {path}: no node key matches {fqn}: the file sets nothing")
    return out


def check_args(argv: Sequence[str], node_name: str, known: Iterable[str],
               check_value: Callable[[str, Any], list[str]]) -> ArgsCheck:
    """Every `--params-file` and `-p name:=value` of argv (see the module docstring)."""
    known = set(known)
    fqn = node_fqn(argv, node_name)
    out = ArgsCheck()
    for group in ros_args(argv):
        i = 0
        while i < len(group):
            flag = group[i]
            value = group[i + 1] if i + 1 < len(group) else None
            if flag == "--params-file":
                if value is None:
                    out.errors.append("--params-file needs a file name")
                else:
                    r = check_file(value, fqn, known, check_value)
                    out.errors += r.errors
                    out.warnings += r.warnings
                    out.files += r.files
                i += 2
            elif flag in ("-p", "--param"):
                if value is None or ":=" not in value:
                    out.errors.append(f"{flag} needs name:=value, got {value!r}")
                else:
                    _check_override(value, fqn, known, check_value, out)
                i += 2
            else:
                i += 2 if flag in _FLAGS_WITH_VALUE else 1
    return out


def _check_override(rule: str, fqn: str, known: set[str], check_value: Callable[[str, Any], list[str]],
                    out: ArgsCheck) -> None:
    name, _, text = rule.partition(":=")
    node = fqn.rsplit("/", 1)[1]
    if ":" in name:  # `node:name:=value` applies to one node only
        target, name = name.rsplit(":", 1)
        if target not in (node, fqn):
            return
    if text == "":
        out.errors.append(f"-p {rule}: no value (write {name}:=\"''\" for an empty string)")
        return
    try:
        value = load_yaml(text)  # rcl reads override values as YAML too
    except yaml.YAMLError:
        value = text
    if name in RCLPY_PARAMS:
        if not isinstance(value, RCLPY_PARAMS[name]):
            out.errors.append(f"-p {rule}: {name} must be true or false")
    elif name not in known:
        out.warnings.append(f"-p {rule}: unknown parameter {name!r} ignored{_hint(name, known)}")
    else:
        out.errors += [f"-p {rule}: {e}" for e in check_value(name, value)]


def check_value_against(defaults: Mapping[str, Any],
                        validate: Callable[[Mapping[str, Any]], list[str]]) -> Callable[[str, Any], list[str]]:
    """check_value for check_args from a full-set validator: `name`'s own problems when only it
    differs from the defaults."""
    def check(name: str, value: Any) -> list[str]:
        return [e for e in validate({**defaults, name: value}) if e.startswith(name)]
    return check
