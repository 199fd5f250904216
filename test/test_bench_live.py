"""train/bench_live.py runs its modes on a small synthetic scene and ends with the promised JSON
line (keys of every mode), so the benchmark cannot rot. Its numbers are not asserted."""

from __future__ import annotations

import json

import pytest

from train.bench_live import main

pytestmark = [pytest.mark.ros, pytest.mark.slow]

KEYS = {"frames_expected", "frames_published", "frames_skipped_newest_wins", "frames_dropped", "resets",
        "tf_received", "tf_published", "camera_slots_masked", "model_ms_node_p50", "model_ms_alone_p50",
        "model_ratio", "latency_ms_p50", "latency_ms_p95", "input_lag_ms_p95"}


def test_bench_live_smoke(capsys) -> None:
    assert main(["--dataroot", "", "--modes", "clock,burst_12hz", "--bag-seconds", "1.5", "--burst-seconds", "1",
                 "--synthetic-samples", "4", "--alone-frames", "2"]) == 0
    parsed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(parsed) == {"synthetic_clock", "burst_12hz"}
    for mode, res in parsed.items():
        assert KEYS <= set(res), (mode, sorted(KEYS - set(res)))
        assert res["frames_expected"] > 0 and res["tf_published"] > 0
