#!/usr/bin/env python3
"""Export the IMKD student to TorchScript and ONNX, with a parity check against PyTorch.

    python -m train.export --checkpoint runs/student/best.pt --out export/ \
        [--dataroot /tmp/synth_default --version v1.0-synth --scene synth-val-0008 --index 0] \
        [--opset 18] [--no-onnx] [--no-torchscript]
    python -m train.export --config tiny --out export/          # random weights (pipeline check)

What is exported: the model library's inference graph `imkd_core.models.export.StudentGraph`
(the Student from preprocessed tensors to the raw head outputs: per task group heatmap logits
`hm_<t>` and box codes `box_<t>`, plus `I_hat`). Not exported, on purpose:
- preprocessing (JPEG decode, resize/crop, radar/TF handling) stays in numpy/OpenCV
  (`imkd_core.preprocess.frame_to_inputs` + `collate`);
- decoding (top-K, score threshold, circle NMS) stays in torch (`decode_outputs`, the same
  `CenterHead.decode` the Predictor runs);
- the lift-splat geometry: the BEV-pool indices of a calibration (the Student's cached
  `LiftSplat.indices`, a function of intrinsics/extrinsics/camera mask only) are computed in
  torch once per calibration and passed as three int64 INPUTS, so the exported graph is valid
  for any calibration and needs no cache. (Tracing with the cache populated would bake one
  calibration's indices into the graph as constants.)
Variable sizes are dynamic axes: radar points (`radar`, `radar_mask` axis 1) and the number of
frustum cells inside the grid (the pool index vectors), so a camera mask (a missing camera
drops its frustum cells from the indices and its radar projections in the graph) is an input
too. The batch is fixed at 1. Both files carry the model config (ONNX metadata_props /
TorchScript extra file `imkd.json`: config, input and output names), so the decoding can be
rebuilt from the file alone; both are written atomically.
This is the graph the Predictor's `onnxruntime` and `torchscript` backends (imkd_core.backends)
build in memory at start-up from the loaded checkpoint.

Before anything is exported, the graph (explicit pool indices) is checked against
Student.forward (cached pool indices) on every parity frame: equal up to 1e-5 (the CSR and the
scatter_add pool sum in different orders; the tiny config happens to be bit-exact, the paper
config is not).

Parity: the exported models run on a real frame (from --dataroot, else a synthetic frame) and a
second, different frame (other radar count/calibration: proves the graph is not specialised
to the tracing inputs), against the PyTorch Student; max abs diff of every output is printed,
and decoded detections are compared. The LAST line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imkd_core.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from imkd_core.checkpoint import CheckpointError, load_checkpoint, load_weights
from imkd_core.config import IMKDConfig, get_config
from imkd_core.errors import cli_main, writable_dir
from imkd_core.models import export as model_export
from imkd_core.models.detector import Student
from imkd_core.models.export import INPUTS, StudentGraph, graph_inputs, output_names
from imkd_core.preprocess import collate, frame_to_inputs

INPUT_NAMES = tuple(INPUTS)
GRAPH_TOL = 1e-5  # StudentGraph vs Student.forward: float32 summation order of the BEV pool only


def export_inputs(student: Student, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The exported graph's inputs for a collated batch (pool indices from the Student's cache)."""
    return tuple(graph_inputs(student, batch))


def decode_outputs(student: Student, outputs: list | tuple) -> list:
    """Exported head outputs -> per sample (boxes, scores, labels), exactly Student.decode."""
    outs = [o if isinstance(o, torch.Tensor) else torch.from_numpy(np.asarray(o)) for o in outputs]
    n = len(student.head.tasks)
    heads = [{"hm": outs[2 * t], "box": outs[2 * t + 1]} for t in range(n)]
    return student.decode({"heads": heads})


# ---------------------------------------------------------------------------- inputs
def load_student(checkpoint: str | None, config: str | None) -> Student:
    if checkpoint:
        payload = load_checkpoint(checkpoint)
        if payload["kind"] != "student":
            raise CheckpointError(f"{checkpoint}: export needs a student checkpoint, got {payload['kind']!r}")
        cfg = IMKDConfig.from_dict(payload["config"]) if config is None else get_config(config)
        model = Student(cfg, load_pretrained=False)
        load_weights(model, payload["model"], checkpoint, cfg.name)
    else:
        torch.manual_seed(0)
        model = Student(get_config(config or "tiny"), load_pretrained=False)
    return model.eval()


