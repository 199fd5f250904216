"""imkd_core.geometry against closed forms (Rodrigues, yaw rotations, pyquaternion), in both
quaternion conventions, and the scalar twins against their vectorised forms."""

from __future__ import annotations

import numpy as np
import pytest
from pyquaternion import Quaternion

from imkd_core import geometry as G

RNG = np.random.default_rng(0)


def rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: 3x3 rotation about `axis` by `angle`."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rot(rng.normal(size=3), rng.uniform(-np.pi, np.pi))
    T[:3, 3] = rng.normal(size=3) * 3
    return T


def random_quats_wxyz(n: int) -> np.ndarray:
    q = RNG.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def half_turns() -> list[np.ndarray]:
    """Rotations whose trace is <= 0 (the non-trace branches of Shepperd's method)."""
    return ([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]
            + [rot(ax, np.pi - 1e-3) for ax in np.eye(3)] + [rot((1, 1, 0), np.pi), rot((0, 1, 1), np.pi)])


def test_wxyz_matches_pyquaternion_and_xyzw_is_the_same_rotation() -> None:
    q = random_quats_wxyz(50)
    R = G.quat_wxyz_to_matrix(q)
    for qi, Ri in zip(q, R):
        np.testing.assert_allclose(Ri, Quaternion(qi).rotation_matrix, atol=1e-12)
    xyzw = G.wxyz_to_xyzw(q)
    np.testing.assert_array_equal(xyzw[:, 3], q[:, 0])
    np.testing.assert_array_equal(G.xyzw_to_wxyz(xyzw), q)
    np.testing.assert_array_equal(G.quat_xyzw_to_matrix(xyzw), R)
    # normalised here: a scaled quaternion is the same rotation
    np.testing.assert_allclose(G.quat_wxyz_to_matrix(3.0 * q), R, atol=1e-12)


