"""Writing a dataset: every scene's sensor files (in worker processes when `jobs` > 1) and the 13
nuScenes tables, with deterministic tokens and a fixed JSON key order."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imkd_core.data.synthetic.config import (
    _VEHICLES,
    SyntheticConfig,
    _scaled_intrinsic,
    _sensor_pose,
    _sensor_to_ego,
    _token,
    _yaw_quat,
    camera_sizes,
)
from imkd_core.data.synthetic.world import SceneWorld
from imkd_core.frame import CLASSES
from imkd_core.pcd import RADAR_PCD_PAD, pcd_bytes, radar_pcd_bytes
from imkd_core.rig import Rig, load_rig

# Real nuScenes sensor tokens, so tools keyed on them keep working.
_SENSOR_TOKENS: dict[str, str] = {
    "CAM_FRONT": "725903f5b62f56118f4094b46a4470d8",
    "CAM_BACK": "ce89d4f3050b5892b33b3d328c5e82a3",
    "CAM_BACK_LEFT": "a89643a5de885c6486df2232dc954da2",
    "CAM_FRONT_LEFT": "ec4b5d41840a509984f7ec36419d4c09",
    "CAM_FRONT_RIGHT": "2f7ad058f1ac5557bf321c7543758f43",
    "CAM_BACK_RIGHT": "ca7dba2ec9f95951bbe67246f7f2c3f7",
    "LIDAR_TOP": "dc8b396651c05aedbb9cdaae573bb567",
    "RADAR_FRONT": "47fcd48f71d75e0da5c8c1704a9bfe0a",
    "RADAR_FRONT_RIGHT": "232a6c4dc628532e81de1c57120876e9",
    "RADAR_FRONT_LEFT": "1f69f87a4e175e5ba1d03e2e6d9bcd27",
    "RADAR_BACK_LEFT": "df2d5b8be7be55cca33c8c92384f2266",
    "RADAR_BACK_RIGHT": "5c29dee2f70b528a817110173c2e71b9",
}

# The full nuScenes category taxonomy (real tokens); only some are instantiated.
_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("1fa93b757fc74fb197cdd60001ad8abf", "human.pedestrian.adult", "Adult subcategory."),
    ("b1c6de4c57f14a5383d9f963fbdcb5cb", "human.pedestrian.child", "Child subcategory."),
    ("b2d7c6c701254928a9e4d6aac9446d79", "human.pedestrian.wheelchair", "Wheelchairs."),
    ("6a5888777ca14867a8aee3fe539b56c4", "human.pedestrian.stroller", "Strollers."),
    ("403fede16c88426885dd73366f16c34a", "human.pedestrian.personal_mobility",
     "A small electric or self-propelled vehicle, e.g. skateboard, segway, or scooters."),
    ("bb867e2064014279863c71a29b1eb381", "human.pedestrian.police_officer", "Police officer."),
    ("909f1237d34a49d6bdd27c2fe4581d79", "human.pedestrian.construction_worker", "Construction worker"),
    ("63a94dfa99bb47529567cd90d3b58384", "animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("fd69059b62a3469fbaef25340c0eab7f", "vehicle.car", "Vehicle designed primarily for personal use."),
    ("dfd26f200ade4d24b540184e16050022", "vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("fc95c87b806f48f8a1faea2dcc2222a4", "vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("003edbfb9ca849ee8a7496e9af3025d4", "vehicle.bus.bendy", "Bendy bus subcategory."),
    ("fedb11688db84088883945752e480c2c", "vehicle.bus.rigid", "Rigid bus subcategory."),
    ("6021b5187b924d64be64a702e5570edf", "vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("5b3cd6f2bca64b83aa3d0008df87d0e4", "vehicle.construction", "Vehicles primarily designed for construction."),
    ("732cce86872640628788ff1bb81006d4", "vehicle.emergency.ambulance", "All types of ambulances."),
    ("7b2ff083a64e4d53809ae5d9be563504", "vehicle.emergency.police", "All types of police vehicles."),
    ("90d0f6f8e7c749149b1b6c3a029841a8", "vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("653f7efbb9514ce7b81d44070d6208c1", "movable_object.barrier", "Temporary road barrier to redirect traffic."),
    ("85abebdccd4d46c7be428af5a6173947", "movable_object.trafficcone", "All types of traffic cone."),
    ("d772e4bae20f493f98e15a76518b31d7", "movable_object.pushable_pullable",
     "Objects that a pedestrian may push or pull, e.g. garbage-bins."),
    ("063c5e7f638343d3a7230bc3641caf97", "movable_object.debris", "Movable object left on the driveable surface."),
    ("0a30519ee16a4619b4f4acfe2d78fb55", "static_object.bicycle_rack", "Area or device intended to park bicycles."),
)
_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("cb5118da1ab342aa947717dc53544259", "vehicle.moving", "Vehicle is moving."),
    ("c3246a1e22a14fcb878aa61e69ae3329", "vehicle.stopped",
     "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("58aa28b1c2a54dc88e169808c07331e3", "vehicle.parked",
     "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("a14936d865eb4216b396adae8cb3939c", "cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("5a655f9751944309a277276b8f473452", "cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("03aa62109bf043afafdea7d875dd4f43", "pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("4d8821270b4a47e3a8a300cbec48188e", "pedestrian.standing", "The human is standing."),
    ("ab83627ff28b465b85c427162dec722f", "pedestrian.moving", "The human is moving."),
)
_VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
_CAT_TOKEN = {name: tok for tok, name, _ in _CATEGORIES}
_ATTR_TOKEN = {name: tok for tok, name, _ in _ATTRIBUTES}


def _points_in_boxes(points: np.ndarray, centres: np.ndarray, yaws: np.ndarray, sizes: np.ndarray,
                     margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (n_boxes, n_points) masks: strictly inside (shrunk by margin) and ambiguous.

    Boxes are z-up: centre (x, y, z), size (l, w, h), yaw. A point within `margin` of a face
    is ambiguous: floating-point round-off could decide either way, so callers drop those.
    """
    nb, npt = len(centres), len(points)
    inside = np.zeros((nb, npt), bool)
    ambig = np.zeros((nb, npt), bool)
    for b in range(nb):
        half = sizes[b] / 2.0
        rad = float(np.linalg.norm(half)) + margin + 1e-3
        d = points - centres[b]
        near = np.flatnonzero((np.abs(d[:, 0]) < rad) & (np.abs(d[:, 1]) < rad) & (np.abs(d[:, 2]) < rad))
        if near.size == 0:
            continue
        c, s = math.cos(yaws[b]), math.sin(yaws[b])
        dn = d[near]
        loc = np.abs(np.stack([c * dn[:, 0] + s * dn[:, 1], -s * dn[:, 0] + c * dn[:, 1], dn[:, 2]], 1))
        ins = (loc < half - margin).all(1)
        out = (loc > half + margin).any(1)
        inside[b, near] = ins
        ambig[b, near] = ~ins & ~out
    return inside, ambig


