"""One scene's world: the road (`_Road`), the ego's speed profile (`_EgoMotion`) and `SceneWorld`,
which holds the objects, static clutter, the ground texture, the sensor timeline and the
kinematics the sensor modules (camera, lidar, radar) sample."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from imkd_core.data.synthetic import camera, lidar, radar
from imkd_core.data.synthetic.appearance import _FACE_O, _FACE_U, _FACE_V, _clutter_style, _style
from imkd_core.data.synthetic.camera import _CameraModel
from imkd_core.data.synthetic.config import (
    _BIKE_W,
    _CAM_DT,
    _CLASS_SPEC,
    _CLUTTER_SPEC,
    _FACED,
    _FOLLOW,
    _KEYFRAME_DT,
    _LANE,
    _LANE_W,
    _LIDAR_DT,
    _MAP_RES,
    _MAT_ASPHALT,
    _PARK_W,
    _RADAR_DT,
    _T0_US,
    _TEX_MARGIN,
    _TEX_RES,
    _VEHICLES,
    SyntheticConfig,
    _token,
    _wrap,
    camera_sizes,
    scene_name,
)
from imkd_core.data.synthetic.objects import _Spawner
from imkd_core.geometry import rotation_z, transform_matrix
from imkd_core.rig import load_rig


# --------------------------------------------------------------------------------------------
# Road and ego motion
# --------------------------------------------------------------------------------------------
class _Road:
    """Centreline sampled every `ds` metres (arc length s, xy, heading); d > 0 is left of +s."""

    def __init__(self, rng: np.random.Generator, s_lo: float, s_hi: float, curvy: bool, ds: float = 0.5):
        self.ds = ds
        self.s0 = s_lo
        n = int(math.ceil((s_hi - s_lo) / ds)) + 1
        self.s = s_lo + ds * np.arange(n)
        kappa = np.zeros(n)
        pos, head = s_lo, 0.0
        while pos < s_hi:
            pos += rng.uniform(25.0, 90.0) if curvy else rng.uniform(150.0, 400.0)
            radius, angle = rng.uniform(45.0, 160.0), rng.uniform(0.2, 0.9)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if abs(head + sign * angle) > 1.3:  # keep the road monotone: it never loops back
                sign = -sign
            m = (self.s >= pos) & (self.s < pos + radius * angle)
            kappa[m] = sign / radius
            head += sign * angle
            pos += radius * angle
        heading = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ds)])
        heading += rng.uniform(-np.pi, np.pi) - np.interp(0.0, self.s, heading)
        hm = 0.5 * (heading[1:] + heading[:-1])
        xy = np.zeros((n, 2))
        xy[1:, 0] = np.cumsum(np.cos(hm) * ds)
        xy[1:, 1] = np.cumsum(np.sin(hm) * ds)
        xy -= np.array([np.interp(0.0, self.s, xy[:, 0]), np.interp(0.0, self.s, xy[:, 1])])
        self.xy = xy
        self.heading = heading

    def shift(self, offset: np.ndarray) -> None:
        self.xy = self.xy + offset

    def pose(self, s: np.ndarray | float, d: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) of the point at arc length s and lateral offset d (vectorised)."""
        f = (np.asarray(s, dtype=np.float64) - self.s0) / self.ds
        i = np.clip(np.floor(f).astype(np.int64), 0, len(self.s) - 2)
        a = np.clip(f - i, 0.0, 1.0)
        x = self.xy[i, 0] * (1 - a) + self.xy[i + 1, 0] * a
        y = self.xy[i, 1] * (1 - a) + self.xy[i + 1, 1] * a
        h = self.heading[i] * (1 - a) + self.heading[i + 1] * a
        d = np.asarray(d, dtype=np.float64)
        return x - np.sin(h) * d, y + np.cos(h) * d, h

    def curve(self, o: float, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
        """(n, 2) polyline of the offset curve d = o between arc lengths lo and hi."""
        m = (self.s >= lo) & (self.s <= hi)
        h = self.heading[m]
        return self.xy[m] + o * np.stack([-np.sin(h), np.cos(h)], 1)


class _EgoMotion:
    """Arc length s(t) along the ego lane from a speed profile with accelerations and stops."""

    def __init__(self, rng: np.random.Generator, t_end: float, pad: float = 15.0, dt: float = 0.01):
        self.t = np.arange(-pad, t_end + pad + dt, dt)
        v_hi = rng.uniform(7.0, 13.0)
        p_stop = rng.uniform(0.1, 0.3)
        targets = np.empty_like(self.t)
        tc, stops = -pad, 0
        while tc < self.t[-1]:
            if 0.0 <= tc <= t_end and stops < 2 and rng.random() < p_stop:
                dur, v = rng.uniform(2.0, 5.0), 0.0
                stops += 1
            else:
                dur, v = rng.uniform(3.0, 8.0), rng.uniform(2.5, v_hi)
            targets[(self.t >= tc) & (self.t < tc + dur)] = v
            tc += dur
        v = np.empty_like(self.t)
        cur = targets[0]
        for i, tgt in enumerate(targets):  # first-order follower with acceleration limits
            cur += min(max(tgt - cur, -3.0 * dt), 2.0 * dt)
            v[i] = cur
        s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * dt)])
        self.s = s - np.interp(0.0, self.t, s)
        self.v = v

    def s_at(self, t: np.ndarray | float) -> np.ndarray:
        return np.interp(t, self.t, self.s)


