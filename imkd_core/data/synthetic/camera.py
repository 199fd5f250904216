"""The cameras: per-camera static data (`_CameraModel`) and `render_camera`, a textured ground
plane (cv2.remap of the world's top-down texture), sky, contact shadows and boxes painted far to
near (`_painter_rank`) as shaded, per-class textured faces."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from imkd_core.data.synthetic.appearance import _FACE_N, _UNIT_CORNERS
from imkd_core.data.synthetic.config import _TEX_RES, _scaled_intrinsic, _sensor_to_ego
from imkd_core.geometry import rotation_z, transform_matrix

if TYPE_CHECKING:
    from imkd_core.data.synthetic.world import SceneWorld
    from imkd_core.rig import Rig


class _CameraModel:
    """Static per-camera data: intrinsics, extrinsics, per-pixel ground rays, sky and haze weights.

    The ground layer (texture lookup + haze) is computed at half resolution and upsampled: near the
    car the 0.15 m texture is magnified anyway, and it halves the cost of the largest image op.
    """

    def __init__(self, channel: str, size: tuple[int, int], sky: np.ndarray, haze: np.ndarray,
                 rig: Rig | None = None):
        w, h = size
        self.channel, self.size = channel, size
        self.K = _scaled_intrinsic(channel, size, rig)
        self.T_ec = _sensor_to_ego(channel, rig)
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        ground, dist, gxy, elev = self._rays(u, v)
        rows = np.flatnonzero(ground.any(1))
        self.row0 = int(rows[0]) if rows.size else h  # rows above are sky only
        a = np.clip(elev / 0.45, 0.0, 1.0)[..., None] ** 0.8
        self.bg = np.clip(haze[None, None] * (1 - a) + sky[None, None] * a, 0, 255).astype(np.uint8)
        # half-resolution ground grid over rows row0..h (pixel centres of 2x2 blocks)
        self.half_size = ((w + 1) // 2, (h - self.row0 + 1) // 2)
        uh, vh = np.meshgrid(2.0 * np.arange(self.half_size[0]) + 0.5,
                             self.row0 + 2.0 * np.arange(self.half_size[1]) + 0.5)
        ground, dist, gxy, _ = self._rays(uh, vh)
        self.gx = np.ascontiguousarray(np.where(ground, gxy[0], 0.0), np.float32)
        self.gy = np.ascontiguousarray(np.where(ground, gxy[1], 0.0), np.float32)
        fade = np.clip((dist - 95.0) / 40.0, 0.0, 1.0)
        f = np.maximum(1.0 - np.exp(-np.where(ground, dist, 1e3) / 260.0), fade * fade * (3 - 2 * fade))
        f = np.where(ground, f, 1.0)
        self.w_bg = np.ascontiguousarray(f, np.float32)
        self.w_fg = np.ascontiguousarray(1.0 - f, np.float32)
        self.bg_half = cv2.resize(self.bg[self.row0:], self.half_size, interpolation=cv2.INTER_AREA)

    def _rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground mask, ground distance, ego-frame ground (x, y) and ray elevation per pixel (u, v)."""
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
        d_ego = d_cam @ self.T_ec[:3, :3].T
        norm = np.linalg.norm(d_ego, axis=-1)
        dz = d_ego[..., 2]
        lam = np.where(dz < -1e-6, -self.T_ec[2, 3] / np.minimum(dz, -1e-6), np.inf)
        dist = lam * norm
        ground = dist < 140.0
        with np.errstate(invalid="ignore"):
            gxy = np.stack([self.T_ec[0, 3] + lam * d_ego[..., 0], self.T_ec[1, 3] + lam * d_ego[..., 1]])
        return ground, dist, gxy, np.arcsin(np.clip(dz / norm, -1.0, 1.0))


