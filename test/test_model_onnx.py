"""The tiny Student exports to ONNX and onnxruntime reproduces eager PyTorch."""

from __future__ import annotations

import pytest
import torch

from imkd_core.config import tiny
from imkd_core.data.synthetic.frames import synthetic_batch
from imkd_core.models import Student
from imkd_core.models.export import export_onnx, graph_inputs, output_names

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_tiny_student_onnx_matches_eager(tmp_path) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    cfg = tiny()
    torch.manual_seed(0)
    student = Student(cfg).eval()
    path = export_onnx(student, synthetic_batch(cfg, 1, with_lidar=False, with_gt=False), tmp_path / "s.onnx")
    assert student.training is False
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == output_names(student)
    # another frame with a different number of radar points
    batch = synthetic_batch(cfg, 1, seed=9, with_lidar=False, with_gt=False, n_radar_clutter=41)
    args = graph_inputs(student, batch)
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        out = student(batch)
    ref = [t for h in out["heads"] for t in (h["hm"], h["box"])] + [out["I_hat"]]
    for name, g, r in zip(output_names(student), got, ref):
        torch.testing.assert_close(torch.from_numpy(g), r, atol=1e-4, rtol=1e-4, msg=name)