def real_frames(args: argparse.Namespace, cfg: IMKDConfig, n: int = 2) -> tuple[list, str]:
    """n frames: from the dataroot (the scene's frames index, index+1, ...) or synthetic."""
    if args.dataroot:
        from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
        from imkd_core.preprocess import jpeg_reduction

        nusc = load_nuscenes(args.dataroot, args.version)
        hw = next(((int(sd["height"]), int(sd["width"])) for sd in nusc.sample_data
                   if sd.get("channel") == "CAM_FRONT" and sd.get("height")), (900, 1600))
        reader = NuScenesReader(args.dataroot, args.version, scenes=args.scene or "all", load_lidar=False,
                                radar_sweeps=cfg.data.radar_sweeps,
                                image_reduction=jpeg_reduction(hw, cfg.data.image_size), nusc=nusc)
        idx = [min(args.index + k * 3, len(reader) - 1) for k in range(n)]
        tokens = [reader.sample_tokens[i] for i in idx]
        return [reader[i][0] for i in idx], f"{args.dataroot} {args.version} samples {tokens}"
    from imkd_core.data.synthetic.frames import synthetic_frame

    # the second frame has another source image size, a missing camera (so another set of pool
    # indices) and another radar count
    frames = []
    for k in range(n):
        frame = synthetic_frame(seed=args.index + 17 * k, with_lidar=False, n_radar_clutter=100 + 23 * k,
                                src_hw=(450, 800) if k % 2 == 0 else (396, 704))[0]
        if k % 2 == 1:
            frame.camera_mask[3] = False
        frames.append(frame)
    seeds = [args.index + 17 * k for k in range(n)]
    return frames, f"synthetic frames (imkd_core.data.synthetic.frames, seeds {seeds})"


def frame_batch(frame: Any, cfg: IMKDConfig) -> dict[str, torch.Tensor]:
    inputs = frame_to_inputs(frame, cfg.data.image_size)
    inputs.pop("lidar", None)
    return collate([inputs])


# ---------------------------------------------------------------------------- export
def export_metadata(student: Student) -> dict[str, str]:
    """What a deployment needs beside the graph: the config (grid, classes, decoding) and the I/O names."""
    return {"imkd_config": json.dumps(student.cfg.to_dict()), "imkd_inputs": json.dumps(list(INPUT_NAMES)),
            "imkd_outputs": json.dumps(output_names(student)),
            "imkd_pool_indices": "pool_*_idx = imkd_core.models.lift_splat.LiftSplat.indices(intrinsics, cam_to_ego, "
                                 "camera_mask) of the frame's calibration"}


