"""The LiDAR: HDL-32E beams ray-cast against the ground plane and the world's oriented boxes (a
range-image z-buffer over each box's conservative window), intensity by material and class."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from imkd_core.data.synthetic.appearance import _UNIT_CORNERS
from imkd_core.data.synthetic.config import (
    _LIDAR_ELEV,
    _LIDAR_MAX_RANGE,
    _LIDAR_MIN_RANGE,
    _MAT_INTENSITY,
    _TEX_RES,
    _sensor_to_ego,
    _wrap,
)
from imkd_core.frame import LIDAR

if TYPE_CHECKING:
    from imkd_core.data.synthetic.world import SceneWorld


@functools.lru_cache(maxsize=8)
def lidar_rays(azimuth_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(32, A, 3) unit ray directions in the LiDAR frame (ring-major, azimuth from -pi) and an
    azimuth-major copy (A, 32, 3): the HDL-32E beams at `azimuth_steps` azimuths."""
    a = azimuth_steps
    az = -np.pi + (np.arange(a) + 0.5) * (2 * np.pi / a)
    el = _LIDAR_ELEV
    rays = np.stack([np.cos(el)[:, None] * np.cos(az)[None], np.cos(el)[:, None] * np.sin(az)[None],
                     np.sin(el)[:, None] * np.ones_like(az)[None]], -1)
    return rays, np.ascontiguousarray(rays.transpose(1, 0, 2))


