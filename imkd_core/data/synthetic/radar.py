"""The radars: ARS408-like sweeps (returns on objects visible in a 1D azimuth occlusion buffer,
RCS by class, raw and ego-motion compensated Doppler, realistic states; static clutter and
ghosts) and the binary PCD with the 18 nuScenes fields they are written as."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from imkd_core.data.synthetic.config import _CLUTTER_SPEC, _sensor_to_ego
from imkd_core.pcd import RADAR_PCD_DTYPE

if TYPE_CHECKING:
    from imkd_core.data.synthetic.world import SceneWorld




def radar_sweep(world: SceneWorld, channel: str, t: float, rng: np.random.Generator) -> np.ndarray:
    """One radar sweep at time t: structured array with the 18 nuScenes fields, radar frame.

    Returns on objects visible in a 1D (azimuth) occlusion buffer, with a per-class detection
    probability and RCS; static clutter on buildings/poles/trees and the ground; a few ghosts
    (moving-looking returns that the devkit's default filters reject).
    """
    T_ge = world.ego_transform(t)
    T_gs = T_ge @ _sensor_to_ego(channel, world.rig)
    R2, p_r = T_gs[:2, :2], T_gs[:2, 3]
    v_ego, omega = world.ego_velocity(t)
    arm = p_r - T_ge[:2, 3]
    v_s = R2.T @ (v_ego + omega * np.array([-arm[1], arm[0]]))  # sensor velocity in the radar frame
    cen, yaw, vel = world.object_states(t)
    allc = np.concatenate([cen, world.clutter_centre])
    alls = np.concatenate([world.obj_size, world.clutter_size])
    loc = (allc[:, :2] - p_r) @ R2
    lyaw = np.concatenate([yaw, world.clutter_yaw]) - math.atan2(R2[1, 0], R2[0, 0])
    dist = np.linalg.norm(loc, axis=1)
    rad = np.linalg.norm(alls[:, :2], axis=1) / 2
    bottom = allc[:, 2] - alls[:, 2] / 2
    cand = np.flatnonzero((dist < 110.0 + rad) & (np.abs(np.arctan2(loc[:, 1], loc[:, 0])) < np.deg2rad(75))
                          & (dist > rad + 0.2) & (bottom < 1.2) & (bottom + alls[:, 2] > 0.3))
    # footprints in the radar frame -> azimuth spans and nearest range
    c, s = np.cos(lyaw[cand]), np.sin(lyaw[cand])
    hl, hw = alls[cand, 0:1] / 2, alls[cand, 1:2] / 2
    dx, dy = np.array([1.0, 1.0, -1.0, -1.0])[None] * hl, np.array([1.0, -1.0, 1.0, -1.0])[None] * hw
    cx = loc[cand, 0:1] + dx * c[:, None] - dy * s[:, None]
    cy = loc[cand, 1:2] + dx * s[:, None] + dy * c[:, None]
    az = np.arctan2(cy, cx)
    a0, a1 = az.min(1), az.max(1)
    rn = np.hypot(cx, cy).min(1)
    good = a1 - a0 < np.pi
    cand, a0, a1, rn = cand[good], a0[good], a1[good], rn[good]
    nb, amin, abin = 300, -np.deg2rad(75.0), np.deg2rad(150.0) / 300
    i0 = np.clip(((a0 - amin) / abin).astype(np.int64), 0, nb - 1)
    i1 = np.clip(((a1 - amin) / abin).astype(np.int64), 0, nb - 1)
    cnt = i1 - i0 + 1
    owner = np.repeat(np.arange(cand.size), cnt)
    starts = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
    bins = np.repeat(i0 - starts, cnt) + np.arange(int(cnt.sum()))
    buf = np.full(nb, np.inf)
    np.minimum.at(buf, bins, rn[owner])
    vis = (np.add.reduceat((rn[owner] <= buf[bins] + 0.5).astype(np.float64), starts) / cnt
           if cand.size else np.zeros(0))
    is_obj = cand < world.n_objects
    # returns on objects
    ob = cand[is_obj]
    rangef = np.where(rn[is_obj] < 40.0, 1.0, np.maximum(0.35, 1.0 - (rn[is_obj] - 40.0) / 100.0))
    p = world.obj_pdet[ob] * rangef * (0.1 + 0.9 * vis[is_obj])
    det = rng.random(ob.size) < p
    n_ret = det * (1 + rng.poisson(world.obj_extra[ob] * (0.5 + 0.5 * vis[is_obj])))
    sel = np.repeat(np.flatnonzero(is_obj), n_ret)  # index into cand per return
    # clutter returns: on clutter boxes or on the ground
    n_c = 1 + int(rng.poisson(26.0 if channel == "RADAR_FRONT" else 16.0))
    cl = np.flatnonzero(~is_obj)
    on_box = rng.random(n_c) < (0.55 if cl.size else 0.0)
    sel_c = cl[rng.integers(0, max(cl.size, 1), int(on_box.sum()))] if cl.size else np.zeros(0, np.int64)
    both = np.concatenate([sel, sel_c]).astype(np.int64)
    frac = rng.uniform(0.1, 0.9, both.size)
    az_s = a0[both] + frac * (a1[both] - a0[both])
    r_s, hit = _radar_surface(cand[both], az_s, loc, lyaw, alls, rng)
    m_obj = sel.size
    obj_rows = hit[:m_obj]
    box_rows = hit[m_obj:]
    ob_idx = cand[sel][obj_rows]
    n_g = n_c - int(on_box.sum())
    r_g = 2.0 + 98.0 * rng.random(n_g) ** 1.5
    az_g = rng.uniform(-np.pi / 4, np.pi / 4, n_g)
    cb_idx = cand[sel_c][box_rows] - world.n_objects
    crcs = np.array([_CLUTTER_SPEC[world.clutter_kind[i]]["rcs"] for i in cb_idx.tolist()]).reshape(-1, 2)
    r_all = np.concatenate([r_s[:m_obj][obj_rows], r_s[m_obj:][box_rows], r_g])
    az_all = np.concatenate([az_s[:m_obj][obj_rows], az_s[m_obj:][box_rows], az_g])
    vel_all = np.concatenate([vel[ob_idx] @ R2, np.zeros((box_rows.sum() + n_g, 2))])
    rcs_mu = np.concatenate([world.obj_rcs[ob_idx, 0], crcs.mean(1), np.full(n_g, -5.0)])
    rcs_sd = np.concatenate([world.obj_rcs[ob_idx, 1], (crcs[:, 1] - crcs[:, 0]) / 4, np.full(n_g, 4.0)])
    kind = np.concatenate([np.ones(ob_idx.size, np.int64), np.zeros(box_rows.sum() + n_g, np.int64)])
    speed = np.concatenate([np.linalg.norm(vel[ob_idx], axis=1), np.zeros(box_rows.sum() + n_g)])
    stopped = np.concatenate([world.obj_vehicle[ob_idx] & ~np.array([world.objects[i].parked for i in
                                                                      ob_idx.tolist()], bool).reshape(-1),
                              np.zeros(box_rows.sum() + n_g, bool)]) & (speed < 0.2)
    # ghosts: moving-looking returns that fail the default filters (invalid or ambiguous)
    n_h = int(rng.poisson(2.0))
    r_h, az_h = rng.uniform(5.0, 60.0, n_h), rng.uniform(-np.pi / 4, np.pi / 4, n_h)
    r_all, az_all = np.concatenate([r_all, r_h]), np.concatenate([az_all, az_h])
    v_h = rng.uniform(-8.0, 8.0, n_h)[:, None] * np.stack([np.cos(az_h), np.sin(az_h)], 1)
    vel_all = np.concatenate([vel_all, v_h])
    rcs_mu, rcs_sd = np.concatenate([rcs_mu, np.zeros(n_h)]), np.concatenate([rcs_sd, np.full(n_h, 5.0)])
    kind = np.concatenate([kind, np.full(n_h, 2)])
    speed = np.concatenate([speed, np.linalg.norm(v_h, axis=1)])
    stopped = np.concatenate([stopped, np.zeros(n_h, bool)])
    arr = _radar_rows(rng, r_all, az_all, vel_all, v_s, speed, rcs_mu, rcs_sd, kind, stopped)
    # ARS408-like field of view: +-60 deg to 20 m, +-45 deg to 70 m, +-9 deg to 250 m
    rr = np.hypot(arr["x"], arr["y"])
    aa = np.abs(np.arctan2(arr["y"], arr["x"]))
    fov = ((rr <= 20) & (aa <= np.deg2rad(60))) | ((rr <= 70) & (aa <= np.deg2rad(45))) | \
          ((rr <= 250) & (aa <= np.deg2rad(9)))
    arr = arr[fov & (rr > 0.3)]
    if len(arr) == 0:  # the devkit's reader rejects empty files; real sweeps always have clutter
        arr = _radar_rows(rng, np.array([12.0]), np.zeros(1), np.zeros((1, 2)), v_s, np.zeros(1),
                          np.array([-5.0]), np.array([2.0]), np.zeros(1, np.int64), np.zeros(1, bool))
    arr["id"] = np.arange(len(arr))
    return arr


def _radar_surface(boxes: np.ndarray, az: np.ndarray, loc: np.ndarray, lyaw: np.ndarray, sizes: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Range of the first surface along each (box, azimuth) ray plus a little depth; hit mask."""
    c, s = np.cos(lyaw[boxes]), np.sin(lyaw[boxes])
    dx, dy = np.cos(az), np.sin(az)
    dl = np.stack([c * dx + s * dy, -s * dx + c * dy], 1)
    ol = -np.stack([c * loc[boxes, 0] + s * loc[boxes, 1], -s * loc[boxes, 0] + c * loc[boxes, 1]], 1)
    half = sizes[boxes, :2] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1, t2 = (-half - ol) * inv, (half - ol) * inv
    tn = np.fmax.reduce(np.fmin(t1, t2), axis=1)
    tx = np.fmin.reduce(np.fmax(t1, t2), axis=1)
    hit = (tx >= tn) & (tn > 0)
    depth = rng.uniform(0.03, 1.0, boxes.size) * np.clip(0.5 * (tx - tn), 0.04, 0.5)
    return np.where(hit, tn + depth, 0.0), hit


def _radar_rows(rng: np.random.Generator, r: np.ndarray, az: np.ndarray, vel: np.ndarray, v_s: np.ndarray,
                speed: np.ndarray, rcs_mu: np.ndarray, rcs_sd: np.ndarray, kind: np.ndarray,
                stopped: np.ndarray) -> np.ndarray:
    """Radar clusters (radar frame): noisy position on a 0.2 m grid, RCS in 0.5 dBsm steps, radial
    Doppler (raw relative as the ARS408 reports it, and ego-motion compensated) and states.

    kind: 1 object, 0 static clutter, 2 ghost. vel: (n, 2) object velocity in the radar frame.
    """
    n = r.size
    r = r + rng.normal(0.0, 0.08, n)
    az = az + rng.normal(0.0, 0.004, n)
    ux, uy = np.cos(az), np.sin(az)
    arr = np.zeros(n, RADAR_PCD_DTYPE)
    arr["x"] = np.round(r * ux / 0.2) * 0.2
    arr["y"] = np.round(r * uy / 0.2) * 0.2
    v_comp = vel[:, 0] * ux + vel[:, 1] * uy + rng.normal(0.0, 0.05, n)
    v_rel = v_comp - (v_s[0] * ux + v_s[1] * uy) + rng.normal(0.0, 0.05, n)
    arr["vx"] = np.round(v_rel / np.maximum(ux, 0.2) / 0.25) * 0.25
    arr["vy"] = np.round(rng.normal(0.0, 0.15, n) / 0.25) * 0.25
    arr["vx_comp"] = v_comp * ux
    arr["vy_comp"] = v_comp * uy
    arr["rcs"] = np.round((rcs_mu + rcs_sd * rng.standard_normal(n)) / 0.5) * 0.5
    obj = kind == 1
    moving = speed > 0.5
    dyn_static = np.where(obj, rng.choice(np.array([1, 3, 5, 4]), n, p=[0.62, 0.28, 0.04, 0.06]),
                          rng.choice(np.array([1, 3, 4]), n, p=[0.55, 0.3, 0.15]))
    dyn_moving = np.where(v_comp < -0.3 * speed, 2, np.where(np.abs(v_comp) < 0.3 * speed, 6, 0))
    dyn = np.where(moving, dyn_moving, np.where(stopped & (rng.random(n) < 0.5), 7, dyn_static))
    invalid = np.where(rng.random(n) < np.where(obj, 0.9, 0.6), 0,
                       rng.choice(np.array([4, 7, 8, 9, 11, 15, 16]), n))
    ambig = np.where(rng.random(n) < np.where(obj, 0.95, 0.88), 3, rng.choice(np.array([0, 1, 2, 4]), n))
    ghost = kind == 2
    g_inv = rng.random(n) < 0.8
    invalid = np.where(ghost & g_inv, rng.choice(np.array([1, 6, 14]), n), invalid)
    ambig = np.where(ghost & ~g_inv, rng.choice(np.array([1, 2]), n), ambig)
    dyn = np.where(ghost, rng.choice(np.array([0, 4]), n), dyn)
    arr["dyn_prop"] = dyn
    arr["is_quality_valid"] = 1
    arr["ambig_state"] = ambig
    arr["invalid_state"] = invalid
    arr["pdh0"] = np.where(rng.random(n) < np.where(obj, 0.85, 0.6), 1, rng.choice(np.array([3, 6]), n))
    q = invalid == 0
    arr["x_rms"] = np.where(q, rng.integers(19, 23, n), 0)
    arr["y_rms"] = np.where(q, rng.integers(19, 25, n), 0)
    arr["vx_rms"] = np.where(q, rng.integers(16, 19, n), 0)
    arr["vy_rms"] = np.where(q, 3, 0)
    return arr
