"""Every inference backend and precision gives eager fp32's Detections (imkd_core.backends).

The shipped demo student, one Predictor per backend/precision, frames from the real nuScenes
subset (skipped where absent; one frame with a camera masked, so the graphs are not specialised
to the tracing frame's mask) and synthetic frames (always). Decoding at the node's default
score threshold and top-K. Tolerances, stated per precision:
- fp32 graphs (onnxruntime, torchscript): the same count, every box paired, centre/size/velocity
  within 1e-3 (m, m/s), yaw within 1e-3 rad, score within 1e-4;
- bf16 (autocast on CPU): scores within 0.02; detections scoring within 0.02 of the threshold
  (or of the top-K cut) may appear or vanish, every other one is paired within 1 m with the
  same label, size within 0.25 m.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imkd_core.backends import detection_parity, unsupported
from imkd_core.config import ConfigError
from imkd_core.frame import SensorFrame
from imkd_core.predict import Predictor
from imkd_core.weights import DEMO_CHECKPOINT
from test import datasets

pytest.importorskip("onnxruntime")

SCORE_THRESHOLD, MAX_DETECTIONS = 0.3, 100  # the node's defaults (checked below)
CASES = [("onnxruntime", "fp32"), ("torchscript", "fp32"), ("torch", "bf16")]
TOL = {"fp32": {"score_tol": 0.0, "max_centre_m": 1e-3, "max_size_m": 1e-3, "max_velocity_ms": 1e-3,
                "max_yaw_rad": 1e-3, "max_score": 1e-4},
       "bf16": {"score_tol": 0.02, "max_centre_m": 1.0, "max_size_m": 0.25, "max_score": 0.02}}


def _predictor(backend: str = "torch", precision: str = "fp32") -> Predictor:
    p = Predictor(checkpoint=DEMO_CHECKPOINT, device="cpu", backend=backend, precision=precision)
    p.config.model.score_threshold = SCORE_THRESHOLD
    p.config.model.max_detections = MAX_DETECTIONS
    return p


@pytest.fixture(scope="module")
def predictors() -> dict[tuple[str, str], Predictor]:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return {case: _predictor(*case) for case in [("torch", "fp32"), *CASES]}


def _frames(name: str) -> list[SensorFrame]:
    if name == "real":
        from imkd_core.data.nuscenes import NuScenesReader

        spec = datasets.get("real")
        reader = NuScenesReader(spec.root, spec.version, radar_sweeps=3, load_lidar=False, image_reduction=4)
        frames = [reader[i][0] for i in (0, 30, 60)]
        frames[1].camera_mask[2] = False
        return frames
    from imkd_core.data.synthetic.frames import synthetic_frame

    frames = [synthetic_frame(seed=s, with_lidar=False, n_radar_clutter=40 + 30 * s)[0] for s in (1, 2)]
    frames[1].camera_mask[4] = False
    return frames


def test_node_defaults_are_the_decoding_used_here() -> None:
    from imkd_ros.params import PARAM_SPECS

    assert PARAM_SPECS["score_threshold"].default == SCORE_THRESHOLD
    assert PARAM_SPECS["max_detections"].default == MAX_DETECTIONS
    assert PARAM_SPECS["backend"].default == "torch" and PARAM_SPECS["precision"].default == "fp32"


@pytest.mark.slow
@pytest.mark.parametrize("data", datasets.params("real", "synthetic"))
def test_backends_match_eager_fp32(predictors: dict, data: str) -> None:
    frames = _frames(data)
    ref = predictors[("torch", "fp32")]
    n_total = 0
    with np.errstate(all="raise"):
        for k, frame in enumerate(frames):
            want = ref.predict(frame)
            n_total += len(want)
            for backend, precision in CASES:
                got = predictors[(backend, precision)].predict(frame)
                tol = TOL[precision]
                c = detection_parity(want, got, SCORE_THRESHOLD, tol["score_tol"], max_detections=MAX_DETECTIONS)
                where = f"{data} frame {k} {backend} {precision}: {c}"
                assert c["count_ok"] and c["unpaired_firm"] == 0, where
                if precision == "fp32":
                    assert c["pairs"] == len(want) == len(got), where
                    np.testing.assert_array_equal(got.labels, want.labels, err_msg=where)
                for key, limit in tol.items():
                    if key != "score_tol":
                        assert c[key] <= limit, (key, where)
                assert got.stamp == want.stamp and got.token == want.token
    assert n_total > 0, "the demo model detected nothing: the comparison would be empty"


def test_graph_backends_take_degenerate_frames(predictors: dict) -> None:
    """No radar point at all and one camera left: the exported graphs take both (dynamic sizes)."""
    from imkd_core.data.synthetic.frames import synthetic_frame

    frame = synthetic_frame(seed=7, with_lidar=False)[0]
    frame.radar = frame.radar[:0]
    frame.camera_mask[1:] = False
    want = predictors[("torch", "fp32")].predict(frame)
    for case in (("onnxruntime", "fp32"), ("torchscript", "fp32")):
        p = predictors[case]
        got = p.predict(frame)
        c = detection_parity(want, got, SCORE_THRESHOLD, max_detections=MAX_DETECTIONS)
        assert c["count_ok"] and c["pairs"] == len(want) and c["max_centre_m"] <= 1e-3, (case, c)
        assert {"preprocess", "pool_indices", "graph", "decode", "total"} <= set(p.last_timing)


@pytest.mark.parametrize("backend,precision,device,message", [
    ("tensorrt", "fp32", "cpu", "backend must be one of"),
    ("torch", "int8", "cpu", "precision must be one of"),
    ("torch", "fp16", "cpu", "fp16 needs a CUDA device"),
    ("onnxruntime", "bf16", "cpu", "runs fp32 only"),
    ("torchscript", "fp16", "cpu", "runs fp32 only"),
])
def test_unsupported_choices_fail_with_one_clear_message(backend, precision, device, message, tmp_path) -> None:
    assert message in unsupported(backend, precision, torch.device(device))
    with pytest.raises(ConfigError, match=message):  # refused before any checkpoint is read
        Predictor(checkpoint=tmp_path / "absent.pt", device=device, backend=backend, precision=precision)
    assert unsupported("torch", "bf16", torch.device("cpu")) is None
    assert unsupported("onnxruntime", "fp32", torch.device("cpu")) is None


@pytest.mark.ros
def test_node_passes_backend_and_precision_to_the_predictor(tmp_path) -> None:
    """The node's backend/precision parameters reach the Predictor: a combination it cannot run
    stops the node at start with exit code 2 and one line naming the reason, no traceback."""
    from imkd_core.weights import DEMO_CHECKPOINT
    from imkd_ros.harness import NodeProcess
    from imkd_ros.params import default_params, validate_params

    errors = "\n".join(validate_params({**default_params(), "backend": "tensorrt", "precision": "int8"}))
    assert "backend" in errors and "precision" in errors
    with NodeProcess({"checkpoint": str(DEMO_CHECKPOINT), "device": "cpu", "backend": "onnxruntime",
                      "precision": "bf16"}, tmp_path / "node.log") as node:
        code = node.wait(timeout=120)
        out = node.output()
    assert code == 2, out
    assert "cannot start" in out and "onnxruntime runs fp32 only" in out and "Traceback" not in out, out