def test_matrix_to_quaternion_round_trip_including_half_turns() -> None:
    R = np.concatenate([G.quat_wxyz_to_matrix(random_quats_wxyz(200)), np.stack(half_turns()), np.eye(3)[None]])
    q = G.matrix_to_quat_xyzw(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(G.quat_xyzw_to_matrix(q), R, atol=1e-12)
    np.testing.assert_array_equal(G.matrix_to_quat_wxyz(R), G.xyzw_to_wxyz(q))
    assert G.matrix_to_quat_xyzw(R[0]).shape == (4,)


def test_scalar_twins_equal_the_vectorised_forms() -> None:
    rng = np.random.default_rng(3)
    mats = [random_pose(rng)[:3, :3] for _ in range(100)] + half_turns()
    for R in mats:
        q = G.matrix_to_quat_xyzw_one(R)
        assert abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(G.quat_xyzw_to_matrix(q), R, atol=1e-12)
        np.testing.assert_allclose(q * np.sign(q[3] or 1.0), G.matrix_to_quat_xyzw(R), atol=1e-12)
        T = G.pose_matrix_xyzw_one(q.tolist(), [1.0, -2.0, 3.0])
        np.testing.assert_allclose(T, G.transform_matrix(G.quat_xyzw_to_matrix(q), [1, -2, 3]), atol=1e-15)
        np.testing.assert_array_equal(G.invert_transform(T), G.invert_transform(T[None])[0])
    q0, q1 = G.matrix_to_quat_xyzw(np.stack(mats[:50])), G.matrix_to_quat_xyzw(np.stack(mats[50:100]))
    alpha = rng.uniform(0, 1, size=50)
    one = np.array([G.slerp_one(a.tolist(), b.tolist(), t) for a, b, t in zip(q0, q1, alpha)])
    np.testing.assert_allclose(one / np.linalg.norm(one, axis=1, keepdims=True), G.slerp(q0, q1, alpha), atol=1e-12)


def test_slerp_matches_constant_angular_velocity() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        axis = rng.normal(size=3)
        a0, a1 = rng.uniform(-3, 3, size=2)
        q0 = G.matrix_to_quat_xyzw_one(rot(axis, a0))
        q1 = G.matrix_to_quat_xyzw_one(rot(axis, a1))
        alpha = rng.uniform(0, 1, size=7)
        got = G.quat_xyzw_to_matrix(G.slerp(np.broadcast_to(q0, (7, 4)), np.broadcast_to(q1, (7, 4)), alpha))
        # about one axis, the shortest arc between a0 and a1 (wrapped to (-pi, pi])
        d = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
        for k in range(7):
            np.testing.assert_allclose(got[k], rot(axis, a0 + alpha[k] * d), atol=1e-9)


def test_slerp_short_arc_and_degenerate_cases() -> None:
    q = G.matrix_to_quat_xyzw_one(rot((0, 0, 1), 0.3))
    # -q is the same rotation: interpolating to it must stay at that rotation
    np.testing.assert_allclose(G.quat_xyzw_to_matrix(G.slerp(q, -q, 0.5)), rot((0, 0, 1), 0.3), atol=1e-12)
    np.testing.assert_allclose(G.quat_xyzw_to_matrix(G.slerp(q, q, 0.25)), rot((0, 0, 1), 0.3), atol=1e-12)
    q2 = G.matrix_to_quat_xyzw_one(rot((0, 0, 1), 0.3 + 1e-10))
    assert np.isfinite(G.slerp(q, q2, 0.5)).all()


@pytest.mark.parametrize("convention", ["wxyz", "xyzw"])
def test_yaw_closed_form(convention: str) -> None:
    yaw = np.linspace(-3.1, 3.1, 13)
    Rz = np.stack([G.rotation_z(y) for y in yaw])
    np.testing.assert_allclose(Rz, np.stack([rot((0, 0, 1), y) for y in yaw]), atol=1e-12)
    to_q, to_R, to_yaw = (getattr(G, f"yaw_to_quat_{convention}"), getattr(G, f"quat_{convention}_to_matrix"),
                          getattr(G, f"quat_{convention}_yaw"))
    np.testing.assert_allclose(to_R(to_q(yaw)), Rz, atol=1e-12)
    np.testing.assert_allclose(to_yaw(getattr(G, f"matrix_to_quat_{convention}")(Rz)), yaw, atol=1e-12)


def test_yaw_of_a_tilted_box_is_the_heading_of_its_x_axis() -> None:
    """quat_*_yaw is the heading of the rotated +x axis (the devkit's quaternion_yaw)."""
    q = random_quats_wxyz(40)
    x_axis = G.quat_wxyz_to_matrix(q)[:, :, 0]
    np.testing.assert_allclose(G.quat_wxyz_yaw(q), np.arctan2(x_axis[:, 1], x_axis[:, 0]), atol=1e-12)
    np.testing.assert_allclose(G.quat_xyzw_yaw(G.wxyz_to_xyzw(q)), G.quat_wxyz_yaw(q), atol=0)


def test_multiply_and_conjugate_compose_rotations() -> None:
    a, b = random_quats_wxyz(30), random_quats_wxyz(30)
    np.testing.assert_allclose(G.quat_wxyz_to_matrix(G.quat_wxyz_multiply(a, b)),
                               G.quat_wxyz_to_matrix(a) @ G.quat_wxyz_to_matrix(b), atol=1e-12)
    ident = G.quat_wxyz_multiply(G.quat_wxyz_conjugate(a), a)
    np.testing.assert_allclose(ident, np.broadcast_to([1.0, 0, 0, 0], (30, 4)), atol=1e-12)


def test_pose_matrix_and_invert_transform() -> None:
    q = random_quats_wxyz(1)[0]
    T = G.pose_matrix_wxyz([1.0, 2.0, 3.0], q)
    np.testing.assert_allclose(T[:3, :3], Quaternion(q).rotation_matrix, atol=1e-12)
    np.testing.assert_array_equal(T[:3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
    np.testing.assert_allclose(G.invert_transform(T) @ T, np.eye(4), atol=1e-12)
    rng = np.random.default_rng(2)
    Ts = np.stack([random_pose(rng) for _ in range(5)])
    np.testing.assert_allclose(G.invert_transform(Ts) @ Ts, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12)
    np.testing.assert_allclose(G.invert_transform(Ts), np.linalg.inv(Ts), atol=1e-12)