def export_torchscript(graph: StudentGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """Trace, freeze and save (atomically, the metadata as extra file imkd.json)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python constants (shapes are fixed per config)
        traced = torch.jit.trace(graph, example, check_trace=False, strict=False)
        traced = torch.jit.freeze(traced.eval())
        with atomic_path(path) as tmp:  # (TorchScript is deprecated upstream in favour of torch.export)
            torch.jit.save(traced, str(tmp), _extra_files={"imkd.json": json.dumps(export_metadata(graph.student))})


def export_onnx(student: Student, batch: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """`imkd_core.models.export.onnx_bytes` (TorchScript-based exporter, dynamo=False: no onnxscript
    dependency; dynamic radar count and pool-index length) + metadata_props, written atomically."""
    import onnx

    with torch.no_grad():
        model = onnx.load_from_string(model_export.onnx_bytes(student, batch, opset=opset))
    for k, v in export_metadata(student).items():
        model.metadata_props.add(key=k, value=v)
    atomic_write_bytes(path, model.SerializeToString())


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max() for x, y in zip(a, b)))


def _det_diff(student: Student, ref: list[np.ndarray], other: list[np.ndarray]) -> dict[str, Any]:
    (b0, s0, l0), = decode_outputs(student, ref)
    (b1, s1, l1), = decode_outputs(student, other)
    same = len(b0) == len(b1) and bool(torch.equal(l0, l1))
    out = {"n_ref": int(len(b0)), "n_export": int(len(b1)), "same_labels": same}
    if same and len(b0):
        out["max_box_diff"] = float((b0 - b1).abs().max())
        out["max_score_diff"] = float((s0 - s1).abs().max())
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_grad_enabled(False)
    student = load_student(args.checkpoint, args.config)
    cfg = student.cfg
    graph = StudentGraph(student, batch_size=1).eval()
    names_out = output_names(student)
    frames, source = real_frames(args, cfg)
    batches = [frame_batch(f, cfg) for f in frames]
    examples = [export_inputs(student, b) for b in batches]
    # reference: the Student's own forward (the Predictor's path, cached pool indices)...
    refs = []
    for b in batches:
        out = student(b)
        refs.append([t.numpy() for h in out["heads"] for t in (h["hm"], h["box"])] + [out["I_hat"].numpy()])
    # ...which the graph, with explicit pool indices, equals up to the summation order of the pool
    # (Student.forward pools by a CSR product on CPU, the graph by scatter_add)
    graph_diffs = []
    for ex, ref in zip(examples, refs):
        got = [t.numpy() for t in graph(*ex)]
        graph_diffs.append(_max_diff(ref, got) if len(got) == len(ref) else float("inf"))
        if graph_diffs[-1] > GRAPH_TOL:
            raise RuntimeError(f"the export graph (explicit pool indices) differs from Student.forward by "
                               f"{graph_diffs[-1]:.3e}: update imkd_core.models.export.StudentGraph")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"source": source, "config": cfg.name, "checkpoint": args.checkpoint,
                              "inputs": list(INPUT_NAMES), "outputs": names_out,
                              "graph_vs_forward_max_abs_diff": max(graph_diffs),
                              "radar_points": [int(e[4].shape[1]) for e in examples],
                              "camera_masks": [e[3][0].int().tolist() for e in examples],
                              "frustum_cells": [int(e[6].shape[0]) for e in examples]}
    if not args.no_torchscript:
        path = out_dir / "student_torchscript.pt"
        t0 = time.time()
        export_torchscript(graph, examples[0], path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ts = torch.jit.load(str(path))
        outs = [[t.numpy() for t in ts(*ex)] for ex in examples]
        diffs = [_max_diff(ref, got) for ref, got in zip(refs, outs)]
        report["torchscript"] = {"path": str(path), "bytes": path.stat().st_size, "max_abs_diff": max(diffs),
                                 "max_abs_diff_per_frame": diffs, "seconds": round(time.time() - t0, 2),
                                 "detections": _det_diff(student, refs[0], outs[0])}
        print(f"TorchScript {path}: max abs diff vs PyTorch {max(diffs):.3e} (per frame {diffs})")
    if not args.no_onnx:
        import onnx
        import onnxruntime as ort

        path = out_dir / "student.onnx"
        t0 = time.time()
        export_onnx(student, batches[0], path, args.opset)
        onnx.checker.check_model(str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        outs = [sess.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, ex) if n in names}) for ex in examples]
        diffs = [_max_diff(ref, got) for ref, got in zip(refs, outs)]
        report["onnx"] = {"path": str(path), "bytes": path.stat().st_size, "opset": args.opset,
                          "onnxruntime": ort.__version__, "max_abs_diff": max(diffs), "max_abs_diff_per_frame": diffs,
                          "seconds": round(time.time() - t0, 2), "graph_inputs": names,
                          "detections": _det_diff(student, refs[0], outs[0])}
        print(f"ONNX (opset {args.opset}) {path}: max abs diff vs PyTorch {max(diffs):.3e} (per frame {diffs}) "
              f"via onnxruntime {ort.__version__}")
    atomic_write_json(out_dir / "export.json", report, indent=1)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="student checkpoint (default: random weights of --config)")
    p.add_argument("--config", default=None, help="config preset/YAML (default: the checkpoint's, else tiny)")
    p.add_argument("--out", default="export", help="output folder")
    p.add_argument("--dataroot", help="take the parity frames from this nuScenes-format dataroot")
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--scene", default=None, help="scene name/pattern of the parity frames (default: all)")
    p.add_argument("--index", type=int, default=0, help="first parity frame (sample index or synthetic seed)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18: ScatterElements max/add reductions)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-torchscript", action="store_true")
    p.add_argument("--tol", type=float, default=1e-4, help="exit non-zero when a max abs diff exceeds this")
    args = p.parse_args(argv)
    if args.opset < 18:
        p.error("--opset must be >= 18 (ScatterElements with reduction='max' is opset 18)")
    return args


@cli_main(prog="export.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; a bad checkpoint, config or --out is one line on stderr and exit status 2."""
    args = parse_args(argv)
    writable_dir(args.out)
    report = run(args)
    worst = max([report[k]["max_abs_diff"] for k in ("onnx", "torchscript") if k in report] + [0.0])
    report["ok"] = worst <= args.tol
    print(json.dumps(report))
    if not report["ok"]:
        raise SystemExit(f"parity check failed: max abs diff {worst:.3e} > {args.tol:g}")
    return report


if __name__ == "__main__":
    main()