def render_camera(world: SceneWorld, channel: str, t: float, hidden: Sequence[int] = ()) -> np.ndarray:
    """BGR image of camera `channel` at time t; objects whose index is in `hidden` are left out."""
    cam = world.cameras()[channel]
    w, h = cam.size
    ex, ey, eyaw = world.ego_pose(t)
    img = cam.bg.copy()
    r0 = cam.row0
    if r0 < h:  # ground rows: texture lookup through the per-pixel ground rays, hazed with distance
        c, s = math.cos(eyaw), math.sin(eyaw)
        inv = 1.0 / _TEX_RES
        mapx = cv2.addWeighted(cam.gx, c * inv, cam.gy, -s * inv, ex * inv)
        mapy = cv2.addWeighted(cam.gx, s * inv, cam.gy, c * inv, ey * inv)
        ground = cv2.remap(world.texture, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=world.grass_bgr)
        layer = cv2.blendLinear(ground, cam.bg_half, cam.w_fg, cam.w_bg)
        img[r0:] = cv2.resize(layer, (w, h - r0), interpolation=cv2.INTER_LINEAR)

    T_gc = transform_matrix(rotation_z(eyaw), (ex, ey, 0.0)) @ cam.T_ec
    R_gc, t_gc = T_gc[:3, :3], T_gc[:3, 3]
    K = cam.K
    cen, yaw, size = world.all_boxes(t)
    rad = np.linalg.norm(size, axis=1) / 2
    rel = cen - t_gc
    z_c = rel @ R_gc[:, 2]
    dist = np.linalg.norm(rel, axis=1)
    keep = (dist < 125.0 + rad) & (z_c > -rad)
    if len(hidden):
        keep[np.asarray(hidden, np.int64)] = False
    boxes = np.flatnonzero(keep)
    if boxes.size == 0:
        return img
    # box-level frustum culling with the 8 projected corners
    cb, sb = np.cos(yaw[boxes]), np.sin(yaw[boxes])
    loc = _UNIT_CORNERS[None] * size[boxes][:, None]
    wc = np.stack([cb[:, None] * loc[..., 0] - sb[:, None] * loc[..., 1],
                   sb[:, None] * loc[..., 0] + cb[:, None] * loc[..., 1], loc[..., 2]], -1) + cen[boxes][:, None]
    pc = (wc - t_gc) @ R_gc
    zc = pc[..., 2]
    anyf = (zc > 0.2).any(1)
    allf = (zc > 0.2).all(1)
    zz = np.maximum(zc, 0.2)
    u = K[0, 0] * pc[..., 0] / zz + K[0, 2]
    v = K[1, 1] * pc[..., 1] / zz + K[1, 2]
    onimg = (u.max(1) >= 0) & (u.min(1) < w) & (v.max(1) >= 0) & (v.min(1) < h)
    sel = anyf & (onimg | ~allf)
    boxes = boxes[sel]
    if boxes.size == 0:
        return img
    rank = np.empty(world.n_objects + len(world.clutter_kind), np.int64)
    rank[boxes] = _painter_rank(wc[sel], u[sel], v[sel], allf[sel], cb[sel], sb[sel], cen[boxes], size[boxes],
                                t_gc, dist[boxes])
    _draw_shadows(world, img, cam, boxes[boxes < world.n_objects], cen, yaw, size, R_gc, t_gc, dist)
    # textured rectangles of the kept boxes
    counts = world.rect_start[boxes + 1] - world.rect_start[boxes]
    idx = np.repeat(world.rect_start[boxes] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + \
        np.arange(int(counts.sum()))
    rb = world.rect_box[idx]
    cy_, sy_ = np.cos(yaw[rb]), np.sin(yaw[rb])
    fn = _FACE_N[world.rect_face[idx]]
    nw = np.stack([cy_ * fn[:, 0] - sy_ * fn[:, 1], sy_ * fn[:, 0] + cy_ * fn[:, 1], fn[:, 2]], 1)
    # back-face culling on the face plane (any point of the face works for a planar test)
    loc = world.rect_local[idx]
    p0 = np.stack([cy_ * loc[:, 0, 0] - sy_ * loc[:, 0, 1], sy_ * loc[:, 0, 0] + cy_ * loc[:, 0, 1],
                   loc[:, 0, 2]], 1) + cen[rb]
    vis = np.einsum("ij,ij->i", nw, t_gc - p0) > 1e-6
    idx, rb, nw, loc, cy_, sy_ = idx[vis], rb[vis], nw[vis], loc[vis], cy_[vis], sy_[vis]
    rect_g = np.empty_like(loc)  # rectangle corners in the global frame
    rect_g[..., 0] = cy_[:, None] * loc[..., 0] - sy_[:, None] * loc[..., 1] + cen[rb, 0:1]
    rect_g[..., 1] = sy_[:, None] * loc[..., 0] + cy_[:, None] * loc[..., 1] + cen[rb, 1:2]
    rect_g[..., 2] = loc[..., 2] + cen[rb, 2:3]
    pc = (rect_g - t_gc) @ R_gc  # camera frame
    z = pc[..., 2]
    near = 0.2
    front = (z > near).all(1)
    some = (z > near).any(1)
    zc = np.maximum(z, near)
    uv = np.stack([K[0, 0] * pc[..., 0] / zc + K[0, 2], K[1, 1] * pc[..., 1] / zc + K[1, 2]], -1)
    x_, y_ = uv[..., 0], uv[..., 1]
    inside = (x_.max(1) >= 0) & (x_.min(1) < w) & (y_.max(1) >= 0) & (y_.min(1) < h)
    area = 0.5 * np.abs((x_ * np.roll(y_, -1, 1) - np.roll(x_, -1, 1) * y_).sum(1))
    draw = (front & inside & (area > 0.6)) | (some & ~front)  # tiny details are skipped (LOD)
    # shading and haze
    d = np.linalg.norm(rect_g.mean(1) - t_gc, axis=1)
    shade = np.where(nw[:, 2] < -0.5, 0.45, 0.62 + 0.38 * np.clip(nw @ world.sun, 0.0, 1.0))
    fog = (1.0 - np.exp(-d / 260.0))[:, None]
    col = np.clip(world.rect_col[idx] * shade[:, None] * (1 - fog) + world.haze[None] * fog, 0, 255)
    # painter's order: boxes back to front, rectangle order within a box
    order = np.lexsort((idx, rank[rb]))
    order = order[draw[order]]
    pts = np.round(uv[order] * 16.0).astype(np.int32)
    cols = col[order].astype(np.int64).tolist()
    fr = front[order].tolist()
    for k, i in enumerate(order.tolist()):
        if fr[k]:
            cv2.fillConvexPoly(img, pts[k], cols[k], cv2.LINE_AA, 4)
        else:
            p = _clip_near(pc[i], near)
            if len(p) >= 3:
                q = np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], 1)
                cv2.fillConvexPoly(img, np.round(q * 16.0).astype(np.int32), cols[k], cv2.LINE_AA, 4)
    return img


