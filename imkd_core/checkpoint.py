"""Atomic, weights_only-safe checkpoints.

Payload: {"format": "imkd-v1", "kind": "student" | "teacher", "config": IMKDConfig.to_dict(),
"model": state_dict, ...extra training state}. Everything must be plain Python types and
tensors so `torch.load(weights_only=True)` can read it (no pickled classes, no numpy). Loading
verifies the zip CRCs first: torch.load does not, so a flipped byte in tensor data is an error.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from imkd_core.atomic import atomic_path
from imkd_core.errors import UserError

FORMAT = "imkd-v1"
KINDS = ("student", "teacher")
# Exact types (not subclasses: torch.__version__ is a str subclass, numpy's float64 a float
# subclass, a custom tensor subclass a Tensor, and weights_only loading rejects them all).
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.nn.Parameter, torch.dtype, torch.Size)
_KEYS = (str, int, bool)
_MAPPINGS = (dict, OrderedDict)
_SEQUENCES = (list, tuple)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, corrupt, truncated, of the wrong format or holds
    non-finite weights."""


def _type_desc(x: Any) -> str:
    """'float64 (a subclass of float)' for subclasses of the plain types, else the type's name."""
    t = type(x)
    base = next((b for b in _PLAIN + _MAPPINGS + _SEQUENCES if isinstance(x, b) and t is not b), None)
    name = t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return f"{name} (a subclass of {base.__name__})" if base is not None else name


def _check_plain(x: Any, where: str) -> None:
    """Raise CheckpointError naming the key path of the first value weights_only loading rejects.

    Types are compared exactly: subclasses of the plain types pickle as their own class."""
    t = type(x)
    if t in _MAPPINGS:
        for k, v in x.items():
            if type(k) not in _KEYS:
                raise CheckpointError(f"checkpoint key {where}[{k!r}] must be exactly str/int/bool, "
                                      f"got {_type_desc(k)}")
            _check_plain(v, f"{where}[{k!r}]")
    elif t in _SEQUENCES:
        for i, v in enumerate(x):
            _check_plain(v, f"{where}[{i}]")
    elif t not in _PLAIN:
        raise CheckpointError(f"checkpoint value {where} has type {_type_desc(x)}, which weights_only "
                              f"loading rejects; store exactly the plain Python types and tensors "
                              f"(e.g. str(torch.__version__), float(numpy_scalar))")


def _validate(payload: Any, source: str) -> None:
    if not isinstance(payload, dict):
        raise CheckpointError(f"{source}: not an IMKD checkpoint (top level is {type(payload).__name__}, not a dict)")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an IMKD checkpoint (format {payload.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if payload.get("kind") not in KINDS:
        raise CheckpointError(f"{source}: kind must be one of {KINDS}, got {payload.get('kind')!r}")
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{source}: 'config' must be a dict (IMKDConfig.to_dict())")
    if not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{source}: 'model' must be a state dict")


def _tensors(x: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(key path, tensor) of every tensor in a nested payload, in insertion order."""
    if isinstance(x, torch.Tensor):
        yield where, x
    elif isinstance(x, _MAPPINGS):
        for k, v in x.items():
            yield from _tensors(v, f"{where}[{k!r}]")
    elif isinstance(x, _SEQUENCES):
        for i, v in enumerate(x):
            yield from _tensors(v, f"{where}[{i}]")


def check_finite(payload: dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming the first floating-point tensor (weights first, then the
    training state) that holds NaN or Inf: such a model loads but detects nothing, and a resumed
    run would only propagate the NaNs."""
    parts = [("model", payload.get("model"))] + [(k, v) for k, v in payload.items() if k != "model"]
    for key, value in parts:
        for where, t in _tensors(value, key):
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
                raise CheckpointError(f"{source}: tensor {where} (shape {list(t.shape)}) holds {n_nan} NaN and "
                                      f"{n_inf} Inf of {t.numel()} values; refusing non-finite weights")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` atomically: temp file in the same directory, fsync, os.replace.

    'format' defaults to imkd-v1; the payload is validated (kind/config/model present, only
    weights_only-loadable types) before anything is written. Returns the path.
    """
    path = Path(path)
    payload = {"format": FORMAT, **payload}
    _validate(payload, str(path))
    _check_plain(payload, "payload")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def verify_archive(path: str | Path) -> None:
    """Check the CRC-32 of every record of a torch zip checkpoint (one read of the file: ~10 ms for
    5 MB on the dev VM).

    torch.load does not verify them, so flipped bytes inside tensor data would load silently as
    wrong weights; this turns them, and an archive that is not a readable zip, into a
    CheckpointError naming the file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as e:  # BadZipFile, OSError, EOFError, ValueError, NotImplementedError, ...
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a torch archive "
                              f"({type(e).__name__}: {e})") from e
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad!r} fails its CRC-32 check")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify the archive's CRCs (verify_archive), then read and validate a checkpoint with
    torch.load(weights_only=True).

    Raises CheckpointError naming the file when it is missing, unreadable, corrupt (also a
    flipped byte inside tensor data), truncated, not an imkd-v1 payload, or when a tensor holds
    NaN/Inf (check_finite: the node and every tool refuse such weights here).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    verify_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/zipfile errors...
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not loadable with weights_only "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    _validate(payload, str(path))
    check_finite(payload, str(path))
    return payload


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, what: str = "") -> None:
    """`model.load_state_dict(state)`, or one CheckpointError line saying how the weights of
    `source` do not fit the model built from `what` (a config name): counts and a first example
    of the missing, unexpected and differently shaped tensors, instead of torch's multi-line list."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shaped:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shaped)} of another shape (e.g. {shaped[0]}: {list(state[shaped[0]].shape)} in the file, "
                 f"{list(own[shaped[0]].shape)} in the model)" if shaped else ""]
        raise CheckpointError(f"{source}: weights do not fit the model{f' of config {what!r}' if what else ''}: "
                              + ", ".join(p for p in parts if p))
    model.load_state_dict(state)
