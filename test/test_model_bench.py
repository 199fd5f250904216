"""train/bench_model.py runs and ends with the promised JSON line."""

from __future__ import annotations

import json

from train.bench_model import main


def test_bench_model_tiny_smoke(capsys) -> None:
    result = main(["--config", "tiny", "--device", "cpu", "--iters", "1", "--warmup", "0", "--threads", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed == result
    required = {"config", "device", "total_ms", "pool_cached_ms", "pool_uncached_ms", "pool_speedup", "params_m"}
    assert required <= set(parsed)
    assert parsed["config"] == "tiny" and parsed["device"] == "cpu" and parsed["pool_max_abs_diff"] < 1e-5
    stages = {"backbone", "depth", "bev_pool", "radar", "fusion", "bev_encoder", "head", "decode"}
    assert set(parsed["stage_ms"]) == stages
