"""nuScenes (through the devkit) -> `SensorFrame` + `GroundTruth`: the offline side of the data contract.

Works on any version folder in the devkit layout (v1.0-mini, v1.0-trainval, a synthetic v1.0-synth)
and on explicit scene lists, so training and evaluation never depend on the devkit's hard-coded
split names. Everything is expressed in the reference frame of docs/design.md: base_link at the
CAM_FRONT keyframe stamp. Sensor data of other stamps (other cameras, radar and LiDAR sweeps) is
motion-compensated sensor -> ego(own stamp) -> global -> ego(reference) through the ego poses.
"""

from __future__ import annotations

import fnmatch
import json
import os
import os.path as osp
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from imkd_core.errors import UserError
from imkd_core.frame import CLASSES, GroundTruth, SensorFrame
from imkd_core.geometry import invert_transform, pose_matrix_wxyz, quat_wxyz_to_matrix
from imkd_core.pcd import PcdError, PcdUnsupportedError, parse_pcd
from imkd_core.preprocess import decode_image, jpeg_reduction, reduced_intrinsics, resize_with_intrinsics
from imkd_core.radar import SweepRule, canonical_radar, radar_features
from imkd_core.rig import Rig, load_rig

if TYPE_CHECKING:  # pragma: no cover
    from nuscenes import NuScenes

TABLE_NAMES: tuple[str, ...] = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
    "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
# Radar filters are OFF when reading (every state kept, as RadarPointCloud.disable_filters()):
# imkd_core.radar.radar_features applies the devkit's default filters itself, so the reader and the
# ROS node share one filter.
_ALL_INVALID_STATES = list(range(18))
_ALL_DYNPROP_STATES = list(range(8))
_ALL_AMBIG_STATES = list(range(5))

# Names kept importable from the reader; the maths is imkd_core.geometry's.


class NuScenesDataError(UserError, RuntimeError):
    """A nuScenes table is missing, unparsable or references a record that does not exist."""


class SceneSelectionError(UserError, ValueError):
    """A scene name or pattern that selects nothing in the dataset."""


# ----------------------------------------------------------------------------- radar files
def read_radar_pcd(path: str) -> np.ndarray:
    """A nuScenes radar .pcd file -> (18, N) float64, all points (no filter).

    Same values as the devkit's `RadarPointCloud.from_file` with every filter state allowed (a test
    checks this on every file of the real subset), but decoded with imkd_core.pcd (one structured
    `np.frombuffer`) instead of the devkit's per-point, per-field struct.unpack loop (~20x faster,
    which matters with 5 radars x 6 sweeps per frame). Layouts it does not decode go to the devkit
    reader; a truncated or malformed file is a NuScenesDataError naming it.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        cloud = parse_pcd(data)
        if cloud.height != 1 or any(cloud.dtype[n].shape for n in cloud.dtype.names):
            raise PcdUnsupportedError("organised cloud or COUNT > 1")
    except PcdUnsupportedError:
        from nuscenes.utils.data_classes import RadarPointCloud

        return RadarPointCloud.from_file(path, invalid_states=_ALL_INVALID_STATES,
                                         dynprop_states=_ALL_DYNPROP_STATES, ambig_states=_ALL_AMBIG_STATES).points
    except PcdError as e:
        raise NuScenesDataError(f"radar file {path}: {e}") from None
    rec = cloud.array()
    names = cloud.dtype.names
    if cloud.width == 0:
        return np.zeros((len(names), 0))
    points = np.stack([rec[name].astype(np.float64) for name in names])
    if np.isnan(points[:, 0]).any():  # the devkit's convention for an empty cloud
        return np.zeros((len(names), 0))
    return points


def read_radar_fields(path: str, fields: dict[str, str]) -> np.ndarray:
    """A radar .pcd file of any field layout -> the (18, N) RADAR_PCD_FIELDS array, through a rig's
    field mapping (imkd_core.radar.canonical_radar); NuScenesDataError naming a missing field."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        cloud = parse_pcd(data)
    except PcdError as e:
        raise NuScenesDataError(f"radar file {path}: {e}") from None
    names = cloud.dtype.names or ()
    missing = [src for src in fields.values() if src not in names]
    if missing:
        raise NuScenesDataError(f"radar file {path} lacks field(s) {', '.join(missing)} of the rig; "
                                f"has {', '.join(names)}")
    rec = cloud.array()
    return canonical_radar({src: rec[src].astype(np.float64) for src in fields.values()}, fields, int(cloud.width)
                           * int(cloud.height))


