"""`--device` of the tools: 'auto', 'cpu', 'cuda' or 'cuda:N', checked against this machine.

A device that does not exist here ('tpu', 'cuda' without CUDA, 'cuda:3' on a 1-GPU machine) is a
DeviceError (a UserError: one line, exit 2) instead of a silent fall-back to the CPU or a
traceback from deep inside torch.
"""

from __future__ import annotations

import re

import torch

from imkd_core.errors import UserError

CHOICES = ("auto", "cpu", "cuda", "cuda:N")


class DeviceError(UserError, ValueError):
    """A requested device that is unknown or not available on this machine."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu'; 'cuda' / 'cuda:N' only where that GPU exists."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise DeviceError(f"--device {spec}: unknown device; use one of {', '.join(CHOICES)}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index) if m.group(1) is not None else torch.device("cuda")
