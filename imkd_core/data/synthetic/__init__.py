"""Synthetic nuScenes-format dataset generator (6 cameras, 5 radars, LiDAR, 10 detection classes).

`generate(out_dir, SyntheticConfig(...))` writes a complete dataset in the nuScenes layout (the 13
JSON tables in `<out_dir>/<version>/`, `samples/` and `sweeps/` files, `maps/` masks) that the
devkit's `NuScenes(version, out_dir)` loads and `DetectionEval` scores. Every stage (LiDAR teacher,
camera+radar student, evaluation, ROS replay) needs data that exercises the real format end to
end, is small enough for CI and a laptop, and is learnable in minutes on a CPU.

One scene is a road (straights and arcs, 1-2 lanes per direction, bike and parking lanes,
sidewalks, buildings, poles, trees) on flat ground z = 0, an ego car driving its right lane with
stops, and objects of all 10 classes (traffic, parked vehicles, a construction zone, pedestrians,
cycles, bins). Sensors are simulated from that world at nuScenes rates and calibration.

Modules: `config` (SyntheticConfig, presets, splits, the rig and constants), `world` (road, ego
motion, SceneWorld), `objects` (placement), `appearance` (textures), `camera`, `lidar`, `radar`
(sensor models) and `writer` (files and tables). Determinism: every random draw comes from a
generator seeded by (seed, scene, stream); tokens are hashes of (seed, table, indices); JSON has a
fixed key order; so a seed gives byte-identical files for any number of worker processes.
"""

from imkd_core.data.synthetic.config import (
    PRESETS,
    RIG,
    SyntheticConfig,
    n_val_scenes,
    parse_image_size,
    preset,
    scene_name,
    split_scene_names,
)
from imkd_core.data.synthetic.world import SceneWorld
from imkd_core.data.synthetic.writer import generate

__all__ = [
    "PRESETS",
    "RIG",
    "SceneWorld",
    "SyntheticConfig",
    "generate",
    "n_val_scenes",
    "parse_image_size",
    "preset",
    "scene_name",
    "split_scene_names",
]