def cast_lidar(world: SceneWorld, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one LiDAR sweep at time t.

    A range image (ring x azimuth) is z-buffered: the ground plane, then all (ray, box) pairs
    of every box's conservative (ring, azimuth) window at once (slab test, nearest hit per
    ray). Returns points (N, 5) float32 (x, y, z, intensity, ring)
    in the LIDAR_TOP frame, the box index of each point (-1 ground) and, per object, the number
    of rays that would hit it without occlusion (for the visibility level).
    """
    rays, rays_t = lidar_rays(world.cfg.lidar_azimuth_steps)
    nr, na, _ = rays.shape
    T_gs = world.ego_transform(t) @ _sensor_to_ego(LIDAR, world.rig)
    R, tr = T_gs[:3, :3], T_gs[:3, 3]
    dz = rays @ R[2]
    depth = np.where(dz < -1e-6, -tr[2] / np.minimum(dz, -1e-6), np.inf)  # ground plane z = 0
    ids = np.full((nr, na), -1, np.int64)
    faces = np.zeros((nr, na), np.int8)  # face of the box a ray hits: +1 front (+x), -1 back, 0 other
    unocc = np.zeros(world.n_objects, np.int64)
    cen, yaw, size = world.all_boxes(t)
    rel = cen - tr
    rad = np.linalg.norm(size, axis=1) / 2
    dxy = np.linalg.norm(rel[:, :2], axis=1)
    cand = np.flatnonzero((dxy < _LIDAR_MAX_RANGE + rad) & (dxy > rad + 0.3))
    cand = cand[np.argsort(dxy[cand] - rad[cand], kind="stable")]  # near to far
    if cand.size:
        # per-box windows, vectorised: box frame -> sensor frame, corner azimuths/elevations
        c_s = rel[cand] @ R
        cb, sb = np.cos(yaw[cand]), np.sin(yaw[cand])
        rz = np.zeros((cand.size, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = cb, -sb, sb, cb, 1.0
        R_sb = np.einsum("ji,njk->nik", R, rz)
        half = size[cand] / 2
        corners = np.einsum("nij,nkj->nki", R_sb, _UNIT_CORNERS[None] * size[cand][:, None]) + c_s[:, None]
        ac = np.arctan2(c_s[:, 1], c_s[:, 0])
        relaz = _wrap(np.arctan2(corners[..., 1], corners[..., 0]) - ac[:, None])
        da = 2 * np.pi / na
        j0 = np.floor((ac + relaz.min(1) + np.pi) / da).astype(np.int64) - 1
        j1 = np.floor((ac + relaz.max(1) + np.pi) / da).astype(np.int64) + 1
        rxy = np.hypot(c_s[:, 0], c_s[:, 1])
        rh = np.hypot(half[:, 0], half[:, 1])
        rmin, rmax = np.maximum(rxy - rh, 0.05), rxy + rh
        zmin, zmax = corners[..., 2].min(1), corners[..., 2].max(1)
        el_hi = np.arctan2(zmax, np.where(zmax > 0, rmin, rmax))
        el_lo = np.arctan2(zmin, np.where(zmin > 0, rmax, rmin))
        r0 = np.searchsorted(_LIDAR_ELEV, el_lo - 0.002)
        r1 = np.searchsorted(_LIDAR_ELEV, el_hi + 0.002)
        o_b = -np.einsum("ni,nij->nj", c_s, R_sb)  # sensor origin in the box frame
        ok = np.flatnonzero((relaz.max(1) - relaz.min(1) < np.pi) & (r1 > r0))
        # all (ray, box) candidate pairs of the windows at once
        nrow, ncol = (r1 - r0)[ok], (j1 - j0 + 1)[ok]
        cnt = nrow * ncol
        box_of = np.repeat(ok, cnt)
        local = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ncol_p = np.repeat(ncol, cnt)
        rr = r0[box_of] + local // ncol_p
        cc = (j0[box_of] + local % ncol_p) % na
        ray = rr * na + cc
        dirs_s = rays.reshape(-1, 3)[ray]
        rot = R_sb[box_of]
        lo, hi = -half[box_of] - o_b[box_of], half[box_of] - o_b[box_of]
        tmin = np.full(ray.size, -np.inf)
        tmax = np.full(ray.size, np.inf)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for k in range(3):  # slab test per box axis (column-wise: fast on (P,) arrays)
                dk = dirs_s[:, 0] * rot[:, 0, k] + dirs_s[:, 1] * rot[:, 1, k] + dirs_s[:, 2] * rot[:, 2, k]
                inv = 1.0 / dk
                a, b = lo[:, k] * inv, hi[:, k] * inv
                np.maximum(tmin, np.minimum(a, b), out=tmin)
                np.minimum(tmax, np.maximum(a, b), out=tmax)
        hit = (tmax >= tmin) & (tmin > 0.0)
        bx = cand[box_of[hit]]
        unocc += np.bincount(bx[bx < world.n_objects], minlength=world.n_objects)  # hits without occlusion
        pair = np.flatnonzero(hit)
        ray, th, tx = ray[hit], tmin[hit], tmax[hit]
        flat = depth.reshape(-1)
        closer = th < flat[ray]  # in front of the ground
        ray, th, tx, bx, pair = ray[closer], th[closer], tx[closer], bx[closer], pair[closer]
        best = np.full(flat.size, np.inf)
        np.minimum.at(best, ray, th)  # nearest box per ray
        win = th == best[ray]
        ray, th, tx, bx, pair = ray[win], th[win], tx[win], bx[win], pair[win]
        # which face the ray enters: the box-frame axis whose slab bound the entry point sits on
        d_b = np.einsum("pi,pik->pk", dirs_s[pair], rot[pair])
        p_b = o_b[box_of[pair]] + th[:, None] * d_b
        rel_b = p_b / half[box_of[pair]]
        on_end = np.abs(rel_b[:, 0]) >= np.abs(rel_b[:, 1:]).max(1)
        faces.reshape(-1)[ray] = np.where(on_end, np.sign(rel_b[:, 0]), 0).astype(np.int8)
        # returns land a little inside the surface (like real points inside a loose box)
        flat[ray] = th + np.minimum(rng.uniform(0.005, 0.04, ray.size), 0.5 * (tx - th))
        ids.reshape(-1)[ray] = bx
    valid = (depth < _LIDAR_MAX_RANGE) & (depth > _LIDAR_MIN_RANGE) & (rng.random(depth.shape) > 0.01)
    sel = np.flatnonzero(valid.T)  # firing order: azimuth-major like the real sensor
    ring = sel % nr
    dep = depth.T.reshape(-1)[sel]
    hid = ids.T.reshape(-1)[sel]
    face = faces.T.reshape(-1)[sel]
    dirs = rays_t.reshape(-1, 3)[sel]
    ground = hid < 0
    dep[ground] += rng.normal(0.0, 0.012, int(ground.sum()))
    pts = dirs * dep[:, None]
    # intensity: per box class/material, ground by texture material. Vehicles and cycles have a
    # front and a back in LiDAR too: the front (windscreen, dark grille, fork) returns weakly, the
    # back (number plate, tail-light and rear reflectors) strongly, with retro-reflector hits on
    # the back only.
    inten = np.empty(len(dep))
    box_int = np.concatenate([world.obj_inten, world.clutter_inten])
    ob = ~ground
    bi = hid[ob]
    inten[ob] = box_int[bi, 0] + box_int[bi, 1] * rng.standard_normal(bi.size)
    veh = (bi < world.n_objects) & world.obj_faced[np.minimum(bi, world.n_objects - 1)]
    fo = face[ob]
    inten[ob] = np.where(veh & (fo > 0), 0.3 * inten[ob], inten[ob])
    inten[ob] = np.where(veh & (fo < 0), inten[ob] + 70.0, inten[ob])
    retro = np.zeros(len(dep), bool)
    retro[ob] = veh & (fo < 0) & (rng.random(bi.size) < 0.25)
    inten[retro] = rng.uniform(150.0, 255.0, int(retro.sum()))
    if ground.any():
        g = pts[ground] @ R.T + tr
        px = np.floor(g[:, 0] / _TEX_RES).astype(np.int64)
        py = np.floor(g[:, 1] / _TEX_RES).astype(np.int64)
        hh, ww = world.material.shape
        inb = (px >= 0) & (px < ww) & (py >= 0) & (py < hh)
        m = np.zeros(len(g), np.int64)
        m[inb] = world.material[py[inb], px[inb]]
        inten[ground] = _MAT_INTENSITY[m, 0] + _MAT_INTENSITY[m, 1] * rng.standard_normal(len(g))
    out = np.empty((len(dep), 5), np.float32)
    out[:, :3] = pts
    out[:, 3] = np.round(np.clip(inten, 0.0, 255.0))
    out[:, 4] = ring
    return out, hid, unocc