def _draw_shadows(world: SceneWorld, img: np.ndarray, cam: _CameraModel, boxes: np.ndarray, cen: np.ndarray,
                  yaw: np.ndarray, size: np.ndarray, R_gc: np.ndarray, t_gc: np.ndarray,
                  dist: np.ndarray) -> None:
    """Dark contact shadows under objects (footprint grown and shifted away from the sun)."""
    if boxes.size == 0:
        return
    boxes = boxes[np.argsort(-dist[boxes], kind="stable")]
    sun_xy = -world.sun[:2] / max(world.sun[2], 0.3)
    c, s = np.cos(yaw[boxes]), np.sin(yaw[boxes])
    lx = np.array([1.0, -1.0, -1.0, 1.0])[None] * (size[boxes, 0:1] * 0.56)
    ly = np.array([1.0, 1.0, -1.0, -1.0])[None] * (size[boxes, 1:2] * 0.56)
    off = 0.12 * size[boxes, 2:3]
    gx = c[:, None] * lx - s[:, None] * ly + cen[boxes, 0:1] + sun_xy[0] * off
    gy = s[:, None] * lx + c[:, None] * ly + cen[boxes, 1:2] + sun_xy[1] * off
    g = np.stack([gx, gy, np.full_like(gx, 0.01)], -1)
    pc = (g - t_gc) @ R_gc
    ok = (pc[..., 2] > 0.3).all(1)
    z = np.maximum(pc[..., 2], 0.3)
    K = cam.K
    uv = np.stack([K[0, 0] * pc[..., 0] / z + K[0, 2], K[1, 1] * pc[..., 1] / z + K[1, 2]], -1)
    f = (1.0 - np.exp(-dist[boxes] / 260.0))[:, None]
    col = (np.array([42.0, 44.0, 46.0]) * (1 - f) + world.haze * f).astype(np.int64).tolist()
    pts = np.round(uv * 16).astype(np.int32)
    for k in np.flatnonzero(ok).tolist():
        cv2.fillConvexPoly(img, pts[k], col[k], cv2.LINE_AA, 4)


