"""The datasets the data-pipeline tests run on: the real nuScenes subset and a small synthetic one.

Tests parametrise over `params("real", "synthetic")` and call `get(name)` inside the test, so a
dataset is only built (synthetic) or looked up (real) when a test that needs it runs:

- real: <repo>/../shared/nuscenes (or $IMKD_NUSCENES_ROOT), v1.0-mini, 2 scenes / 81 keyframes,
  sweep files absent; skipped where absent. Never modified.
- synthetic: imkd_core.data.synthetic with SYNTH_CONFIG, generated once into the system temp
  folder under a name that hashes the generator's source and the config (so a changed generator
  regenerates), written to a private folder and renamed into place (safe for parallel sessions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("IMKD_NUSCENES_ROOT", REPO.parent / "shared" / "nuscenes"))
REAL_VERSION = "v1.0-mini"
HAS_REAL = (REAL_ROOT / REAL_VERSION).is_dir()
# Small but complete: sweeps on, both splits, all classes (a few seconds to generate).
SYNTH_CONFIG = {"scenes": 2, "samples_per_scene": 5, "seed": 4, "image_size": (352, 198), "val_fraction": 0.5}


@dataclass(frozen=True)
class DatasetSpec:
    """What a generic test needs to know about a dataset."""

    name: str
    root: Path
    version: str
    n_frames: int
    image_hw: tuple[int, int]
    eval_scenes: tuple[str, ...]   # scenes of the GT-as-predictions check
    has_sweeps: bool


def real() -> DatasetSpec:
    if not HAS_REAL:
        pytest.skip(f"real nuScenes subset absent at {REAL_ROOT}")
    return DatasetSpec("real", REAL_ROOT, REAL_VERSION, 81, (900, 1600), ("scene-0916",), False)


def synthetic_root(config: dict) -> Path:
    """The dataset imkd_core.data.synthetic writes for `config`, generated once per generator source
    and config into the system temp folder (private folder, renamed into place)."""
    from imkd_core.data import synthetic as synth

    cfg = synth.SyntheticConfig(**config)
    sources = b"".join(p.read_bytes() for p in sorted(Path(synth.__file__).parent.glob("*.py")))
    key = hashlib.sha256(sources + json.dumps(config, sort_keys=True).encode())
    root = Path(tempfile.gettempdir()) / f"imkd-test-synth-{key.hexdigest()[:16]}"
    if not (root / ".complete").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        try:
            synth.generate(tmp, cfg)
            (tmp / ".complete").write_text("ok\n")
            try:
                os.rename(tmp, root)
            except OSError:  # another test process finished first, or a stale incomplete folder
                if not (root / ".complete").is_file():
                    shutil.rmtree(root, ignore_errors=True)
                    os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def synthetic() -> DatasetSpec:
    from imkd_core.data import synthetic as synth

    cfg = synth.SyntheticConfig(**SYNTH_CONFIG)
    root = synthetic_root(SYNTH_CONFIG)
    n_val = synth.n_val_scenes(cfg)
    val = tuple(synth.scene_name(cfg, i) for i in range(cfg.scenes - n_val, cfg.scenes))
    w, h = cfg.image_size
    return DatasetSpec("synthetic", root, cfg.version, cfg.scenes * cfg.samples_per_scene, (h, w), val, True)


_BUILDERS = {"real": real, "synthetic": synthetic}


def get(name: str) -> DatasetSpec:
    """The dataset `name` ('real' or 'synthetic'), built on first use; skips when unavailable."""
    return _BUILDERS[name]()


def params(*names: str) -> list:
    """pytest params for the named datasets (real ones carry the `nuscenes` marker)."""
    out = []
    for name in names:
        marks = [pytest.mark.nuscenes] if name == "real" else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out