# ----------------------------------------------------------------------------- file names
def sample_data_path(dataroot: str | os.PathLike, sd: dict, version: str = "") -> str:
    """`<dataroot>/<sd['filename']>`, after checking the record: NuScenesDataError naming the table
    and token when `filename` is absent or empty, absolute, or has a '..' component (a table must
    not make a tool read files outside the dataroot). Symbolic links inside the dataroot are
    followed: nuScenes folders are commonly linked in from other disks."""
    table = f"{version}/sample_data.json" if version else "sample_data.json"
    name = sd.get("filename")
    if not isinstance(name, str) or not name:
        raise NuScenesDataError(f"{table}: record {sd.get('token')!r} has no 'filename'")
    if osp.isabs(name) or ".." in name.split("/") or "\0" in name:
        raise NuScenesDataError(f"{table}: record {sd.get('token')!r} has filename {name!r}, which leaves the "
                                f"dataroot (absolute or '..'); refused")
    return osp.join(str(dataroot), name)


# ----------------------------------------------------------------------------- loading / scenes
def _find_version_folders(dataroot: str) -> list[str]:
    if not osp.isdir(dataroot):
        return []
    return sorted(d for d in os.listdir(dataroot) if osp.isfile(osp.join(dataroot, d, "sample.json")))


def load_nuscenes(dataroot: str, version: str, verbose: bool = False) -> NuScenes:
    """`NuScenes(version, dataroot)` with clear errors: missing folder or table, unparsable JSON,
    dangling references (the devkit itself fails with a bare assert, JSONDecodeError or KeyError)."""
    from nuscenes import NuScenes

    dataroot = str(dataroot)
    if not osp.isdir(dataroot):
        raise FileNotFoundError(f"nuScenes dataroot does not exist: {dataroot}")
    table_root = osp.join(dataroot, version)
    if not osp.isdir(table_root):
        raise FileNotFoundError(
            f"nuScenes version folder {table_root} does not exist; version folders found in {dataroot}: "
            f"{_find_version_folders(dataroot) or 'none'}")
    for name in TABLE_NAMES:
        path = osp.join(table_root, f"{name}.json")
        if not osp.isfile(path):
            raise FileNotFoundError(f"nuScenes table missing: {path}")
    try:
        return NuScenes(version=version, dataroot=dataroot, verbose=verbose)
    except json.JSONDecodeError as exc:
        for name in TABLE_NAMES:  # error path only: find which table does not parse
            path = osp.join(table_root, f"{name}.json")
            try:
                with open(path) as f:
                    json.load(f)
            except json.JSONDecodeError as exc2:
                raise NuScenesDataError(f"nuScenes table {path} is not valid JSON: {exc2}") from exc
        raise NuScenesDataError(f"a nuScenes table in {table_root} is not valid JSON: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise NuScenesDataError(
            f"broken nuScenes tables in {table_root}: a record references a missing token or field "
            f"({type(exc).__name__}: {exc})") from exc
    except AssertionError as exc:
        raise NuScenesDataError(f"nuScenes tables in {table_root} rejected by the devkit: {exc}") from exc


def resolve_scenes(nusc: NuScenes, spec: str | Iterable[str] | None = "all") -> list[str]:
    """Scene names selected by `spec`, in dataset order.

    spec: None or 'all'; a name; shell-style patterns ('synth-train-*'); a list of those, or one
    comma-separated string. An unknown name or a pattern matching nothing raises
    SceneSelectionError (a ValueError) listing the available scenes.
    """
    available = [s["name"] for s in nusc.scene]
    if spec is None:
        return available
    items = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    items = [p for p in items if p]
    if not items:
        raise SceneSelectionError("empty scene selection")
    if items == ["all"]:
        return available
    chosen: set[str] = set()
    for item in items:
        if any(ch in item for ch in "*?["):
            hits = fnmatch.filter(available, item)
        else:
            hits = [item] if item in available else []
        if not hits:
            shown = ", ".join(available[:50]) + (f", ... ({len(available)} in all)" if len(available) > 50 else "")
            raise SceneSelectionError(f"scene {item!r} not found in {nusc.version} at {nusc.dataroot}; "
                                      f"available: {shown}")
        chosen.update(hits)
    return [name for name in available if name in chosen]