def _painter_rank(corners: np.ndarray, u: np.ndarray, v: np.ndarray, in_front: np.ndarray, cos_y: np.ndarray,
                  sin_y: np.ndarray, centres: np.ndarray, sizes: np.ndarray, cam: np.ndarray,
                  dist: np.ndarray) -> np.ndarray:
    """Back-to-front drawing rank of boxes (0 is drawn first).

    Sorting by distance alone fails for long boxes (a pedestrian behind a trailer would be painted
    over it). For pairs whose image boxes overlap: if a face plane of one box has the other box
    entirely on its outer side, the plane separates them and the box on the camera's side of it
    is in front (for z-up boxes the face planes of the two boxes contain a separating plane
    whenever they are disjoint). These constraints are sorted topologically, distance (far first)
    breaking ties and the rare cycles.
    """
    n = len(corners)
    base = np.argsort(-dist, kind="stable")
    if n < 2:
        return np.argsort(base)
    big = 1e9
    x0 = np.where(in_front, u.min(1), -big)
    x1 = np.where(in_front, u.max(1), big)
    y0 = np.where(in_front, v.min(1), -big)
    y1 = np.where(in_front, v.max(1), big)
    ov = (x0[:, None] <= x1[None]) & (x0[None] <= x1[:, None]) & (y0[:, None] <= y1[None]) & (y0[None] <= y1[:, None])
    ii, jj = np.nonzero(np.triu(ov, 1))
    if ii.size == 0:
        return np.argsort(base)
    # face planes: outward normals (n, 6, 3) and offsets (n, 6); a point p is outside face f if n.p > off
    nrm = np.zeros((n, 6, 3))
    nrm[:, 0, :2] = np.stack([cos_y, sin_y], 1)
    nrm[:, 2, :2] = np.stack([-sin_y, cos_y], 1)
    nrm[:, 4, 2] = 1.0
    nrm[:, 1], nrm[:, 3], nrm[:, 5] = -nrm[:, 0], -nrm[:, 2], -nrm[:, 4]
    half = np.repeat(sizes / 2, 2, axis=1)  # l, l, w, w, h, h
    off = np.einsum("nfk,nk->nf", nrm, centres) + half
    cam_out = np.einsum("nfk,k->nf", nrm, cam) - off > 1e-6

    def separated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(P, 6): face f of box a has all corners of box b on its outer side."""
        return (np.einsum("pfk,pck->pfc", nrm[a], corners[b]) - off[a][..., None] >= -1e-6).all(-1)

    sep_ab, sep_ba = separated(ii, jj), separated(jj, ii)
    # ii in front of jj: a plane of ii with jj outside and the camera inside (ii's side), or
    # a plane of jj with ii outside and the camera outside too (ii's side)
    a_first = (sep_ab & ~cam_out[ii]).any(1) | (sep_ba & cam_out[jj]).any(1)
    b_first = (sep_ba & ~cam_out[jj]).any(1) | (sep_ab & cam_out[ii]).any(1)
    after: list[list[int]] = [[] for _ in range(n)]  # after[k]: boxes that wait for k to be drawn
    indeg = np.zeros(n, np.int64)
    for a, b, fa, fb in zip(ii.tolist(), jj.tolist(), a_first.tolist(), b_first.tolist()):
        if fa and not fb:
            after[b].append(a)
            indeg[a] += 1
        elif fb and not fa:
            after[a].append(b)
            indeg[b] += 1
    if not indeg.any():
        return np.argsort(base)
    pri = np.argsort(base)  # priority: far first
    heap = [(int(pri[k]), k) for k in range(n) if indeg[k] == 0]
    heapq.heapify(heap)
    out: list[int] = []
    done = np.zeros(n, bool)
    while len(out) < n:
        if not heap:  # a cycle: release the farthest remaining box
            k = int(min((pri[k], k) for k in range(n) if not done[k])[1])
            indeg[k] = 0
            heap.append((int(pri[k]), k))
        _, k = heapq.heappop(heap)
        if done[k]:
            continue
        done[k] = True
        out.append(k)
        for m in after[k]:
            indeg[m] -= 1
            if indeg[m] == 0 and not done[m]:
                heapq.heappush(heap, (int(pri[m]), m))
    rank = np.empty(n, np.int64)
    rank[np.array(out)] = np.arange(n)
    return rank


def _clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """Clip a 3D polygon (k, 3) in the camera frame to z >= near (Sutherland-Hodgman, one plane)."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            f = (near - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out).reshape(-1, 3)
