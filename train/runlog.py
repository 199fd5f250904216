"""What a run writes about itself: the JSONL log (one record per step and per validation; on
resume, truncated to the checkpoint's step so it equals an uninterrupted run's) and the loss-curve
PNG drawn from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.atomic import atomic_path, atomic_write_text
from train.run_config import KD_TERMS

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"


class JsonlLog:
    """Append-only JSONL (rank 0); on resume, records past the checkpoint's step are dropped so the
    log of a resumed run equals that of an uninterrupted one."""

    def __init__(self, path: Path, truncate_after_step: int | None = None) -> None:
        self.path = path
        if truncate_after_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= truncate_after_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        elif truncate_after_step is None and path.exists():
            path.unlink()
        self._f = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(jsonable(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return jsonable(obj.item())
    return obj


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_curves(log_path: Path, png_path: Path, title: str = "") -> None:
    """Loss terms (raw + moving average), KD terms, learning rate and val NDS/mAP -> PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log_path) if log_path.exists() else []
    train = [r for r in recs if r.get("type") == "train"]
    val = [r for r in recs if r.get("type") == "val"]
    if not train:
        return
    steps = np.array([r["step"] for r in train])

    def series(key: str) -> np.ndarray | None:
        if not any(key in r for r in train):
            return None
        return np.array([r.get(key, np.nan) if r.get(key) is not None else np.nan for r in train], dtype=float)

    def smooth(y: np.ndarray) -> np.ndarray:
        k = max(1, min(50, len(y) // 20))
        if k == 1:
            return y
        c = np.convolve(np.nan_to_num(y), np.ones(k) / k, mode="valid")
        return np.concatenate([np.full(k - 1, np.nan), c])

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    for key in ("total", "det", "det_hm", "det_bbox", "det_depth"):
        y = series(key)
        if y is not None:
            line = ax.plot(steps, y, alpha=0.25, lw=0.8)[0]
            ax.plot(steps, smooth(y), color=line.get_color(), lw=1.5, label=key)
    ax.set_yscale("log")
    ax.set_title("detection loss")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    has_kd = False
    for key in KD_TERMS:
        y = series(key)
        if y is not None:
            has_kd = True
            line = ax.plot(steps, y, alpha=0.25, lw=0.8)[0]
            ax.plot(steps, smooth(y), color=line.get_color(), lw=1.5, label=key)
    ax.set_title("distillation terms (unweighted)" if has_kd else "distillation terms (none enabled)")
    if has_kd:
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    y = series("lr")
    if y is not None:
        ax.plot(steps, y)
    ax.set_title("learning rate")
    ax = axes[1, 1]
    if val:
        vs = [r["step"] for r in val]
        for key in ("NDS", "mAP"):
            ax.plot(vs, [r.get(key) for r in val], marker="o", label=key)
        ax.legend(fontsize=8)
    ax.set_title("validation (devkit)")
    for a in axes.flat:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
