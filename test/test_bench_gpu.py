"""train/bench_gpu.py, the prepared GPU check, dry-run on CPU at tiny sizes: every section runs and
the last line is the promised JSON (latency per backend/precision with stages, the node's model
time, training samples/s). On a CUDA machine the same script runs the paper config.
(Training runs the tiny config: bf16 autocast training of the micro config aborts inside the BEV
encoder's backward on this CPU build of torch, see docs/design.md.)"""

from __future__ import annotations

import json

import pytest

from test.train_support import micro_config_yaml
from train.bench_gpu import main


@pytest.mark.slow
def test_bench_gpu_dry_run_on_cpu(capsys, tmp_path_factory) -> None:
    pytest.importorskip("onnxruntime")
    micro = str(micro_config_yaml(tmp_path_factory))
    result = main(["--device", "cpu", "--config", micro, "--iters", "2", "--warmup", "0", "--node-frames", "2",
                   "--node-hw", "99", "176", "--train-config", "tiny", "--train-batch", "1", "--train-iters", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result
    assert result["device"] == "cpu" and result["skipped_sections"] == {}
    lat = result["latency"]
    assert set(lat["backends"]) == {"torch_fp32", "torch_bf16", "onnxruntime_fp32", "torchscript_fp32"}
    assert "fp16 needs a CUDA device" in lat["skipped"]["torch_fp16"]
    assert "target_met" not in lat  # no fp16 on CPU: the 25 ms target is not judged
    for name, row in lat["backends"].items():
        assert row["ms_p50"] > 0 and row["ms_p95"] >= row["ms_p50"] and row["whole_model_ms"] > row["ms_p50"], name
        assert "decode" in row["stage_ms"], name
    assert {"backbone", "bev_pool", "head"} <= set(lat["backends"]["torch_fp32"]["stage_ms"])
    assert {"pool_indices", "graph"} <= set(lat["backends"]["onnxruntime_fp32"]["stage_ms"])
    runs = result["node"]["runs"]
    assert set(runs) == {"demo_checkpoint/torch_fp32", "demo_checkpoint/torch_bf16", "micro/torch_fp32",
                         "micro/torch_bf16"}
    for r in runs.values():
        assert r["ms_p50"] > 0 and "preprocess" in r["stage_ms"] and r["cache_hits"] >= 2
    modes = result["train"]["modes"]
    assert set(modes) == {"fp32", "bf16"} and modes["fp32"]["speedup"] == 1.0
    assert all(m["samples_per_s"] > 0 for m in modes.values())
    assert any(line.startswith("[latency]") for line in out) and any(line.startswith("[train]") for line in out)


def test_bench_gpu_without_cuda_says_so_in_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main([])
