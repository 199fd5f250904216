"""Rotation and rigid-transform maths, the one home for both quaternion conventions.

nuScenes records store quaternions as (w, x, y, z); geometry_msgs and tf2 as (x, y, z, w).
Every function names its convention (`quat_wxyz_*`, `quat_xyzw_*`), so a caller never guesses.
Arrays are float64 with the components on the last axis; matrices are (..., 3, 3) rotations
or (..., 4, 4) homogeneous transforms mapping child-frame points into the parent frame.

The `*_one` functions are scalar twins of the vectorised ones for a single pose: on the TF
lookup path one 4x4 is built per call, where numpy's per-call overhead costs more than the
maths (tests hold each twin to its vectorised form).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_WXYZ_FROM_XYZW = [3, 0, 1, 2]
_XYZW_FROM_WXYZ = [1, 2, 3, 0]


# ----------------------------------------------------------------------------- conventions
def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> (w, x, y, z)."""
    return np.asarray(q, dtype=np.float64)[..., _WXYZ_FROM_XYZW]


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) -> (x, y, z, w)."""
    return np.asarray(q, dtype=np.float64)[..., _XYZW_FROM_WXYZ]


# ----------------------------------------------------------------------------- quaternion <-> matrix
def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), normalised here -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), normalised here -> (..., 3, 3) rotation matrices."""
    return quat_wxyz_to_matrix(xyzw_to_wxyz(q))


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0.

    Shepperd's method (per matrix the best-conditioned of four formulas), vectorised.
    """
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    d = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]], axis=1)
    choice = d.argmax(axis=1)
    q = np.empty((m.shape[0], 4))
    s = choice == 3
    q[s, 0] = m[s, 2, 1] - m[s, 1, 2]
    q[s, 1] = m[s, 0, 2] - m[s, 2, 0]
    q[s, 2] = m[s, 1, 0] - m[s, 0, 1]
    q[s, 3] = 1 + d[s, 3]
    for i in range(3):  # the three diagonal-dominant cases (a loop over cases, not matrices)
        j, k = (i + 1) % 3, (i + 2) % 3
        s = choice == i
        q[s, i] = 1 - d[s, 3] + 2 * m[s, i, i]
        q[s, j] = m[s, j, i] + m[s, i, j]
        q[s, k] = m[s, k, i] + m[s, i, k]
        q[s, 3] = m[s, k, j] - m[s, j, k]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1
    return q.reshape(R.shape[:-2] + (4,))


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0."""
    return xyzw_to_wxyz(matrix_to_quat_xyzw(R))


