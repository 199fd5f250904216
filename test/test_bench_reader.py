"""train/bench_reader.py reads every sample in both decode modes and ends with the promised JSON line."""

from __future__ import annotations

import json

from test import datasets
from train.bench_reader import main


def test_bench_reader_smoke(capsys) -> None:
    ds = datasets.get("synthetic")
    result = main(["--dataroot", str(ds.root), "--version", ds.version, "--repeats", "1", "--no-lidar"])
    parsed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert parsed == result
    assert parsed["frames"] == ds.n_frames and parsed["source_image_hw"] == list(ds.image_hw)
    # 198x352 source, 128x352 model input: no reduction possible, one mode only
    assert parsed["reduction"] == 1 and set(parsed["modes"]) == {"1/1"}
    assert parsed["full_frames_per_s"] > 0 and parsed["reduced_speedup"] == 1.0
