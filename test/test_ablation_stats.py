"""The ablation's statistics on numbers whose answer is known: t intervals against the t table,
pairing over seeds, the scene bootstrap against the normal approximation, and claim marking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train import ablation_stats as st

T_975_DF2 = 4.302652729911275   # Student t, 97.5 % quantile, 2 degrees of freedom (table value)
T_975_DF4 = 2.7764451051977987  # ... 4 degrees of freedom


def test_t_interval_matches_the_table() -> None:
    mean, lo, hi = st.t_interval([1.0, 2.0, 3.0])   # mean 2, sd 1, n 3
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert mean == pytest.approx(2.0)
    assert lo == pytest.approx(2.0 - half) and hi == pytest.approx(2.0 + half)
    mean, lo, hi = st.t_interval([0.1, 0.3, 0.2, 0.4, 0.0])  # mean 0.2, sd sqrt(0.025)
    half = T_975_DF4 * math.sqrt(0.025) / math.sqrt(5)
    assert (lo, hi) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert st.t_interval([0.5]) == (0.5, None, None)      # one seed: no interval, never a claim
    assert st.t_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)   # no spread: a point


def test_paired_difference_cancels_what_the_seed_moves() -> None:
    # the seed moves both arms by +-0.1; the arm is better by 0.02 +- 0.001: paired, the interval is tight
    seed_effect = {0: -0.1, 1: 0.0, 2: 0.1}
    gain = {0: 0.019, 1: 0.020, 2: 0.021}
    base = {s: {"NDS": 0.4 + e} for s, e in seed_effect.items()}
    arm = {s: {"NDS": 0.4 + e + gain[s]} for s, e in seed_effect.items()}
    c = st.paired_comparison(arm, base, "NDS")
    half = T_975_DF2 * 0.001 / math.sqrt(3)
    assert c["diff"] == pytest.approx(0.02)
    assert c["ci95"] == [pytest.approx(0.02 - half), pytest.approx(0.02 + half)]
    assert c["n_seeds"] == 3 and st.excludes_zero(c["ci95"])
    # unpaired, the same numbers could not separate the arms: each arm's own interval is +-0.25
    means = st.arm_means([{"name": "a", "seed": s, **arm[s]} for s in arm], ["NDS"])
    lo, hi = means["a"]["NDS"]["ci95"]
    assert hi - lo > 0.4
    # only seeds both arms have are paired
    c2 = st.paired_comparison({**arm, 3: {"NDS": 9.0}}, base, "NDS")
    assert c2["n_seeds"] == 3 and c2["diff"] == pytest.approx(0.02)
    assert st.paired_comparison({5: {"NDS": 1.0}}, base, "NDS") is None


def test_scene_bootstrap() -> None:
    lo, hi = st.bootstrap_interval([0.03] * 12)
    assert lo == pytest.approx(0.03) and hi == pytest.approx(0.03)
    rng = np.random.default_rng(1)
    v = rng.normal(0.5, 1.0, 400)
    lo, hi = st.bootstrap_interval(v, n_boot=4000)
    se = v.std(ddof=1) / math.sqrt(v.size)   # normal approximation: mean +- 1.96 se
    assert lo == pytest.approx(v.mean() - 1.96 * se, abs=0.02)
    assert hi == pytest.approx(v.mean() + 1.96 * se, abs=0.02)
    assert st.bootstrap_interval([1.0]) == (None, None)
    # per-scene differences are averaged over seeds, then scenes are resampled
    base = {0: {"NDS": 0.3}, 1: {"NDS": 0.3}}
    arm = {0: {"NDS": 0.35}, 1: {"NDS": 0.33}}
    b_sc = {s: {f"s{k}": {"NDS": 0.3} for k in range(4)} for s in (0, 1)}
    a_sc = {s: {f"s{k}": {"NDS": 0.3 + 0.01 * (k + 1)} for k in range(4)} for s in (0, 1)}
    c = st.paired_comparison(arm, base, "NDS", a_sc, b_sc, n_boot=500)
    assert c["n_scenes"] == 4
    lo, hi = c["ci95_scene"]
    assert 0.01 <= lo <= 0.025 <= hi <= 0.04


def test_claims_only_where_the_interval_excludes_zero() -> None:
    assert st.excludes_zero([0.001, 0.02]) and st.excludes_zero([-0.03, -0.01])
    assert not st.excludes_zero([-0.01, 0.02])
    assert not st.excludes_zero([None, None]) and not st.excludes_zero(None)
