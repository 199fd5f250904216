"""train/bench_model.py runs and ends with the promised JSON line, backends side by side."""

from __future__ import annotations

import json

import pytest

from train.bench_model import main

pytestmark = pytest.mark.slow  # training or benchmark runs: in `make test`, not in `make test-fast`


def test_bench_model_tiny_smoke(capsys) -> None:
    result = main(["--config", "tiny", "--device", "cpu", "--iters", "1", "--warmup", "0", "--threads", "2",
                   "--backends", "none"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed == result
    required = {"config", "device", "total_ms", "pool_cached_ms", "pool_uncached_ms", "pool_speedup", "params_m"}
    assert required <= set(parsed)
    assert parsed["config"] == "tiny" and parsed["device"] == "cpu" and parsed["pool_max_abs_diff"] < 1e-5
    stages = {"backbone", "depth", "bev_pool", "radar", "fusion", "bev_encoder", "head", "decode"}
    assert set(parsed["stage_ms"]) == stages


def test_bench_model_compares_backends_side_by_side(capsys) -> None:
    result = main(["--config", "tiny", "--device", "cpu", "--iters", "2", "--warmup", "0", "--threads", "2",
                   "--backends", "torch_fp32,torch_bf16,onnxruntime_fp32,torchscript_fp32"])
    parsed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert parsed["backends"] == result["backends"]
    table = parsed["backends"]
    assert list(table) == ["torch_fp32", "torch_bf16", "onnxruntime_fp32", "torchscript_fp32"]
    assert table["torch_fp32"]["ratio"] == 1.0 and table["torch_fp32"]["max_abs_diff"] == 0.0
    for name, row in table.items():
        assert {"ms_p50", "ms_p95", "ratio", "decode_ms_p50", "ratio_with_decode"} <= set(row), name
        assert 0 < row["ms_p50"] <= row["ms_p95"], name
        assert abs(row["ratio"] - row["ms_p50"] / table["torch_fp32"]["ms_p50"]) < 2e-3, name
    for name in ("onnxruntime_fp32", "torchscript_fp32"):  # float32 graphs: the same outputs
        assert table[name]["max_abs_diff"] < 1e-4
        d = table[name]["detections"]
        assert d["count_ok"] and d["pairs"] == d["n_ref"] == d["n_got"] > 0
    assert 1e-4 < table["torch_bf16"]["max_abs_diff"] < 0.1  # really ran in bfloat16, and close


def test_bench_model_rejects_an_unavailable_backend() -> None:
    import pytest

    with pytest.raises(SystemExit, match="torch_fp16 not available on cpu"):
        main(["--config", "tiny", "--device", "cpu", "--iters", "1", "--warmup", "0", "--backends", "torch_fp16"])
