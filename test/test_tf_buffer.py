"""TfBuffer: chains, interpolation against closed-form motion, errors, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from imkd_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    ExtrapolationException,
    LookupException,
    TfBuffer,
    TransformError,
    UnknownFrameError,
)

MS = 1_000_000
S = 1_000_000_000


def rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: 3x3 rotation about `axis` by `angle`."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def pose(yaw: float = 0.0, xyz=(0.0, 0.0, 0.0), axis=(0.0, 0.0, 1.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rot(np.asarray(axis), yaw)
    T[:3, 3] = xyz
    return T


def random_pose(rng: np.random.Generator) -> np.ndarray:
    return pose(rng.uniform(-np.pi, np.pi), rng.normal(size=3) * 3, axis=rng.normal(size=3))


# Ego on a circular arc: constant speed V along its heading, constant yaw rate W.
V, W = 12.0, 0.4


def ego_pose(t_ns: int | float) -> np.ndarray:
    """T_odom_base at time t (closed form of constant velocity + yaw rate)."""
    t = t_ns / S
    yaw = W * t
    return pose(yaw, (V / W * np.sin(yaw), V / W * (1 - np.cos(yaw)), 0.3))


def feed_ego(tf: TfBuffer, t0: int, t1: int, period: int, parent: str = "odom", child: str = "base_link") -> None:
    for t in range(t0, t1 + 1, period):
        tf.set_transform(parent, child, t, ego_pose(t))


def sagitta(period_ns: int) -> float:
    """Max distance between the arc and its chord over one sample period (lerp error bound)."""
    return V / W * (1 - np.cos(W * period_ns / S / 2))


# ----------------------------------------------------------------------------- chains
def build_tree(rng: np.random.Generator) -> tuple[TfBuffer, dict[str, np.ndarray]]:
    """map -> odom -> base_link -> {cam -> cam_optical, radar}; all static."""
    tf = TfBuffer()
    edges = {("map", "odom"): random_pose(rng), ("odom", "base_link"): random_pose(rng),
             ("base_link", "cam"): random_pose(rng), ("cam", "cam_optical"): random_pose(rng),
             ("base_link", "radar"): random_pose(rng)}
    for (p, c), T in edges.items():
        tf.set_transform(p, c, 0, T, static=True)
    return tf, {c: T for (_, c), T in edges.items()}


def test_chain_four_levels_both_directions():
    tf, E = build_tree(np.random.default_rng(3))
    expect = E["odom"] @ E["base_link"] @ E["cam"] @ E["cam_optical"]  # T_map_cam_optical
    np.testing.assert_allclose(tf.lookup("map", "cam_optical", 5 * S), expect, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("cam_optical", "map", 5 * S), np.linalg.inv(expect), atol=1e-10)
    np.testing.assert_allclose(tf.lookup("base_link", "base_link", 0), np.eye(4))
    assert tf.frames() == sorted(["map", "odom", "base_link", "cam", "cam_optical", "radar"])
    assert tf.parent("cam_optical") == "cam" and tf.parent("map") is None


def test_lookup_between_two_leaves_via_common_ancestor():
    tf, E = build_tree(np.random.default_rng(4))
    # radar points -> optical camera frame: up to base_link, then down
    expect = np.linalg.inv(E["cam"] @ E["cam_optical"]) @ E["radar"]
    got = tf.lookup("cam_optical", "radar", 0)
    np.testing.assert_allclose(got, expect, atol=1e-10)
    p_radar = np.array([10.0, -2.0, 0.5, 1.0])
    p_base = E["radar"] @ p_radar
    np.testing.assert_allclose(E["cam"] @ E["cam_optical"] @ (got @ p_radar), p_base, atol=1e-10)


def test_lookup_batch_equals_single_lookups():
    tf = TfBuffer()
    feed_ego(tf, 0, 2 * S, 20 * MS)
    tf.set_transform("base_link", "radar", 0, pose(0.7, (3.6, 0.0, 0.7)), static=True)
    stamps = np.array([5 * MS, 333 * MS, 1_000 * MS, 1_999 * MS])
    batch = tf.lookup_batch("odom", "radar", stamps)
    for k, t in enumerate(stamps):
        np.testing.assert_allclose(batch[k], tf.lookup("odom", "radar", int(t)), atol=1e-12)


# ----------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("period", [10 * MS, 50 * MS])
def test_interpolation_against_closed_form_ego_motion(period: int):
    tf = TfBuffer()
    feed_ego(tf, 0, 3 * S, period)
    rng = np.random.default_rng(5)
    bound = sagitta(period) + 1e-9
    for t in rng.integers(0, 3 * S, size=200):
        got, want = tf.lookup("odom", "base_link", int(t)), ego_pose(int(t))
        # constant yaw rate = constant angular velocity about z: slerp is exact
        np.testing.assert_allclose(got[:3, :3], want[:3, :3], atol=1e-9)
        # lerp of the position deviates from the arc by at most the sagitta
        assert np.linalg.norm(got[:3, 3] - want[:3, 3]) <= bound
    assert sagitta(10 * MS) < 1e-4  # at odometry rates the interpolation is sub-0.1 mm


def test_interpolation_exact_for_straight_motion_and_3d_rotation():
    tf = TfBuffer()
    axis = np.array([0.3, -0.5, 0.8])
    for k in range(11):
        t = k * 100 * MS
        tf.set_transform("world", "body", t, pose(0.25 * k, (2.0 * k, -1.0 * k, 0.5 * k), axis=axis))
    for t in (37 * MS, 450 * MS, 999 * MS):
        s = t / (100 * MS)
        np.testing.assert_allclose(tf.lookup("world", "body", t), pose(0.25 * s, (2 * s, -s, 0.5 * s), axis=axis),
                                   atol=1e-9)


def test_out_of_order_inserts_equal_in_order():
    stamps = list(range(0, 2 * S + 1, 25 * MS))
    rng = np.random.default_rng(6)
    shuffled = list(rng.permutation(stamps))
    a, b = TfBuffer(), TfBuffer()
    for t in stamps:
        a.set_transform("odom", "base_link", t, ego_pose(t))
    for t in shuffled:
        assert b.set_transform("odom", "base_link", int(t), ego_pose(int(t)))
    assert a.history_size("base_link") == b.history_size("base_link") == len(stamps)
    assert b.time_range("base_link") == (0, 2 * S)
    q = rng.integers(0, 2 * S, size=50)
    np.testing.assert_allclose(a.lookup_batch("odom", "base_link", q), b.lookup_batch("odom", "base_link", q))
    # the same stamp again replaces the sample
    b.set_transform("odom", "base_link", 1 * S, pose(0.0, (1.0, 2.0, 3.0)))
    np.testing.assert_allclose(b.lookup("odom", "base_link", 1 * S), pose(0.0, (1.0, 2.0, 3.0)), atol=1e-12)
    assert b.history_size("base_link") == len(stamps)


def test_latest_common_time_when_stamp_is_none():
    tf = TfBuffer()
    feed_ego(tf, 0, 1 * S, 10 * MS)                    # odom -> base_link up to 1.00 s
    for t in range(0, 900 * MS + 1, 100 * MS):        # base_link -> turret up to 0.90 s
        tf.set_transform("base_link", "turret", t, pose(t / S))
    got = tf.lookup("odom", "turret", None)
    np.testing.assert_allclose(got, ego_pose(900 * MS) @ pose(0.9), atol=1e-4)


# ----------------------------------------------------------------------------- errors
def test_extrapolation_within_tolerance_holds_nearest_sample_beyond_raises():
    tf = TfBuffer(max_extrapolation_ns=50 * MS)
    feed_ego(tf, 1 * S, 2 * S, 10 * MS)
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 2 * S + 40 * MS), ego_pose(2 * S), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 1 * S - 50 * MS), ego_pose(1 * S), atol=1e-12)
    with pytest.raises(ExtrapolationError) as ei:
        tf.lookup("base_link", "odom", 2 * S + 51 * MS)
    e = ei.value
    assert (e.parent, e.child, e.stamp_ns, e.oldest_ns, e.newest_ns) == ("odom", "base_link", 2 * S + 51 * MS,
                                                                       1 * S, 2 * S)
    msg = str(e)
    assert "'base_link'" in msg and "'odom'" in msg and "after the newest" in msg and "2.000000 s" in msg
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        tf.lookup("odom", "base_link", 1 * S - 51 * MS)
    assert isinstance(e, TransformError) and isinstance(e, LookupError)
    assert tf.can_transform("odom", "base_link", 2 * S + 10 * MS)
    assert not tf.can_transform("odom", "base_link", 3 * S)


def test_single_sample_edge_and_zero_tolerance():
    tf = TfBuffer(max_extrapolation_ns=0)
    tf.set_transform("odom", "base_link", 5 * S, pose(0.1, (1, 2, 3)))
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 5 * S), pose(0.1, (1, 2, 3)), atol=1e-12)
    with pytest.raises(ExtrapolationError):
        tf.lookup("odom", "base_link", 5 * S + 1)


def test_unknown_frame_error_names_the_frame_and_known_frames():
    tf, _ = build_tree(np.random.default_rng(7))
    with pytest.raises(UnknownFrameError, match="'lidar'.*known frames: .*'base_link'"):
        tf.lookup("base_link", "lidar", 0)
    with pytest.raises(UnknownFrameError):
        tf.lookup("nowhere", "nowhere", 0)
    assert not tf.can_transform("lidar", "base_link")


def test_disconnected_trees_raise_connectivity_error():
    tf, _ = build_tree(np.random.default_rng(8))
    tf.set_transform("other_world", "drone", 0, pose(0.2), static=True)
    with pytest.raises(ConnectivityError, match="'drone'.*'other_world'"):
        tf.lookup("cam", "drone", 0)
    assert not tf.can_transform_full("cam", 0, "drone", 0, "map")


def test_malformed_transforms_and_cycles_are_rejected():
    tf = TfBuffer()
    tf.set_transform("a", "b", 0, np.eye(4), static=True)
    tf.set_transform("b", "c", 0, np.eye(4), static=True)
    with pytest.raises(ValueError, match="cycle"):
        tf.set_transform("c", "a", 0, np.eye(4))
    with pytest.raises(ValueError, match="proper rotation"):
        tf.set_transform("a", "d", 0, np.diag([0.0, 0.0, 0.0, 1.0]))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tf.set_transform("a", "d", 0, bad)
    with pytest.raises(ValueError, match="4x4"):
        tf.set_transform("a", "d", 0, np.eye(3))
    with pytest.raises(ValueError, match="bad frame ids"):
        tf.set_transform("a", "a", 0, np.eye(4))
    small = TfBuffer(max_edges=2)
    small.set_transform("a", "b", 0, np.eye(4))
    small.set_transform("a", "c", 0, np.eye(4))
    with pytest.raises(ValueError, match="full"):
        small.set_transform("a", "d", 0, np.eye(4))


# ----------------------------------------------------------------------------- topology changes
def test_static_and_dynamic_mix_and_leading_slash():
    tf = TfBuffer()
    feed_ego(tf, 0, 1 * S, 10 * MS, parent="/odom")
    cam = pose(-np.pi / 2, (1.5, 0.0, 1.6), axis=(1, 0, 0))
    tf.set_transform("base_link", "cam_optical", 0, cam, static=True)  # stamp ignored
    for t in (1, 123 * MS, 1 * S):  # (0 would mean "latest", as in tf2)
        np.testing.assert_allclose(tf.lookup("odom", "cam_optical", t), ego_pose(t) @ cam, atol=1e-4)
    assert tf.time_range("cam_optical") is None and tf.time_range("base_link") == (0, 1 * S)


def test_lookup_at_time_zero_is_the_latest_common_time():
    """tf2's convention: Time() (0) asks for the newest transform the whole chain can give."""
    tf = TfBuffer()
    feed_ego(tf, 0, 2 * S, 10 * MS)
    tf.set_transform("base_link", "radar", 0, pose(0.2, (3.0, 0.0, 0.5)), static=True)
    tf.set_transform("map", "odom", 0, np.eye(4), static=True)
    latest = ego_pose(2 * S) @ pose(0.2, (3.0, 0.0, 0.5))
    np.testing.assert_allclose(tf.lookup("odom", "radar", 0), latest, atol=1e-9)
    np.testing.assert_allclose(tf.lookup("odom", "radar"), latest, atol=1e-9)
    np.testing.assert_allclose(tf.lookup_full("base_link", 0, "radar", 0, "odom"),
                               pose(0.2, (3.0, 0.0, 0.5)), atol=1e-9)
    # a chain of two dynamic edges: the older newest stamp of the two is the latest common time
    for k in range(11):
        tf.set_transform("base_link", "turret", k * 100 * MS, pose(k * 0.1))
    np.testing.assert_allclose(tf.lookup("odom", "turret", 0), ego_pose(1 * S) @ pose(1.0), atol=1e-9)
    assert tf.can_transform("map", "turret", 0) and tf.latest_common_time("map", "turret") == 1 * S
    with pytest.raises(ExtrapolationException):  # tf2's names are the same classes
        tf.lookup("odom", "turret", 1_500 * MS)
    with pytest.raises(LookupException):
        tf.lookup("odom", "nowhere", 0)