# ----------------------------------------------------------------------------- reader
class NuScenesReader:
    """Random access to nuScenes samples as (SensorFrame, GroundTruth) pairs.

    scenes: see `resolve_scenes` (None = all scenes). lidar_sweeps: how many sample_data records
    the LiDAR contributes, following the `prev` chain from the keyframe. Radar: the sweeps that
    `radar_rule` (imkd_core.radar.SweepRule; default: its defaults with `radar_sweeps`) picks
    from each radar's timeline of existing files around the reference (CAM_FRONT) stamp - the rule the ROS
    node's assembler applies online, so training, offline evaluation and the node take the same
    sweeps (the devkit's keyframe radar sweep, nearest the LiDAR time, in ~98 % of cases).
    image_reduction: JPEG DCT reduction (1, 2, 4, 8) for decoding; the caller picks it with
    `preprocess.jpeg_reduction(src_hw, model_image_size)` so the ROS node, decoding the same bytes
    the same way, sees identical pixels. Sweep files that do not exist are skipped and counted in
    `missing_files` (every time a read skips one; one warning per reader); a missing keyframe file
    raises FileNotFoundError naming it, a dangling table reference NuScenesDataError.
    nusc: an already loaded NuScenes to share (dataroot/version are then taken from it).
    lidar_min_distance: returns closer than this in |x| and |y| of the sensor are dropped, like
    the devkit's `remove_close` in `from_file_multisweep` (roof and body of the ego car).
    rig: the sensor rig (imkd_core.rig; default nuscenes): camera and radar order, the reference
    camera (the frame stamp; CAM_FRONT above), each radar's field mapping. Cameras of another size
    than the reference camera are resized to its size, K scaled, as the node's assembler does.
    input_size: the model input (H, W); given, each camera decodes at its own
    `jpeg_reduction(its size, input_size)` (the node's rule) instead of `image_reduction`.
    """

    def __init__(
        self,
        dataroot: str | os.PathLike,
        version: str,
        scenes: str | Sequence[str] | None = None,
        radar_sweeps: int = 6,
        lidar_sweeps: int = 10,
        load_lidar: bool = True,
        image_reduction: int = 1,
        nusc: NuScenes | None = None,
        lidar_min_distance: float = 1.0,
        radar_rule: SweepRule | None = None,
        rig: Rig | str | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        if radar_sweeps < 1 or lidar_sweeps < 1:
            raise ValueError("radar_sweeps and lidar_sweeps must be >= 1")
        if image_reduction not in (1, 2, 4, 8):
            raise ValueError(f"image_reduction must be 1, 2, 4 or 8, got {image_reduction}")
        self.rig = rig if isinstance(rig, Rig) else load_rig(rig or "nuscenes")
        self.cameras = self.rig.camera_names
        self.radars = self.rig.radar_names
        self.lidar_channel = self.rig.lidar.name
        self.nusc = nusc if nusc is not None else load_nuscenes(str(dataroot), version)
        self.dataroot = self.nusc.dataroot
        self.version = self.nusc.version
        self.radar_rule = radar_rule if radar_rule is not None else SweepRule(sweeps=int(radar_sweeps))
        self.radar_sweeps = int(self.radar_rule.sweeps)
        self.lidar_sweeps = int(lidar_sweeps)
        self.load_lidar = bool(load_lidar)
        self.image_reduction = int(image_reduction)
        # the model input (H, W): each camera then decodes at its own JPEG reduction for it, as the
        # node does (cameras of one size, e.g. nuScenes': the same reduction for all)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.lidar_min_distance = float(lidar_min_distance)
        self.scenes = resolve_scenes(self.nusc, scenes)
        self.missing_files = 0
        self._warned = False
        self._calib: dict[str, np.ndarray] = {}
        self._intrinsic: dict[str, np.ndarray] = {}
        self.sample_tokens: list[str] = []
        self.scene_of: dict[str, str] = {}
        by_name = {s["name"]: s for s in self.nusc.scene}
        for name in self.scenes:
            token = by_name[name]["first_sample_token"]
            while token:
                self.sample_tokens.append(token)
                self.scene_of[token] = name
                token = self._get("sample", token)["next"]
        self._index = {t: i for i, t in enumerate(self.sample_tokens)}

    # ------------------------------------------------------------------ small helpers
    def __len__(self) -> int:
        return len(self.sample_tokens)

    def index_of(self, sample_token: str) -> int:
        """Position of a sample token in this reader."""
        return self._index[sample_token]

    def _get(self, table: str, token: str) -> dict:
        try:
            return self.nusc.get(table, token)
        except KeyError:
            raise NuScenesDataError(
                f"broken nuScenes table {self.version}/{table}.json: token {token!r} not found") from None

    def _sensor_pose(self, sd: dict) -> np.ndarray:
        """sensor -> ego(at the record's stamp) 4x4, cached per calibrated_sensor."""
        tok = sd["calibrated_sensor_token"]
        if tok not in self._calib:
            cs = self._get("calibrated_sensor", tok)
            self._calib[tok] = pose_matrix_wxyz(cs["translation"], cs["rotation"])
            if cs.get("camera_intrinsic"):
                self._intrinsic[tok] = np.asarray(cs["camera_intrinsic"], dtype=np.float64).reshape(3, 3)
        return self._calib[tok]

    def _ego_pose(self, sd: dict) -> np.ndarray:
        """ego(at the record's stamp) -> global 4x4 (not cached: one per sample_data, millions in trainval)."""
        ep = self._get("ego_pose", sd["ego_pose_token"])
        return pose_matrix_wxyz(ep["translation"], ep["rotation"])

    def _path(self, sd: dict) -> str:
        return sample_data_path(self.dataroot, sd, self.version)

    def _require(self, sd: dict, channel: str, sample_token: str) -> str:
        path = self._path(sd)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"nuScenes keyframe file missing: {path} (channel {channel}, sample {sample_token}, "
                f"scene {self.scene_of.get(sample_token, '?')})")
        return path

    def _note_missing(self, path: str) -> None:
        self.missing_files += 1
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"nuScenes sweep files missing under {self.dataroot} (first: {path}); using the sweeps "
                "that exist. Count so far in reader.missing_files (this warning is shown once).",
                RuntimeWarning, stacklevel=3)

    def _sweeps(self, sample: dict, channel: str, n: int) -> list[tuple[dict, str]]:
        """Up to n (sample_data, path) pairs of existing files: the keyframe then its `prev` chain."""
        token = sample["data"].get(channel)
        if token is None:
            return []
        sd = self._get("sample_data", token)
        out = [(sd, self._require(sd, channel, sample["token"]))]
        for _ in range(n - 1):
            if not sd["prev"]:
                break
            sd = self._get("sample_data", sd["prev"])
            path = self._path(sd)
            if osp.isfile(path):
                out.append((sd, path))
            else:
                self._note_missing(path)
        return out

    def _radar_sweeps(self, sample: dict, channel: str, ref_us: int) -> list[tuple[dict, str]]:
        """(sample_data, path) of the sweeps `radar_rule` picks for a frame at ref_us: the rule
        runs over the existing files of the radar's chain within [ref - max_age, ref + timeout]."""
        token = sample["data"].get(channel)
        if token is None:
            return []
        key = self._get("sample_data", token)
        self._require(key, channel, sample["token"])
        rule, t = self.radar_rule, ref_us * 1000
        records = [key]
        sd = key
        while sd["prev"]:
            sd = self._get("sample_data", sd["prev"])
            if sd["timestamp"] * 1000 < t - rule.max_age_ns:
                break
            records.append(sd)
        records.reverse()
        sd = key
        while sd["next"]:
            sd = self._get("sample_data", sd["next"])
            if sd["timestamp"] * 1000 > t + rule.timeout_ns:
                break
            records.append(sd)
        existing = []
        for sd in records:
            path = self._path(sd)
            if sd is key or osp.isfile(path):
                existing.append((sd, path))
            else:
                self._note_missing(path)
        chosen = rule.select([sd["timestamp"] * 1000 for sd, _ in existing], t)
        return [existing[i] for i in chosen]

    def _reference(self, sample: dict) -> tuple[dict, np.ndarray]:
        """(reference camera's sample_data, ego(ref) -> global)."""
        ref = self.rig.reference_camera
        token = sample["data"].get(ref)
        if token is None:
            raise NuScenesDataError(f"sample {sample['token']} has no {ref} keyframe (the reference sensor)")
        sd = self._get("sample_data", token)
        return sd, self._ego_pose(sd)

    def ego_to_global(self, index: int) -> np.ndarray:
        """base_link at the reference stamp -> global, 4x4 (no file access)."""
        sample = self._get("sample", self.sample_tokens[index])
        return self._reference(sample)[1].copy()

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self, index: int) -> GroundTruth:
        """Annotations of sample `index` in the reference ego frame (the 10 detection classes only)."""
        from nuscenes.eval.detection.utils import category_to_detection_name

        sample = self._get("sample", self.sample_tokens[index])
        _, ego_ref = self._reference(sample)
        return self._ground_truth(sample, invert_transform(ego_ref), category_to_detection_name)

    def _ground_truth(self, sample: dict, global_to_ref: np.ndarray, to_det_name) -> GroundTruth:
        anns, labels = [], []
        for tok in sample["anns"]:
            ann = self._get("sample_annotation", tok)
            name = to_det_name(ann["category_name"])
            if name is not None:
                anns.append(ann)
                labels.append(CLASS_INDEX[name])
        n = len(anns)
        boxes = np.zeros((n, 9), dtype=np.float32)
        if n == 0:
            return GroundTruth(boxes, np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros(0, np.int64), [])
        R, t = global_to_ref[:3, :3], global_to_ref[:3, 3]
        centre = np.array([a["translation"] for a in anns], dtype=np.float64) @ R.T + t
        wlh = np.array([a["size"] for a in anns], dtype=np.float64)
        heading = quat_wxyz_to_matrix(np.array([a["rotation"] for a in anns]))[:, :, 0] @ R.T
        vel = np.array([self.nusc.box_velocity(a["token"]) for a in anns], dtype=np.float64)
        vel = np.nan_to_num(vel, nan=0.0) @ R.T
        boxes[:, 0:3] = centre
        boxes[:, 3] = wlh[:, 1]
        boxes[:, 4] = wlh[:, 0]
        boxes[:, 5] = wlh[:, 2]
        boxes[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
        boxes[:, 7:9] = vel[:, :2]
        attr_names = []
        for a in anns:
            toks = a["attribute_tokens"]
            attr_names.append(self._get("attribute", toks[0])["name"] if toks else "")
        return GroundTruth(
            boxes=boxes,
            labels=np.asarray(labels, dtype=np.int64),
            attributes=attr_names,
            num_lidar_pts=np.array([a["num_lidar_pts"] for a in anns], dtype=np.int64),
            num_radar_pts=np.array([a["num_radar_pts"] for a in anns], dtype=np.int64),
            instance_tokens=[a["instance_token"] for a in anns],
        )

    # ------------------------------------------------------------------ sensors
    def _cameras(self, sample: dict, global_to_ref: np.ndarray) -> tuple[np.ndarray, ...]:
        imgs: list[np.ndarray | None] = []
        n = len(self.cameras)
        Ks = np.tile(np.eye(3), (n, 1, 1))
        c2e = np.tile(np.eye(4), (n, 1, 1))
        mask = np.zeros(n, dtype=bool)
        for c, cam in enumerate(self.cameras):
            token = sample["data"].get(cam)
            if token is None:
                imgs.append(None)
                continue
            sd = self._get("sample_data", token)
            path = self._require(sd, cam, sample["token"])
            with open(path, "rb") as f:
                data = f.read()
            src_hw = (sd.get("height") or 0, sd.get("width") or 0)
            r = jpeg_reduction(src_hw, self.input_size) if self.input_size and src_hw[0] else self.image_reduction
            try:
                img = decode_image(data, r)
            except ValueError as exc:
                raise NuScenesDataError(f"cannot decode nuScenes image {path}: {exc}") from None
            sensor_to_ego = self._sensor_pose(sd)
            K = self._intrinsic.get(sd["calibrated_sensor_token"])
            if K is None:
                raise NuScenesDataError(
                    f"calibrated_sensor {sd['calibrated_sensor_token']} of {cam} has no camera_intrinsic")
            K = reduced_intrinsics(K, src_hw, img.shape[:2], r)
            Ks[c] = K
            c2e[c] = global_to_ref @ self._ego_pose(sd) @ sensor_to_ego
            mask[c] = True
            imgs.append(img)
        if imgs[0] is None:  # the reference camera (the frame stamp's) is always there, see _reference
            raise NuScenesDataError(f"sample {sample['token']}: no {self.cameras[0]} image")
        shape = imgs[0].shape  # other sizes are resized to it, K scaled (as the ROS node's assembler)
        for c, im in enumerate(imgs):
            if im is not None and im.shape != shape:
                imgs[c], Ks[c] = resize_with_intrinsics(im, Ks[c], shape[0], shape[1])
        images = np.zeros((n,) + shape, dtype=np.uint8)
        for c, im in enumerate(imgs):
            if im is not None:
                images[c] = im
        return images, Ks, c2e, mask

    def _radar(self, sample: dict, global_to_ref: np.ndarray, ref_us: int) -> np.ndarray:
        chunks = [np.zeros((0, 7), dtype=np.float32)]
        for spec in self.rig.radars:
            for sd, path in self._radar_sweeps(sample, spec.name, ref_us):
                points = read_radar_pcd(path) if spec.nuscenes_layout else read_radar_fields(path, spec.fields)
                sensor_to_ref = global_to_ref @ self._ego_pose(sd) @ self._sensor_pose(sd)
                chunks.append(radar_features(points, sensor_to_ref, (ref_us - sd["timestamp"]) * 1e-6))
        return np.concatenate(chunks, axis=0)

    def _lidar(self, sample: dict, global_to_ref: np.ndarray, ref_us: int) -> np.ndarray:
        parts = []
        for sd, path in self._sweeps(sample, self.lidar_channel, self.lidar_sweeps):
            raw = np.fromfile(path, dtype=np.float32)
            if raw.size % 5:
                raise NuScenesDataError(f"LiDAR file {path} is truncated ({raw.size} floats, not a multiple of 5)")
            pts = raw.reshape(-1, 5)
            if self.lidar_min_distance > 0:  # the devkit's remove_close: drop returns off the ego vehicle
                r = self.lidar_min_distance
                pts = pts[~((np.abs(pts[:, 0]) < r) & (np.abs(pts[:, 1]) < r))]
            T = global_to_ref @ self._ego_pose(sd) @ self._sensor_pose(sd)
            parts.append((pts, T, (ref_us - sd["timestamp"]) * 1e-6))
        out = np.empty((sum(len(p) for p, _, _ in parts), 5), dtype=np.float32)
        start = 0
        for pts, T, dt in parts:  # float32 products into one preallocated array (10 x ~35k points)
            xyz = out[start:start + len(pts), :3]
            np.matmul(pts[:, :3], T[:3, :3].T.astype(np.float32), out=xyz)
            xyz += T[:3, 3].astype(np.float32)
            out[start:start + len(pts), 3] = pts[:, 3]
            out[start:start + len(pts), 4] = dt
            start += len(pts)
        return out

    def __getitem__(self, index: int) -> tuple[SensorFrame, GroundTruth]:
        """Sample `index` -> (SensorFrame in base_link at the reference camera's stamp, its GroundTruth)."""
        from nuscenes.eval.detection.utils import category_to_detection_name

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        token = self.sample_tokens[index]
        sample = self._get("sample", token)
        ref_sd, ego_ref = self._reference(sample)
        global_to_ref = invert_transform(ego_ref)
        ref_us = int(ref_sd["timestamp"])
        images, Ks, c2e, mask = self._cameras(sample, global_to_ref)
        frame = SensorFrame(
            stamp=ref_us * 1000,
            images=images,
            intrinsics=Ks,
            cam_to_ego=c2e,
            camera_mask=mask,
            radar=self._radar(sample, global_to_ref, ref_us),
            ego_to_global=ego_ref.copy(),
            lidar=self._lidar(sample, global_to_ref, ref_us) if self.load_lidar else None,
            token=token,
        )
        return frame, self._ground_truth(sample, global_to_ref, category_to_detection_name)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