# ----------------------------------------------------------------------------- quaternion algebra
def quat_wxyz_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (..., 4) quaternions (w, x, y, z): rotate by b, then by a."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_wxyz_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate of (..., 4) quaternions (w, x, y, z): the inverse of a unit quaternion."""
    return np.asarray(q, np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_wxyz_yaw(q: np.ndarray) -> np.ndarray:
    """Heading of the rotated +x axis of (..., 4) quaternions (w, x, y, z), in (-pi, pi]: the
    devkit evaluator's `quaternion_yaw` (not pyquaternion's yaw_pitch_roll, which differs
    under roll/pitch)."""
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def quat_xyzw_yaw(q: np.ndarray) -> np.ndarray:
    """quat_wxyz_yaw for (..., 4) quaternions (x, y, z, w)."""
    x, y, z, w = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def yaw_to_quat_xyzw(yaw: np.ndarray) -> np.ndarray:
    """(...,) yaw about +z -> (..., 4) quaternions (0, 0, sin(yaw/2), cos(yaw/2))."""
    yaw = np.asarray(yaw, dtype=np.float64)
    q = np.zeros(yaw.shape + (4,))
    q[..., 2] = np.sin(0.5 * yaw)
    q[..., 3] = np.cos(0.5 * yaw)
    return q


def yaw_to_quat_wxyz(yaw: np.ndarray) -> np.ndarray:
    """(...,) yaw about +z -> (..., 4) quaternions (cos(yaw/2), 0, 0, sin(yaw/2))."""
    return xyzw_to_wxyz(yaw_to_quat_xyzw(yaw))


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation of (..., 4) unit quaternions along the shorter arc.

    Component-wise, so it holds for either convention (both inputs in the same one)."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)[..., None]
    d = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(d < 0.0, -q1, q1)  # q and -q are the same rotation: take the short way
    d = np.minimum(np.abs(d), 1.0)
    theta = np.arccos(d)
    sin_t = np.sin(theta)
    small = sin_t < 1e-9  # (nearly) identical rotations: plain lerp is exact enough
    safe = np.where(small, 1.0, sin_t)
    w0 = np.where(small, 1.0 - a, np.sin((1.0 - a) * theta) / safe)
    w1 = np.where(small, a, np.sin(a * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- rigid transforms
def rotation_z(yaw: float) -> np.ndarray:
    """3x3 rotation about +z by `yaw` radians."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def transform_matrix(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def pose_matrix_wxyz(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    """4x4 transform of a nuScenes record (translation, rotation as a (w, x, y, z) quaternion)."""
    return transform_matrix(quat_wxyz_to_matrix(np.asarray(rotation_wxyz, dtype=np.float64)), translation)


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid (4, 4) or (..., 4, 4) transforms (R^T, -R^T t), without a general inverse."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim == 2:
        out = np.eye(4)
        Rt = T[:3, :3].T
        out[:3, :3] = Rt
        out[:3, 3] = -(Rt @ T[:3, 3])
        return out
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


# ----------------------------------------------------------------------------- scalar twins (one pose)
def pose_matrix_xyzw_one(q: Sequence[float], p: Sequence[float]) -> np.ndarray:
    """4x4 from one quaternion (x, y, z, w), normalised here, and a translation (scalar maths)."""
    x, y, z, w = q
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), p[0]],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), p[1]],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), p[2]],
        [0.0, 0.0, 0.0, 1.0]])


def matrix_to_quat_xyzw_one(R: np.ndarray) -> np.ndarray:
    """One 3x3 (or the rotation block of a 4x4) -> unit quaternion (x, y, z, w), Shepperd's method
    in scalar maths (the sign of w is not normalised; q and -q are the same rotation)."""
    m = np.asarray(R, dtype=np.float64)
    m00, m01, m02 = float(m[0, 0]), float(m[0, 1]), float(m[0, 2])
    m10, m11, m12 = float(m[1, 0]), float(m[1, 1]), float(m[1, 2])
    m20, m21, m22 = float(m[2, 0]), float(m[2, 1]), float(m[2, 2])
    tr = m00 + m11 + m22
    if tr > 0.0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = ((m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s, 0.25 * s)
    elif m00 > m11 and m00 > m22:
        s = 2.0 * math.sqrt(1.0 + m00 - m11 - m22)
        q = (0.25 * s, (m01 + m10) / s, (m02 + m20) / s, (m21 - m12) / s)
    elif m11 > m22:
        s = 2.0 * math.sqrt(1.0 + m11 - m00 - m22)
        q = ((m01 + m10) / s, 0.25 * s, (m12 + m21) / s, (m02 - m20) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m22 - m00 - m11)
        q = ((m02 + m20) / s, (m12 + m21) / s, 0.25 * s, (m10 - m01) / s)
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return np.array([q[0] / n, q[1] / n, q[2] / n, q[3] / n])


def slerp_one(q0: Sequence[float], q1: Sequence[float], a: float) -> list[float]:
    """slerp of two unit quaternions at one alpha, in scalar maths (unnormalised result, as
    pose_matrix_xyzw_one normalises)."""
    d = q0[0] * q1[0] + q0[1] * q1[1] + q0[2] * q1[2] + q0[3] * q1[3]
    if d < 0.0:
        q1, d = [-v for v in q1], -d
    theta = math.acos(min(d, 1.0))
    st = math.sin(theta)
    if st < 1e-9:
        w0, w1 = 1.0 - a, a
    else:
        w0, w1 = math.sin((1.0 - a) * theta) / st, math.sin(a * theta) / st
    return [w0 * u + w1 * v for u, v in zip(q0, q1)]

