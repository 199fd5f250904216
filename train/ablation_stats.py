"""Statistics of the distillation ablation: paired differences with 95 % intervals.

Two intervals per (arm, baseline, metric):
- `ci95`: a Student-t interval of the mean paired difference over seeds (arm and baseline of one
  seed share initialisation and data order, so their difference cancels what the seed moves);
- `ci95_scene`: a percentile bootstrap over validation scenes of the mean per-scene difference
  (each scene's metrics from the devkit on that scene's samples, averaged over seeds), i.e. how
  much the verdict depends on which scenes happen to be in the validation set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as _st

# metrics compared; "better" is the sign of an improvement
HIGHER_BETTER = ("NDS", "mAP", "AP@0.5", "AP@1.0", "AP@2.0", "AP@4.0")
DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
# ego-distance bands of the AP-by-range metric (m); the devkit's class ranges cut at 30-50 m
RANGE_BANDS: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 35.0), (35.0, 50.0))


def range_key(band: tuple[float, float]) -> str:
    return f"mAP@{band[0]:g}-{band[1]:g}m"


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, lo, hi) of a Student-t interval of the mean; lo = hi = None with fewer than 2 values."""
    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], np.float64)
    if d.size == 0:
        return float("nan"), None, None
    mean = float(d.mean())
    if d.size < 2:
        return mean, None, None
    half = float(_st.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def bootstrap_interval(values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of `values` (one per scene), resampling scenes."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def paired_comparison(arm: Mapping[int, Mapping[str, float]], base: Mapping[int, Mapping[str, float]],
                      metric: str, arm_scenes: Mapping[int, Mapping[str, Mapping[str, float]]] | None = None,
                      base_scenes: Mapping[int, Mapping[str, Mapping[str, float]]] | None = None,
                      n_boot: int = 2000) -> dict | None:
    """{'metric', 'diff', 'ci95', 'n_seeds'[, 'ci95_scene', 'n_scenes']} of arm - baseline.

    arm/base: seed -> metrics; *_scenes: seed -> scene name -> metrics. Only seeds (and scenes)
    both sides have are paired; None when no seed pairs.
    """
    seeds = sorted(s for s in arm if s in base and arm[s].get(metric) is not None
                   and base[s].get(metric) is not None)
    if not seeds:
        return None
    mean, lo, hi = t_interval([arm[s][metric] - base[s][metric] for s in seeds])
    out: dict = {"metric": metric, "diff": mean, "ci95": [lo, hi], "n_seeds": len(seeds)}
    if arm_scenes and base_scenes:
        per_scene: dict[str, list[float]] = {}
        for s in seeds:
            a, b = arm_scenes.get(s) or {}, base_scenes.get(s) or {}
            for name in sorted(set(a) & set(b)):
                va, vb = a[name].get(metric), b[name].get(metric)
                if va is not None and vb is not None and np.isfinite(va) and np.isfinite(vb):
                    per_scene.setdefault(name, []).append(va - vb)
        if per_scene:
            lo_s, hi_s = bootstrap_interval([float(np.mean(v)) for v in per_scene.values()], n_boot=n_boot)
            out["ci95_scene"] = [lo_s, hi_s]
            out["n_scenes"] = len(per_scene)
    return out


def excludes_zero(ci: Sequence[float | None] | None) -> bool:
    """True when an interval lies entirely on one side of 0 (a claim may be made)."""
    return bool(ci) and ci[0] is not None and ci[1] is not None and (ci[0] > 0 or ci[1] < 0)


def arm_means(rows: Sequence[Mapping], metrics: Sequence[str]) -> dict[str, dict[str, dict]]:
    """arm -> metric -> {'mean', 'ci95', 'n'} (t interval over the arm's seeds)."""
    out: dict[str, dict[str, dict]] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        out[name] = {}
        for m in metrics:
            vals = [r[m] for r in mine if r.get(m) is not None]
            if vals:
                mean, lo, hi = t_interval(vals)
                out[name][m] = {"mean": mean, "ci95": [lo, hi], "n": len(vals)}
    return out