_PROGRESS_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = q
    cv2.setNumThreads(1)


def _sensor_token(channel: str) -> str:
    """The sensor record's token: nuScenes' own for its channels, a derived one for other rigs'."""
    return _SENSOR_TOKENS.get(channel) or _token(0, "sensor", channel)


def _channels(rig: Rig) -> tuple[str, ...]:
    """Cameras, LiDAR, radars: the order of the sensor and calibrated_sensor tables."""
    return (*rig.camera_names, rig.lidar.name, *rig.radar_names)


def _file_name(world: SceneWorld, channel: str, key: bool, stamp: int) -> str:
    rig = world.rig
    ext = "jpg" if channel in rig.camera_names else ("pcd.bin" if channel == rig.lidar.name else "pcd")
    return f"{'samples' if key else 'sweeps'}/{channel}/{world.logfile}__{channel}__{stamp}.{ext}"


def _attribute(world: SceneWorld, i: int, speed: float) -> list[str]:
    o = world.objects[i]
    if o.cls in _VEHICLES:
        name = "vehicle.moving" if speed > 0.3 else ("vehicle.parked" if o.parked else "vehicle.stopped")
    elif o.cls in ("bicycle", "motorcycle"):
        name = "cycle.with_rider" if o.rider else "cycle.without_rider"
    elif o.cls == "pedestrian":
        name = "pedestrian.moving" if speed > 0.2 else ("pedestrian.sitting_lying_down" if o.sitting
                                                         else "pedestrian.standing")
    else:
        return []
    return [_ATTR_TOKEN[name]]


