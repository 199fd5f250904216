"""Atomic, weights_only-safe checkpoints.

Payload: {"format": "imkd-v1", "kind": "student" | "teacher", "config": IMKDConfig.to_dict(),
"model": state_dict, ...extra training state}. Everything must be plain Python types and
tensors so `torch.load(weights_only=True)` can read it (no pickled classes, no numpy).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "imkd-v1"
KINDS = ("student", "teacher")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt, truncated or of the wrong format."""


def _check_plain(x: Any, where: str) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"checkpoint key {where}[{k!r}] must be str/int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(x, _PLAIN):
        raise CheckpointError(f"checkpoint value {where} has type {type(x).__name__}, which weights_only "
                              f"loading rejects; store plain Python types and tensors only")


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` atomically: temp file in the same directory, fsync, os.replace.

    'format' defaults to imkd-v1; the payload is validated (kind/config/model present, only
    weights_only-loadable types) before anything is written. Returns the path.
    """
    path = Path(path)
    payload = {"format": FORMAT, **payload}
    _validate(payload, str(path))
    _check_plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint with torch.load(weights_only=True).

    Raises CheckpointError naming the file when it is missing, unreadable, corrupt/truncated
    or not an imkd-v1 payload.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/zipfile errors...
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not loadable with weights_only "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    _validate(payload, str(path))
    return payload