def test_history_is_bounded_by_time_not_by_sample_count():
    """1 kHz odometry for 12 s: the default buffer holds tf2's 10 s of it, whatever the rate."""
    tf = TfBuffer()
    T = pose(0.1, (1.0, 0.0, 0.0))
    for k in range(12_000):
        tf.set_transform("odom", "base_link", k * MS, T)
    assert tf.time_range("base_link") == (1_999 * MS, 11_999 * MS)
    assert tf.history_size("base_link") == 10_001
    with pytest.raises(ExtrapolationError, match="extrapolation into the past"):
        tf.lookup("odom", "base_link", 1_000 * MS)


def test_reparenting_replaces_the_edge():
    tf = TfBuffer()
    tf.set_transform("base_link", "cam", 0, pose(0.1), static=True)
    tf.set_transform("mount", "cam", 0, pose(0.2), static=True)
    assert tf.parent("cam") == "mount"
    assert "base_link" not in tf.frames()  # no longer mentioned by any edge
    with pytest.raises(UnknownFrameError):
        tf.lookup("base_link", "cam", 0)
    # static -> dynamic on the same edge
    tf.set_transform("mount", "cam", 1 * S, pose(0.3))
    assert tf.time_range("cam") == (1 * S, 1 * S)


def test_clear_drops_dynamic_keeps_static():
    tf = TfBuffer()
    feed_ego(tf, 0, 1 * S, 10 * MS)
    tf.set_transform("base_link", "radar", 0, pose(0.5), static=True)
    tf.clear()
    assert tf.history_size() == 0
    np.testing.assert_allclose(tf.lookup("base_link", "radar", 123), pose(0.5))
    assert not tf.can_transform("odom", "radar", 0)
    # after a bag loop the old timeline is gone: older stamps are accepted again
    feed_ego(tf, 0, 100 * MS, 10 * MS)
    assert tf.can_transform("odom", "radar", 50 * MS)
    tf.clear(static=True)
    assert tf.frames() == []