class _SceneWriter:
    """One scene's files and table records: annotations first (which objects, which boxes), then
    every sensor record in keyframe order (the annotations' point counts and visibility come from
    the key sweeps), the map mask, and the records of the scene's tables."""

    def __init__(self, out_dir: str, cfg: SyntheticConfig, index: int) -> None:
        self.world = world = SceneWorld(cfg, index)
        self.cfg, self.index, self.out = cfg, index, Path(out_dir)
        self.K = K = cfg.samples_per_scene
        self.sample_toks = [self.tok("sample", k) for k in range(K)]
        self.rig = rig = world.rig
        self.cam_sizes = camera_sizes(cfg, rig)
        self.cs_tok = {ch: self.tok("cs", ch) for ch in _channels(rig)}
        self.channels = [rig.lidar.name, *rig.radar_names, *rig.camera_names]
        self.sd_tokens = {ch: [self.tok("sd", ch, n) for n in range(len(world.times[ch]))] for ch in self.channels}
        self.sd_records: list[dict[str, Any]] = []
        self.ego_records: list[dict[str, Any]] = []
        self.n_bytes = 0

    def tok(self, *parts: Any) -> str:
        return _token(self.cfg.seed, self.index, *parts)

    def annotate(self) -> None:
        """Objects within range of the ego at some keyframe, contiguous per instance; per keyframe
        (obj indices, rounded centres, yaws, sizes)."""
        world, K = self.world, self.K
        self.states = states = [world.object_states(float(t)) for t in world.sample_t]
        ego_xy = np.array([world.ego_pose(float(t))[:2] for t in world.sample_t])
        in_range = np.stack([np.linalg.norm(st[0][:, :2] - ego_xy[k], axis=1) <= self.cfg.annotation_range
                             for k, st in enumerate(states)])  # (K, n)
        self.annotated = annotated = np.zeros_like(in_range)
        for i in np.flatnonzero(in_range.any(0)).tolist():
            ks = np.flatnonzero(in_range[:, i])
            annotated[ks[0]:ks[-1] + 1, i] = True
        self.ann_boxes = []
        for k in range(K):
            idx = np.flatnonzero(annotated[k])
            cen = np.round(states[k][0][idx], 3)
            self.ann_boxes.append((idx, cen, states[k][1][idx], world.obj_size[idx]))
        self.num_lidar = [np.zeros(len(a[0]), np.int64) for a in self.ann_boxes]
        self.num_radar = [np.zeros(len(a[0]), np.int64) for a in self.ann_boxes]
        self.vis_level = [np.full(len(a[0]), "1", object) for a in self.ann_boxes]

    def lidar_bytes(self, t: float, key: bool, k: int, rng: np.random.Generator) -> bytes:
        """A LiDAR sweep; on a keyframe: points on a box face dropped, counts and visibility recorded."""
        world = self.world
        pts, hid, unocc = world.cast_lidar(t, rng)
        if key:
            idx, cen, yaws, sizes = self.ann_boxes[k]
            T_gs = world.ego_transform(t) @ _sensor_to_ego(self.rig.lidar.name, self.rig)
            g = pts[:, :3].astype(np.float64) @ T_gs[:3, :3].T + T_gs[:3, 3]
            inside, amb = _points_in_boxes(g, cen, yaws, sizes, margin=0.002)
            keep = ~amb.any(0)
            pts, hid = pts[keep], hid[keep]
            self.num_lidar[k] = inside[:, keep].sum(1)
            hits = np.array([(hid == i).sum() for i in idx.tolist()], np.int64)
            ratio = np.where(unocc[idx] > 0, hits / np.maximum(unocc[idx], 1), 0.0)
            self.vis_level[k] = np.select([ratio >= 0.8, ratio >= 0.6, ratio >= 0.4], ["4", "3", "2"], "1")
        return pts.astype(np.float32).tobytes()

    def radar_bytes(self, ch: str, t: float, key: bool, k: int, rng: np.random.Generator) -> bytes:
        """A radar sweep as PCD (the rig's fields under its names: nuScenes' 18 ARS408 fields, or
        fewer); on a keyframe its points in each annotated box are counted."""
        world = self.world
        arr = world.radar_sweep(ch, t, rng)
        if key:
            idx, cen, yaws, sizes = self.ann_boxes[k]
            T_gs = world.ego_transform(t) @ _sensor_to_ego(ch, self.rig)
            p = np.stack([arr["x"], arr["y"], arr["z"]], 1).astype(np.float64)
            g = p @ T_gs[:3, :3].T + T_gs[:3, 3]
            inside, _ = _points_in_boxes(g, cen, yaws, sizes)
            self.num_radar[k] += inside.sum(1)
        spec = self.rig.radar(ch)
        if spec.nuscenes_layout:
            return radar_pcd_bytes(arr)
        out = np.empty(len(arr), np.dtype([(src, arr.dtype[col]) for col, src in spec.fields.items()]))
        for col, src in spec.fields.items():
            out[src] = arr[col]
        return pcd_bytes(out, RADAR_PCD_PAD)

    def camera_bytes(self, ch: str, t: float, fname: str) -> bytes:
        ok, buf = cv2.imencode(".jpg", self.world.render_camera(ch, t),
                               [int(cv2.IMWRITE_JPEG_QUALITY), self.cfg.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {fname}")
        return buf.tobytes()

    def record(self, ch: str, n: int, t: float, stamp: int, key: bool, fname: str) -> None:
        """The sample_data and ego_pose records of sensor record n of channel ch."""
        world = self.world
        x, y, yaw = world.ego_pose(t)
        sd_tok = self.sd_tokens[ch][n]
        self.ego_records.append({"token": sd_tok, "timestamp": stamp, "rotation": _yaw_quat(yaw),
                                 "translation": [x, y, 0.0]})
        is_cam = ch in self.cam_sizes
        W, H = self.cam_sizes.get(ch, (0, 0))
        self.sd_records.append({
            "token": sd_tok, "sample_token": self.sample_toks[int(world.sample_of[ch][n])], "ego_pose_token": sd_tok,
            "calibrated_sensor_token": self.cs_tok[ch], "timestamp": stamp,
            "fileformat": "jpg" if is_cam else "pcd", "is_key_frame": key,
            "height": H if is_cam else 0, "width": W if is_cam else 0, "filename": fname,
            "prev": self.sd_tokens[ch][n - 1] if n > 0 else "",
            "next": self.sd_tokens[ch][n + 1] if n + 1 < len(world.times[ch]) else "",
        })

    def write_sensors(self, tick: Callable[[int], None] | None) -> None:
        """Every sensor file, keyframe interval by interval (LiDAR, radars, cameras), with progress."""
        world = self.world
        rng_lidar = np.random.default_rng(world._s_lidar)
        rng_radar = np.random.default_rng(world._s_radar)
        ptr = {ch: 0 for ch in self.channels}
        for k in range(self.K):
            for ch in self.channels:
                times, keys, smp = world.times[ch], world.is_key[ch], world.sample_of[ch]
                while ptr[ch] < len(times) and smp[ptr[ch]] == k:
                    n = ptr[ch]
                    ptr[ch] += 1
                    t = float(times[n])
                    stamp = int(world.stamp_us(t))
                    key = bool(keys[n])
                    fname = _file_name(world, ch, key, stamp)
                    if ch == self.rig.lidar.name:
                        data = self.lidar_bytes(t, key, k, rng_lidar)
                    elif ch in self.rig.radar_names:
                        data = self.radar_bytes(ch, t, key, k, rng_radar)
                    else:
                        data = self.camera_bytes(ch, t, fname)
                    (self.out / fname).write_bytes(data)
                    self.n_bytes += len(data)
                    self.record(ch, n, t, stamp, key, fname)
            if tick is not None:
                tick(1)
            elif _PROGRESS_QUEUE is not None:
                _PROGRESS_QUEUE.put(1)

    def write_map(self) -> None:
        """The drivable-area mask for the devkit."""
        ok, png = cv2.imencode(".png", self.world.map_mask(), [int(cv2.IMWRITE_PNG_COMPRESSION), 6])
        if not ok:
            raise RuntimeError("PNG encoding of the map mask failed")
        (self.out / "maps" / f"{self.tok('map')}.png").write_bytes(png.tobytes())
        self.n_bytes += len(png)

    def annotation_records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
        """(instance records, sample_annotation records, annotations per class)."""
        world, K, annotated = self.world, self.K, self.annotated
        ann_tok = lambda i, k: self.tok("ann", i, k)  # noqa: E731
        anns: list[dict[str, Any]] = []
        inst_records: list[dict[str, Any]] = []
        class_counts: dict[str, int] = {}
        for i in np.flatnonzero(annotated.any(0)).tolist():
            ks = np.flatnonzero(annotated[:, i]).tolist()
            inst_records.append({"token": world.instance_token(i),
                                 "category_token": _CAT_TOKEN[world.objects[i].category],
                                 "nbr_annotations": len(ks), "first_annotation_token": ann_tok(i, ks[0]),
                                 "last_annotation_token": ann_tok(i, ks[-1])})
        for k in range(K):
            idx, cen, yaws, sizes = self.ann_boxes[k]
            vel = self.states[k][2][idx]
            for j, i in enumerate(idx.tolist()):
                speed = float(np.linalg.norm(vel[j]))
                l, w_, h = (float(v) for v in sizes[j])
                anns.append({
                    "token": ann_tok(i, k), "sample_token": self.sample_toks[k],
                    "instance_token": world.instance_token(i),
                    "visibility_token": str(self.vis_level[k][j]), "attribute_tokens": _attribute(world, i, speed),
                    "translation": [float(v) for v in cen[j]], "size": [w_, l, h],
                    "rotation": _yaw_quat(float(yaws[j])),
                    "prev": ann_tok(i, k - 1) if k > 0 and annotated[k - 1, i] else "",
                    "next": ann_tok(i, k + 1) if k + 1 < K and annotated[k + 1, i] else "",
                    "num_lidar_pts": int(self.num_lidar[k][j]), "num_radar_pts": int(self.num_radar[k][j]),
                })
                cls = world.obj_cls[i]
                class_counts[cls] = class_counts.get(cls, 0) + 1
        return inst_records, anns, class_counts

    def tables(self) -> dict[str, Any]:
        """The scene's records of every table it contributes to, and its statistics."""
        world, K, sample_toks = self.world, self.K, self.sample_toks
        scene_tok, log_tok, map_tok = self.tok("scene"), self.tok("log"), self.tok("map")
        inst_records, anns, class_counts = self.annotation_records()
        samples = [{"token": sample_toks[k], "timestamp": int(world.stamp_us(float(world.sample_t[k]))),
                    "prev": sample_toks[k - 1] if k > 0 else "", "next": sample_toks[k + 1] if k + 1 < K else "",
                    "scene_token": scene_tok} for k in range(K)]
        calib = []
        for ch in _channels(self.rig):
            trans, quat = _sensor_pose(ch, self.rig)
            intr = _scaled_intrinsic(ch, self.cam_sizes[ch], self.rig).tolist() if ch in self.cam_sizes else []
            calib.append({"token": self.cs_tok[ch], "sensor_token": _sensor_token(ch), "translation": list(trans),
                          "rotation": list(quat), "camera_intrinsic": intr})
        date = time.strftime("%Y-%m-%d", time.gmtime(world.t0_us / 1e6))
        return {
            "scene": [{"token": scene_tok, "log_token": log_tok, "nbr_samples": K,
                       "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1],
                       "name": world.name, "description": world.description}],
            "log": [{"token": log_tok, "logfile": world.logfile, "vehicle": "synth", "date_captured": date,
                     "location": "synth-city"}],
            "map": [{"category": "semantic_prior", "token": map_tok, "filename": f"maps/{map_tok}.png",
                     "log_tokens": [log_tok]}],
            "sample": samples,
            "sample_data": self.sd_records,
            "ego_pose": self.ego_records,
            "calibrated_sensor": calib,
            "instance": inst_records,
            "sample_annotation": anns,
            "stats": {"files": len(self.sd_records) + 1, "bytes": self.n_bytes, "class_counts": class_counts,
                      "name": world.name},
        }


def _generate_scene(out_dir: str, cfg: SyntheticConfig, index: int,
                    tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write all sensor files of one scene; return its table records and statistics."""
    w = _SceneWriter(out_dir, cfg, index)
    w.annotate()
    w.write_sensors(tick)
    w.write_map()
    return w.tables()


def _scene_task(args: tuple[str, SyntheticConfig, int]) -> dict[str, Any]:
    return _generate_scene(*args)


def _static_tables(rig: Rig) -> dict[str, list[dict[str, Any]]]:
    return {
        "category": [{"token": t, "name": n, "description": d} for t, n, d in _CATEGORIES],
        "attribute": [{"token": t, "name": n, "description": d} for t, n, d in _ATTRIBUTES],
        "visibility": [{"description": d, "token": t, "level": lv} for t, lv, d in _VISIBILITY],
        "sensor": [{"token": _sensor_token(ch), "channel": ch,
                    "modality": "camera" if ch in rig.camera_names else ("lidar" if ch == rig.lidar.name else "radar")}
                   for ch in _channels(rig)],
    }


_TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
           "sample_annotation", "sample_data", "scene", "sensor", "visibility")


def _run_scenes(out: Path, cfg: SyntheticConfig, progress: Callable[[int], None] | None
                ) -> list[dict[str, Any]]:
    """Every scene's files and records, in `cfg.jobs` spawned processes (progress through a queue)
    or in this one."""
    tasks = [(str(out), cfg, i) for i in range(cfg.scenes)]
    jobs = min(cfg.jobs, cfg.scenes)
    if jobs > 1:
        ctx = mp.get_context("spawn")  # no fork: safe with OpenCV/torch threads in the parent
        q = ctx.Queue()
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(q,)) as pool:
            res = pool.map_async(_scene_task, tasks, chunksize=1)
            while True:
                try:
                    n = q.get(timeout=0.2)
                    if progress is not None:
                        progress(n)
                except queue.Empty:
                    if res.ready():
                        break
            results = res.get()
            while not q.empty():
                n = q.get()
                if progress is not None:
                    progress(n)
    else:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            results = [_generate_scene(*task, tick=progress) for task in tasks]
        finally:
            cv2.setNumThreads(threads)
    return results


def generate(out_dir: str | os.PathLike[str], cfg: SyntheticConfig | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write a complete synthetic nuScenes-format dataset into `out_dir`; return a summary dict.

    `progress(n)` is called as keyframe intervals complete (cfg.scenes * cfg.samples_per_scene in
    total). Raises FileExistsError if `out_dir/<version>` already holds tables.
    """
    cfg = cfg or SyntheticConfig()
    t_start = time.perf_counter()
    out = Path(out_dir)
    vdir = out / cfg.version
    if vdir.exists() and any(vdir.glob("*.json")):
        raise FileExistsError(f"{vdir} already contains tables; choose an empty output directory")
    rig = load_rig(cfg.rig)
    for ch in _channels(rig):
        (out / "samples" / ch).mkdir(parents=True, exist_ok=True)
        if cfg.sweeps:
            (out / "sweeps" / ch).mkdir(parents=True, exist_ok=True)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    vdir.mkdir(parents=True, exist_ok=True)

    results = _run_scenes(out, cfg, progress)

    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
    tables.update(_static_tables(rig))
    for r in results:
        for name in ("scene", "log", "map", "sample", "sample_data", "ego_pose", "calibrated_sensor", "instance",
                     "sample_annotation"):
            tables[name].extend(r[name])
    for name in _TABLES:
        with open(vdir / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(tables[name], f, indent=0)
            f.write("\n")
    class_counts: dict[str, int] = {}
    for r in results:
        for c, n in r["stats"]["class_counts"].items():
            class_counts[c] = class_counts.get(c, 0) + n
    names = [r["stats"]["name"] for r in results]
    summary = {
        "out_dir": str(out),
        "version": cfg.version,
        "scenes": cfg.scenes,
        "samples": len(tables["sample"]),
        "sample_data": len(tables["sample_data"]),
        "annotations": len(tables["sample_annotation"]),
        "instances": len(tables["instance"]),
        "files": sum(r["stats"]["files"] for r in results) + len(_TABLES) + 1,  # + synthetic_meta.json
        "bytes": sum(r["stats"]["bytes"] for r in results),
        "train_scenes": sum(n.startswith("synth-train-") for n in names),
        "val_scenes": sum(n.startswith("synth-val-") for n in names),
        "class_counts": {c: class_counts.get(c, 0) for c in (*CLASSES, "bin")},
        "image_size": list(cfg.image_size),
        "seed": cfg.seed,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    # output does not depend on jobs; the default rig is left out (the metadata of nuScenes-rig
    # datasets reads as before)
    config = {k: v for k, v in asdict(cfg).items() if k != "jobs" and not (k == "rig" and v == "nuscenes")}
    meta = {"generator": "imkd_core.data.synthetic", "config": config, "scenes": names}
    (out / "synthetic_meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return summary
