#!/usr/bin/env python3
"""Reader throughput: nuScenes samples -> SensorFrame (+ GroundTruth) per second, image decode
included, at full JPEG scale and at the DCT reduction the model input allows, side by side.

    python -m train.bench_reader [--dataroot ../shared/nuscenes --version v1.0-mini] [--config tiny]

Without the real subset it generates a small synthetic dataset. Every mode reads the same
samples (one warm-up pass first, so the devkit tables and the page cache are warm for all);
LiDAR is read as for training (`--no-lidar`: as for inference). Prints a table and, as its
LAST line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from imkd_core.config import get_config
from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
from imkd_core.errors import cli_main
from imkd_core.preprocess import jpeg_reduction

SHARED = Path(__file__).resolve().parents[2] / "shared" / "nuscenes"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=str(SHARED) if SHARED.is_dir() else None,
                   help="nuScenes dataroot (default: ../shared/nuscenes when present, else synthetic)")
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--scenes", nargs="+", default=["all"])
    p.add_argument("--config", default="tiny", help="model config whose input size sets the JPEG reduction")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per mode (best pass is reported)")
    p.add_argument("--no-lidar", action="store_true", help="skip LiDAR (inference-time reading)")
    return p.parse_args(argv)


def time_pass(reader: NuScenesReader, desc: str) -> float:
    """Seconds to read every sample once."""
    t0 = time.perf_counter()
    for i in tqdm(range(len(reader)), desc=desc, unit="frame", leave=False):
        reader[i]
    return time.perf_counter() - t0


@cli_main(prog="bench_reader.py")
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tmp = None
    if args.dataroot is None:
        from imkd_core.data.synthetic import SyntheticConfig, generate

        tmp = tempfile.TemporaryDirectory(prefix="bench_reader_")
        args.dataroot, args.version = str(Path(tmp.name) / "data"), "v1.0-synth"
        generate(args.dataroot, SyntheticConfig(scenes=1, samples_per_scene=10, seed=0, sweeps=False))
    cfg = get_config(args.config)
    nusc = load_nuscenes(args.dataroot, args.version)
    def reader(reduction: int) -> NuScenesReader:
        return NuScenesReader(args.dataroot, args.version, args.scenes, nusc=nusc, radar_sweeps=cfg.data.radar_sweeps,
                              lidar_sweeps=cfg.data.lidar_sweeps, load_lidar=not args.no_lidar,
                              image_reduction=reduction)

    full_reader = reader(1)
    first = nusc.get("sample", full_reader.sample_tokens[0])
    cam = nusc.get("sample_data", first["data"]["CAM_FRONT"])
    src_hw = (int(cam["height"]), int(cam["width"]))  # from the table: nothing decoded to learn it
    reduced = jpeg_reduction(src_hw, tuple(cfg.data.image_size))
    readers = {"1/1": full_reader, **({f"1/{reduced}": reader(reduced)} if reduced > 1 else {})}
    n_frames = len(full_reader)
    time_pass(full_reader, "warm-up")
    missing_per_pass = full_reader.missing_files  # the counter grows with every pass
    best = {name: min(time_pass(r, name) for _ in range(max(1, args.repeats))) for name, r in readers.items()}
    rows = {name: {"seconds": round(s, 3), "frames_per_s": round(n_frames / s, 2),
                   "ms_per_frame": round(1e3 * s / n_frames, 1)} for name, s in best.items()}
    print(f"{'JPEG scale':<12}{'frames/s':>10}{'ms/frame':>10}", file=sys.stderr)
    for name, r in rows.items():
        print(f"{name:<12}{r['frames_per_s']:>10}{r['ms_per_frame']:>10}", file=sys.stderr)
    full, red = rows["1/1"], rows[f"1/{reduced}"]
    result = {"dataroot": args.dataroot, "version": args.version, "frames": n_frames,
              "source_image_hw": list(src_hw), "model_image_hw": list(cfg.data.image_size),
              "lidar": not args.no_lidar, "radar_sweeps": cfg.data.radar_sweeps, "lidar_sweeps": cfg.data.lidar_sweeps,
              "missing_sweep_files_per_pass": missing_per_pass, "reduction": reduced,
              "full_frames_per_s": full["frames_per_s"], "reduced_frames_per_s": red["frames_per_s"],
              "reduced_speedup": round(red["frames_per_s"] / full["frames_per_s"], 2), "modes": rows}
    print(json.dumps(result))
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