# ----------------------------------------------------------------------------- memory
def test_history_is_bounded_by_cache_time_and_count():
    T = pose(0.3, (1.0, 2.0, 0.0))
    tf = TfBuffer(cache_time_ns=2 * S)
    for k in range(4_000):  # 20 s at 200 Hz
        tf.set_transform("odom", "base_link", k * 5 * MS, T)
    assert tf.history_size("base_link") == 401  # newest - 2 s .. newest inclusive
    assert tf.time_range("base_link") == (17_995 * MS, 19_995 * MS)
    assert len(tf._dynamic["base_link"].stamps) < 4 * 401  # amortised growth: < 4x the live window
    assert not tf.set_transform("odom", "base_link", 10 * S, np.eye(4))  # older than the window
    capped = TfBuffer(cache_time_ns=100 * S, max_samples_per_edge=256)
    for k in range(3_000):
        capped.set_transform("odom", "base_link", k * MS, pose(k * 1e-3))
    assert capped.history_size("base_link") == 256
    hist = capped._dynamic["base_link"]
    assert len(hist.stamps) <= 2 * 256 + 1  # preallocated arrays never grow past 2x the cap
    np.testing.assert_allclose(capped.lookup("odom", "base_link", 2_999 * MS), pose(2.999), atol=1e-12)