class SceneWorld:
    """Everything about one synthetic scene: road, ego motion, objects, timeline and sensor models.

    Deterministic in (cfg.seed, index). Times are seconds from the first keyframe; `stamp_us`
    converts to nuScenes microseconds. Objects are indexed 0..n_objects-1 (instance order).
    """

    def __init__(self, cfg: SyntheticConfig, index: int):
        if not 0 <= index < cfg.scenes:
            raise ValueError(f"scene index {index} out of range for {cfg.scenes} scenes")
        self.cfg, self.index = cfg, index
        self.rig = load_rig(cfg.rig)
        ss = np.random.SeedSequence([cfg.seed, index, 0x5EED])
        s_world, s_tl, self._s_lidar, self._s_radar, s_style = ss.spawn(5)
        rng = np.random.default_rng(s_world)
        self.name = scene_name(cfg, index)
        self.logfile = f"synth-{cfg.seed}-{index:04d}"
        self.t0_us = _T0_US + index * 3_600_000_000
        K = cfg.samples_per_scene
        self.t_end = (K - 1) * _KEYFRAME_DT

        # road layout and ego motion
        self.lanes = int(rng.choice([1, 2]))
        self.sidewalk = float(rng.uniform(3.8, 5.0))
        curvy = bool(rng.random() < 0.75)
        self.ego = _EgoMotion(rng, self.t_end)
        S0, S1 = float(self.ego.s_at(-0.1)), float(self.ego.s_at(self.t_end + 0.1))
        self.road = _Road(rng, S0 - 450.0, S1 + 450.0, curvy)
        self.d_ego = -(self.lanes * _LANE_W - _LANE_W / 2)
        self.o_lane = self.lanes * _LANE_W
        self.o_kerb = self.o_lane + _BIKE_W + _PARK_W

        # global frame: the ground texture region (ego path + margin) starts at (0, 0)
        ts = np.linspace(-0.2, self.t_end + 0.2, max(8, 4 * K))
        ex, ey, _ = self.road.pose(self.ego.s_at(ts), self.d_ego)
        lo = np.array([ex.min(), ey.min()]) - _TEX_MARGIN
        hi = np.array([ex.max(), ey.max()]) + _TEX_MARGIN
        self.road.shift(-lo)
        self.tex_size = (int(math.ceil((hi[0] - lo[0]) / _TEX_RES)), int(math.ceil((hi[1] - lo[1]) / _TEX_RES)))

        # objects
        zone_side = int(rng.choice([-1, 1]))
        sp = _Spawner(rng, self.lanes, self.sidewalk, (S0 - 90.0, S1 + 90.0), (S0, S1), self.ego, self.t_end)
        sp.construction_zones(zone_side)
        sp.guaranteed(-zone_side)
        sp.parking(float(rng.uniform(0.2, 0.4)))
        sp.traffic()
        sp.cyclists(-zone_side)
        sp.extras(zone_side)
        sp.sidewalk_life(float(rng.uniform(26.0, 40.0)))
        self.objects = sp.objs
        self._arrays()
        self.description = (f"synthetic: {self.lanes} lane(s)/direction, {'curvy' if curvy else 'straight'} road, "
                            f"construction zone on the {'left' if zone_side > 0 else 'right'}, "
                            f"{len(self.objects)} objects")

        # static clutter: buildings, poles, trees
        self._build_clutter(rng, S0 - 200.0, S1 + 200.0)

        # appearance
        srng = np.random.default_rng(s_style)
        sun_az, sun_el = srng.uniform(-np.pi, np.pi), srng.uniform(0.5, 1.1)
        self.sun = np.array([math.cos(sun_az), math.sin(sun_az), math.tan(sun_el)])
        self.sun /= np.linalg.norm(self.sun)
        overcast = srng.random() < 0.3
        self.sky = np.array([170, 175, 180] if overcast else [205, 150, 95], np.float64)  # BGR
        self.haze = np.array([200, 200, 200] if overcast else [230, 215, 200], np.float64)
        self.exposure = float(srng.uniform(0.85, 1.1))
        styles = [_style(o.cls, o.category, srng, o.rider, o.size) for o in self.objects]
        styles += [_clutter_style(k, srng, tuple(s)) for k, s in zip(self.clutter_kind, self.clutter_size)]
        self._build_rects(styles)
        self._build_texture(srng)

        # timeline
        self._timeline(np.random.default_rng(s_tl))
        self._cams: dict[str, _CameraModel] | None = None

    # ---------------------------------------------------------------- arrays
    def _arrays(self) -> None:
        o = self.objects
        self.n_objects = len(o)
        self.obj_mode = np.array([x.mode for x in o], np.int64)
        self.obj_s0 = np.array([x.s0 for x in o], np.float64)
        self.obj_d = np.array([x.d for x in o], np.float64)
        self.obj_v = np.array([x.v for x in o], np.float64)
        self.obj_tau = np.array([x.tau for x in o], np.float64)
        self.obj_rev = np.array([x.reverse for x in o], bool)
        self.obj_yaw_off = np.array([x.yaw_off for x in o], np.float64)
        self.obj_size = np.array([x.size for x in o], np.float64).reshape(-1, 3)
        self.obj_cls = [x.cls for x in o]
        specs = [_CLASS_SPEC[c] for c in self.obj_cls]
        self.obj_inten = np.array([s["inten"] for s in specs], np.float64).reshape(-1, 2)
        self.obj_rcs = np.array([s["rcs"] for s in specs], np.float64).reshape(-1, 2)
        self.obj_pdet = np.array([s["p"] for s in specs], np.float64)
        self.obj_extra = np.array([s["extra"] for s in specs], np.float64)
        self.obj_vehicle = np.array([c in _VEHICLES for c in self.obj_cls], bool)
        self.obj_faced = np.array([c in _FACED for c in self.obj_cls], bool)

    def _build_clutter(self, rng: np.random.Generator, lo: float, hi: float) -> None:
        kinds: list[str] = []
        cen: list[tuple[float, float, float]] = []
        size: list[tuple[float, float, float]] = []
        yaw: list[float] = []
        road = self.road

        def put(kind: str, s: float, o: float, sz: tuple[float, float, float], z0: float = 0.0,
                yaw_off: float = 0.0) -> None:
            x, y, h = road.pose(s, o)
            kinds.append(kind)
            cen.append((float(x), float(y), z0 + sz[2] / 2))
            size.append(sz)
            yaw.append(float(h) + yaw_off)

        for side in (-1, 1):
            s = lo
            while s < hi:  # buildings
                length = float(rng.uniform(9.0, 17.0))
                depth, height = float(rng.uniform(8.0, 15.0)), float(rng.uniform(5.0, 18.0))
                setback = float(rng.uniform(2.0, 5.0))
                put("building", s + length / 2, side * (self.o_kerb + self.sidewalk + setback + depth / 2),
                    (round(length, 3), round(depth, 3), round(height, 3)))
                s += length + (float(rng.uniform(12, 30)) if rng.random() < 0.15 else float(rng.uniform(0.5, 5)))
            s = lo + float(rng.uniform(0, 20))
            while s < hi:  # street lights at the kerb
                put("pole", s, side * (self.o_kerb + 0.35), (0.25, 0.25, 7.5))
                s += float(rng.uniform(22.0, 35.0))
            s = lo + float(rng.uniform(0, 10))
            while s < hi:  # trees between sidewalk and buildings
                if rng.random() < 0.6:
                    o = side * (self.o_kerb + self.sidewalk + 0.9)
                    put("trunk", s, o, (0.35, 0.35, 2.8))
                    c = float(rng.uniform(2.2, 3.2))
                    put("canopy", s, o, (c, c, float(rng.uniform(2.5, 3.5))), z0=2.8)
                s += float(rng.uniform(10.0, 25.0))
        self.clutter_kind = kinds
        self.clutter_centre = np.array(cen, np.float64).reshape(-1, 3)
        self.clutter_size = np.array(size, np.float64).reshape(-1, 3)
        self.clutter_yaw = np.array(yaw, np.float64)
        self.clutter_inten = np.array([_CLUTTER_SPEC[k]["inten"] for k in kinds], np.float64).reshape(-1, 2)

    def _build_rects(self, styles: list[np.ndarray]) -> None:
        """Stack the textured rectangles of all boxes (objects then clutter) into flat arrays."""
        sizes = np.concatenate([self.obj_size, self.clutter_size])
        counts = np.array([len(s) for s in styles], np.int64)
        self.rect_start = np.concatenate([[0], np.cumsum(counts)])
        st = np.concatenate(styles)
        face = st[:, 0].astype(np.int64)
        box = np.repeat(np.arange(len(styles)), counts)
        u = np.stack([st[:, 1], st[:, 2], st[:, 2], st[:, 1]], 1)[..., None]
        v = np.stack([st[:, 3], st[:, 3], st[:, 4], st[:, 4]], 1)[..., None]
        unit = _FACE_O[face][:, None] + u * _FACE_U[face][:, None] + v * _FACE_V[face][:, None]
        self.rect_local = unit * sizes[box][:, None]  # (n, 4, 3) about the box centre, unrotated
        self.rect_face = face
        self.rect_box = box
        self.rect_col = st[:, 5:8][:, ::-1] * self.exposure  # BGR
        self.rect_order = np.arange(len(st))
        self.is_building = np.array([False] * self.n_objects + [k == "building" for k in self.clutter_kind])

    def _build_texture(self, rng: np.random.Generator) -> None:
        """Top-down ground texture (BGR) and material raster in the global frame, _TEX_RES per texel."""
        w, h = self.tex_size
        mat = np.zeros((h, w), np.uint8)
        sh = 3
        scale = (1 << sh) / _TEX_RES
        road = self.road

        def poly(pts: np.ndarray) -> np.ndarray:
            return np.round(pts * scale).astype(np.int32)

        def band(o1: float, o2: float, value: int) -> None:
            for sgn in (-1.0, 1.0):
                p = np.concatenate([road.curve(sgn * o1), road.curve(sgn * o2)[::-1]])
                cv2.fillPoly(mat, [poly(p)], value, cv2.LINE_8, sh)

        band(0.0, self.o_kerb, 1)
        band(self.o_kerb, self.o_kerb + self.sidewalk, 4)
        band(self.o_kerb, self.o_kerb + 0.25, 5)

        def dashes(o: float, on: float, off: float, width: float, value: int) -> None:
            quads = []
            for s in np.arange(road.s[0], road.s[-1] - on, on + off):
                x0, y0, h0 = road.pose(s, 0.0)
                x1, y1, h1 = road.pose(s + on, 0.0)
                q = []
                for xx, yy, hh, oo in ((x0, y0, h0, o - width / 2), (x1, y1, h1, o - width / 2),
                                       (x1, y1, h1, o + width / 2), (x0, y0, h0, o + width / 2)):
                    q.append((xx - math.sin(hh) * oo, yy + math.cos(hh) * oo))
                quads.append(poly(np.array(q)))
            cv2.fillPoly(mat, quads, value, cv2.LINE_8, sh)

        def line(o: float, width: float, value: int) -> None:
            p = np.concatenate([road.curve(o - width / 2), road.curve(o + width / 2)[::-1]])
            cv2.fillPoly(mat, [poly(p)], value, cv2.LINE_8, sh)

        line(-0.12, 0.12, 3)
        line(0.12, 0.12, 3)
        if self.lanes == 2:
            dashes(-_LANE_W, 3.0, 6.0, 0.15, 2)
            dashes(_LANE_W, 3.0, 6.0, 0.15, 2)
        line(-self.o_lane, 0.15, 2)
        line(self.o_lane, 0.15, 2)
        # zebra crossings near the ego path
        S0, S1 = float(self.ego.s_at(0.0)), float(self.ego.s_at(self.t_end))
        for _ in range(int(rng.integers(0, 3))):
            sc = float(rng.uniform(S0 - 20, S1 + 40))
            quads = []
            for dd in np.arange(-self.o_lane + 0.3, self.o_lane - 0.3, 1.0):
                pts = []
                for ss, oo in ((sc, dd), (sc + 3.5, dd), (sc + 3.5, dd + 0.5), (sc, dd + 0.5)):
                    x, y, _ = road.pose(ss, oo)
                    pts.append((float(x), float(y)))
                quads.append(poly(np.array(pts)))
            cv2.fillPoly(mat, quads, 2, cv2.LINE_8, sh)
        self.material = mat

        pal = np.array([[55, 115, 80], [100, 98, 96], [225, 228, 230], [60, 185, 215], [165, 170, 172],
                        [190, 190, 192]], np.float64)  # BGR
        pal[0] = pal[0] * rng.uniform(0.85, 1.15, 3)
        pal[1] = pal[1] * rng.uniform(0.85, 1.1)
        pal = np.clip(pal * self.exposure, 0, 255)
        amp = np.array([14, 7, 5, 5, 6, 4], np.float32)
        small = rng.normal(0.0, 1.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
        blotch = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        tex = np.empty((h, w, 3), np.uint8)
        for r0 in range(0, h, 512):  # chunked to bound memory
            m = mat[r0:r0 + 512]
            fine = rng.integers(-6, 7, m.shape).astype(np.float32)
            lum = (blotch[r0:r0 + 512] * 1.5 + fine * 0.5) * amp[m]
            tex[r0:r0 + 512] = np.clip(pal[m] + lum[..., None], 0, 255).astype(np.uint8)
        self.texture = tex
        self.grass_bgr = tuple(float(c) for c in pal[0])

    def map_mask(self) -> np.ndarray:
        """Drivable-area mask for the devkit's MapMask (0.1 m/px, row 0 = max y), uint8 0/255."""
        drive = np.isin(self.material, _MAT_ASPHALT).astype(np.uint8) * 255
        h, w = drive.shape
        size = (int(round(w * _TEX_RES / _MAP_RES)), int(round(h * _TEX_RES / _MAP_RES)))
        return np.ascontiguousarray(cv2.resize(drive, size, interpolation=cv2.INTER_NEAREST)[::-1])

    # ---------------------------------------------------------------- timeline
    def _timeline(self, rng: np.random.Generator) -> None:
        """Sensor timestamps (s) with keyframe flags and the sample each record belongs to."""
        K = self.cfg.samples_per_scene
        sweeps = self.cfg.sweeps
        self.times: dict[str, np.ndarray] = {}
        self.is_key: dict[str, np.ndarray] = {}
        self.sample_of: dict[str, np.ndarray] = {}
        n_l = 10 * (K - 1) + 1
        tl = _LIDAR_DT * np.arange(n_l) + rng.normal(0.0, 0.0003, n_l)
        tl[0] = 0.0
        key = np.arange(n_l) % 10 == 0
        sample = (np.arange(n_l) + 9) // 10
        self.sample_t = tl[key].copy()
        self._add_channel(self.rig.lidar.name, tl, key, sample, sweeps)
        for spec in self.rig.cameras:
            cam = spec.name
            keys = self.sample_t + spec.fire_offset + np.clip(rng.normal(0, 0.0008, K), -0.002, 0.002)
            t, k, smp = [keys[0]], [True], [0]
            for i in range(1, K):
                for j in range(1, 6):
                    t.append(keys[i - 1] + j * _CAM_DT + rng.normal(0, 0.0003))
                    k.append(False)
                    smp.append(i)
                t.append(keys[i])
                k.append(True)
                smp.append(i)
            self._add_channel(cam, np.array(t), np.array(k), np.array(smp), sweeps)
        for rad in self.rig.radar_names:
            period = _RADAR_DT * rng.uniform(0.99, 1.01)
            start = -0.06 + rng.uniform(0.0, period)
            n = int((self.t_end + 0.12) / period) + 2
            t = start + period * np.arange(n) + rng.normal(0.0, 0.0005, n)
            key_idx = np.array([int(np.argmin(np.abs(t - ts))) for ts in self.sample_t])
            t = t[key_idx[0]:key_idx[-1] + 1]
            key_idx = key_idx - key_idx[0]
            k = np.zeros(len(t), bool)
            k[key_idx] = True
            smp = np.searchsorted(key_idx, np.arange(len(t)), side="left")
            self._add_channel(rad, t, k, smp, sweeps)

    def _add_channel(self, ch: str, t: np.ndarray, key: np.ndarray, sample: np.ndarray, sweeps: bool) -> None:
        keep = np.ones(len(t), bool) if sweeps else key
        self.times[ch], self.is_key[ch], self.sample_of[ch] = t[keep], key[keep], sample[keep]

    def instance_token(self, i: int) -> str:
        """Token of object i's instance record (also its identity across samples)."""
        return _token(self.cfg.seed, self.index, "inst", i)

    def stamp_us(self, t: float | np.ndarray) -> np.ndarray:
        return self.t0_us + np.round(np.asarray(t) * 1e6).astype(np.int64)

    # ---------------------------------------------------------------- kinematics
    def ego_pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego (rear axle, base_link) in the global frame at time t."""
        x, y, h = self.road.pose(self.ego.s_at(t), self.d_ego)
        return float(x), float(y), float(h)

    def ego_transform(self, t: float) -> np.ndarray:
        x, y, yaw = self.ego_pose(t)
        return transform_matrix(rotation_z(yaw), (x, y, 0.0))

    def ego_velocity(self, t: float, dt: float = 0.01) -> tuple[np.ndarray, float]:
        """Global (vx, vy) and yaw rate of the ego at t."""
        x0, y0, h0 = self.ego_pose(t - dt)
        x1, y1, h1 = self.ego_pose(t + dt)
        return np.array([x1 - x0, y1 - y0]) / (2 * dt), float(_wrap(h1 - h0)) / (2 * dt)

    def _centres(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        s = np.where(self.obj_mode == _LANE, self.obj_s0 + np.where(self.obj_rev, -1.0, 1.0) * self.obj_v * t,
                     self.obj_s0)
        follow = self.obj_mode == _FOLLOW
        if follow.any():
            s = s.copy()
            s[follow] = self.ego.s_at(t + self.obj_tau[follow]) + self.obj_s0[follow]
        x, y, h = self.road.pose(s, self.obj_d)
        return np.stack([x, y], 1), h

    def object_states(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object centres (n, 3), yaw (n,) and global velocity (n, 2) at time t."""
        xy, h = self._centres(t)
        dt = 0.02
        xy0, _ = self._centres(t - dt)
        xy1, _ = self._centres(t + dt)
        vel = (xy1 - xy0) / (2 * dt)
        yaw = _wrap(h + np.where(self.obj_rev, np.pi, 0.0) + self.obj_yaw_off)
        cen = np.concatenate([xy, self.obj_size[:, 2:3] / 2], 1)
        return cen, yaw, vel

    def all_boxes(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres, yaws and sizes of objects (first n_objects) and clutter at time t."""
        cen, yaw, _ = self.object_states(t)
        return (np.concatenate([cen, self.clutter_centre]), np.concatenate([yaw, self.clutter_yaw]),
                np.concatenate([self.obj_size, self.clutter_size]))

    # ---------------------------------------------------------------- cameras
    def cameras(self) -> dict[str, _CameraModel]:
        if self._cams is None:
            sizes = camera_sizes(self.cfg, self.rig)
            self._cams = {c: _CameraModel(c, sizes[c], self.sky, self.haze, self.rig) for c in self.rig.camera_names}
        return self._cams


    # ---------------------------------------------------------------- sensors (camera, lidar, radar modules)
    def render_camera(self, channel: str, t: float, hidden: Sequence[int] = ()) -> np.ndarray:
        """BGR image of camera `channel` at time t; objects whose index is in `hidden` are left out."""
        return camera.render_camera(self, channel, t, hidden)

    def lidar_rays(self) -> np.ndarray:
        """(32, A, 3) unit ray directions in the LiDAR frame (ring-major, azimuth from -pi)."""
        return lidar.lidar_rays(self.cfg.lidar_azimuth_steps)[0]

    def cast_lidar(self, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One LiDAR sweep at time t: points (N, 5), box index per point (-1 ground), unoccluded hits."""
        return lidar.cast_lidar(self, t, rng)

    def radar_sweep(self, channel: str, t: float, rng: np.random.Generator) -> np.ndarray:
        """One radar sweep at time t: structured array with the 18 nuScenes fields, radar frame."""
        return radar.radar_sweep(self, channel, t, rng)