# ----------------------------------------------------------------------------- lookup_full
def test_lookup_full_compensates_ego_motion():
    """A static world point seen by a radar at t_s lands where it is in base_link at t_f."""
    tf = TfBuffer()
    period = 10 * MS
    feed_ego(tf, 0, 3 * S, period)
    mount = pose(0.6, (3.4, 0.8, 0.6))
    tf.set_transform("base_link", "radar", 0, mount, static=True)
    rng = np.random.default_rng(9)
    for _ in range(20):
        t_s, t_f = (int(x) for x in sorted(rng.integers(0, 3 * S, size=2)))
        P = np.append(rng.uniform(-50, 50, 3), 1.0)  # fixed in odom
        p_radar = np.linalg.inv(ego_pose(t_s) @ mount) @ P
        got = tf.lookup_full("base_link", t_f, "radar", t_s, "odom") @ p_radar
        want = np.linalg.inv(ego_pose(t_f)) @ P
        # the error is bounded by the interpolation error at the two stamps (plus lever arm)
        assert np.linalg.norm(got[:3] - want[:3]) < 2 * sagitta(period) + 1e-6
    batch = tf.lookup_full_batch("base_link", 2 * S, "radar", [1 * S, 1_500 * MS], "odom")
    np.testing.assert_allclose(batch[1], tf.lookup_full("base_link", 2 * S, "radar", 1_500 * MS, "odom"))
    # tf2 semantics: with equal stamps it is the plain lookup
    np.testing.assert_allclose(tf.lookup_full("base_link", S, "radar", S, "odom"), mount, atol=1e-9)


def test_history_matches_a_reference_model_under_random_inserts():
    """Out-of-order and duplicate stamps, window trimming, count cap and compaction, against
    a plain sorted-dict model of the same rules."""
    rng = np.random.default_rng(10)
    cache, cap = 300 * MS, 64
    tf = TfBuffer(cache_time_ns=cache, max_samples_per_edge=cap)
    model: dict[int, float] = {}
    t = 0
    for _ in range(3_000):
        t += int(rng.integers(0, 8 * MS))
        stamp = t - int(rng.integers(0, 40 * MS)) if rng.random() < 0.3 else t  # 30 % late
        stamp = max(stamp, 0)
        yaw = float(rng.uniform(-3, 3))
        newest = max(model) if model else None
        accepted = tf.set_transform("odom", "base_link", stamp, pose(yaw, (yaw, 0, 0)))
        if newest is not None and stamp < newest - cache:
            assert not accepted
            continue
        assert accepted
        model[stamp] = yaw
        horizon = max(model) - cache
        for k in sorted(model)[:-cap] + [k for k in model if k < horizon]:
            model.pop(k, None)
        hist = tf._dynamic["base_link"]
        assert hist.stamps[hist.lo:hist.hi].tolist() == sorted(model)
    for k in sorted(model)[::7]:
        np.testing.assert_allclose(tf.lookup("odom", "base_link", k)[0, 3], model[k], atol=1e-12)
