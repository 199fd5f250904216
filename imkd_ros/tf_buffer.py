"""A tf2-like transform buffer in pure numpy (no rclpy), fed from /tf and /tf_static.

Why our own: the node needs tf2's "advanced" lookup (source at its stamp -> fixed frame ->
target at another stamp) for ego-motion compensation of every camera and radar sweep, and the
assembler that uses it must be testable without ROS. `imkd_ros.msgs` turns a TFMessage into
(parent, child, stamp_ns, 4x4) tuples; this module stores and chains them.

Conventions (as tf2): an edge parent <- child holds T_parent_child, the 4x4 that maps points
given in the child frame into the parent frame. Every frame has at most one parent, so the
frames form a forest. `lookup(target, source, t)` returns T_target_source at time t; t = 0
(or None) means the latest time at which the whole chain is known, tf2's `rclpy.time.Time()`.
Dynamic edges keep a time-sorted history of `cache_time_ns` (tf2's cache_time, 10 s) and are
interpolated (lerp translation, slerp rotation); static edges are timeless. The errors carry
tf2's names too (`LookupException`, `ConnectivityException`, `ExtrapolationException`, all
`TransformException`), so code written against tf2_ros reads the same. Quaternions are
(x, y, z, w), like geometry_msgs; the rotation maths is imkd_core.geometry's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from imkd_core.geometry import (
    invert_transform,
    matrix_to_quat_xyzw_one,
    pose_matrix_xyzw_one,
    quat_xyzw_to_matrix,
    slerp,
    slerp_one,
)

NS_PER_S = 1_000_000_000

__all__ = [
    "ConnectivityError",
    "ConnectivityException",
    "ExtrapolationError",
    "ExtrapolationException",
    "LookupException",
    "TfBuffer",
    "TransformError",
    "TransformException",
    "UnknownFrameError",
    "static_conflicts",
    "reparents_static",
]


# ----------------------------------------------------------------------------- errors
class TransformError(LookupError):
    """A transform could not be looked up (base class of the errors below)."""


class UnknownFrameError(TransformError):
    """A frame id that no transform has ever mentioned (or that was cleared)."""

    def __init__(self, frame: str, known: Sequence[str]) -> None:
        self.frame = frame
        shown = ", ".join(repr(f) for f in sorted(known)[:20])
        more = f" (+{len(known) - 20} more)" if len(known) > 20 else ""
        super().__init__(f"frame {frame!r} does not exist; known frames: [{shown}{more}]")  # as tf2's


class ConnectivityError(TransformError):
    """Both frames are known but lie in different trees (no common ancestor)."""

    def __init__(self, target: str, source: str, target_root: str, source_root: str) -> None:
        self.target, self.source = target, source
        super().__init__(  # worded like tf2's ConnectivityException
            f"could not find a connection between {target!r} and {source!r} because they are not part of the "
            f"same tree: {target!r} belongs to the tree rooted at {target_root!r}, {source!r} to the tree "
            f"rooted at {source_root!r}")


class ExtrapolationError(TransformError):
    """The requested time lies further outside an edge's history than the tolerance allows."""

    def __init__(self, message: str, *, parent: str, child: str, stamp_ns: int, oldest_ns: int,
                 newest_ns: int, tolerance_ns: int) -> None:
        self.parent, self.child = parent, child
        self.stamp_ns, self.oldest_ns, self.newest_ns = stamp_ns, oldest_ns, newest_ns
        self.tolerance_ns = tolerance_ns
        super().__init__(message)


# tf2_ros's names for the same errors
TransformException = TransformError
LookupException = UnknownFrameError
ConnectivityException = ConnectivityError
ExtrapolationException = ExtrapolationError


def _fmt(ns: int) -> str:
    return f"{ns / NS_PER_S:.6f} s"


# ----------------------------------------------------------------------------- checks
def _check_rigid(T: np.ndarray, parent: str, child: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"transform {parent!r} <- {child!r} must be 4x4, got {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError(f"transform {parent!r} <- {child!r} contains NaN/inf")
    (a, b, c, _), (d, e, f, _), (g, h, i, _), last = T.tolist()  # scalar maths: cheaper than numpy here
    if max(abs(last[0]), abs(last[1]), abs(last[2]), abs(last[3] - 1.0)) > 1e-6:
        raise ValueError(f"transform {parent!r} <- {child!r}: last row must be [0, 0, 0, 1], got {last}")
    # R R^T = I (rows orthonormal) and det R = +1
    err = max(abs(a * a + b * b + c * c - 1), abs(d * d + e * e + f * f - 1), abs(g * g + h * h + i * i - 1),
              abs(a * d + b * e + c * f), abs(a * g + b * h + c * i), abs(d * g + e * h + f * i))
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if err > 1e-3 or det <= 0.0:
        raise ValueError(f"transform {parent!r} <- {child!r}: rotation block is not a proper rotation "
                         f"(|R R^T - I|max = {err:.3g}, det = {det:.3g}); "
                         "a zero or unnormalised quaternion in the message?")
    return T


# ----------------------------------------------------------------------------- one dynamic edge
class _History:
    """Time-sorted samples of one dynamic edge in preallocated arrays (window [lo, hi)).

    Appends in time order are O(1) amortised; a late (out-of-order) sample is inserted at its
    sorted place. Samples older than `cache_ns` before the newest, and beyond `max_samples`,
    are dropped, so memory is bounded whatever the input rate.
    """

    __slots__ = ("stamps", "quats", "trans", "lo", "hi", "cache_ns", "max_samples")

    def __init__(self, cache_ns: int, max_samples: int) -> None:
        cap = min(16, 2 * max_samples + 1)
        self.stamps = np.empty(cap, dtype=np.int64)
        self.quats = np.empty((cap, 4), dtype=np.float64)
        self.trans = np.empty((cap, 3), dtype=np.float64)
        self.lo = 0
        self.hi = 0
        self.cache_ns = cache_ns
        self.max_samples = max_samples

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def oldest(self) -> int:
        return int(self.stamps[self.lo])

    @property
    def newest(self) -> int:
        return int(self.stamps[self.hi - 1])

    def _make_room(self) -> int:
        """Free slots at the end; returns by how much existing indices shifted down.

        Compacts only when the dead prefix is at least as long as the live window, else grows
        (up to 2 * max_samples + 1), so the copying is amortised O(1) per insert.
        """
        n = self.hi - self.lo
        limit = 2 * self.max_samples + 1
        if self.lo >= n or len(self.stamps) >= limit:  # slide the window to the start
            shift = self.lo
            for a in (self.stamps, self.quats, self.trans):
                a[:n] = a[self.lo:self.hi]
            self.lo, self.hi = 0, n
            return shift
        cap = min(2 * len(self.stamps), limit)
        self.stamps = np.resize(self.stamps, cap)
        self.quats = np.resize(self.quats, (cap, 4))
        self.trans = np.resize(self.trans, (cap, 3))
        return 0

    def insert(self, stamp: int, q: np.ndarray, t: np.ndarray) -> bool:
        """Store one sample; False when it is older than the cache window (ignored, like tf2)."""
        n = self.hi - self.lo
        if n and stamp < self.newest - self.cache_ns:
            return False
        if n == 0 or stamp > self.newest:
            pos = self.hi
        else:
            pos = self.lo + int(np.searchsorted(self.stamps[self.lo:self.hi], stamp))
            if self.stamps[pos] == stamp:  # same stamp again: the newer message wins
                self.quats[pos], self.trans[pos] = q, t
                return True
        if self.hi == len(self.stamps):
            pos -= self._make_room()
        if pos < self.hi:  # shift the later samples up by one (numpy handles the overlap)
            for a in (self.stamps, self.quats, self.trans):
                a[pos + 1:self.hi + 1] = a[pos:self.hi]
        self.stamps[pos], self.quats[pos], self.trans[pos] = stamp, q, t
        self.hi += 1
        # bound the history: time window relative to the newest sample, then the hard count cap
        horizon = int(self.stamps[self.hi - 1]) - self.cache_ns
        if self.stamps[self.lo] < horizon:
            self.lo += int(np.searchsorted(self.stamps[self.lo:self.hi], horizon))
        self.lo = max(self.lo, self.hi - self.max_samples)
        return True

    def _extrapolation(self, t: int, tolerance_ns: int, parent: str, child: str) -> ExtrapolationError:
        oldest, newest = self.oldest, self.newest
        where = (f"into the future: requested time {_fmt(t)} but the latest data is at time {_fmt(newest)} "
                 f"({_fmt(t - newest)} after the newest sample)" if t > newest else
                 f"into the past: requested time {_fmt(t)} but the earliest data is at time {_fmt(oldest)} "
                 f"({_fmt(oldest - t)} before the oldest sample)")
        return ExtrapolationError(  # worded like tf2's ExtrapolationException
            f"Lookup would require extrapolation {where}, when looking up transform from frame [{child}] to "
            f"frame [{parent}] ({len(self)} samples; max extrapolation {_fmt(tolerance_ns)})",
            parent=parent, child=child, stamp_ns=t, oldest_ns=oldest, newest_ns=newest,
            tolerance_ns=tolerance_ns)

    def sample_one(self, t: int, tolerance_ns: int, parent: str, child: str) -> np.ndarray:
        """4x4 T_parent_child at one stamp (scalar maths: the common, latency-bound case)."""
        lo, hi = self.lo, self.hi
        oldest, newest = int(self.stamps[lo]), int(self.stamps[hi - 1])
        if t > newest + tolerance_ns or t < oldest - tolerance_ns:
            raise self._extrapolation(t, tolerance_ns, parent, child)
        if t >= newest or t <= oldest:  # hold the end sample (within tolerance)
            i = hi - 1 if t >= newest else lo
            return pose_matrix_xyzw_one(self.quats[i].tolist(), self.trans[i].tolist())
        i1 = lo + int(np.searchsorted(self.stamps[lo:hi], t, side="right"))  # first stamp > t
        i0 = i1 - 1
        s0 = int(self.stamps[i0])
        a = (t - s0) / (int(self.stamps[i1]) - s0)
        q = slerp_one(self.quats[i0].tolist(), self.quats[i1].tolist(), a)
        p0, p1 = self.trans[i0].tolist(), self.trans[i1].tolist()
        return pose_matrix_xyzw_one(q, [u + a * (v - u) for u, v in zip(p0, p1)])

    def sample(self, ts: np.ndarray, tolerance_ns: int, parent: str, child: str) -> np.ndarray:
        """(K,) int64 stamps -> (K, 4, 4) interpolated T_parent_child, vectorised; the nearest
        sample is held up to `tolerance_ns` beyond either end, further is an ExtrapolationError."""
        S = self.stamps[self.lo:self.hi]
        oldest, newest = int(S[0]), int(S[-1])
        bad = (ts > newest + tolerance_ns) | (ts < oldest - tolerance_ns)
        if bad.any():
            raise self._extrapolation(int(ts[np.argmax(bad)]), tolerance_ns, parent, child)
        out = np.zeros((len(ts), 4, 4), dtype=np.float64)
        out[:, 3, 3] = 1.0
        if len(S) == 1:
            out[:, :3, :3] = quat_xyzw_to_matrix(self.quats[self.lo])
            out[:, :3, 3] = self.trans[self.lo]
            return out
        tc = np.clip(ts, oldest, newest)
        i1 = np.clip(np.searchsorted(S, tc, side="right"), 1, len(S) - 1)
        i0 = i1 - 1
        a = (tc - S[i0]) / (S[i1] - S[i0])  # int64 differences, exact before the division
        Q = self.quats[self.lo:self.hi]
        P = self.trans[self.lo:self.hi]
        out[:, :3, :3] = quat_xyzw_to_matrix(slerp(Q[i0], Q[i1], a))
        out[:, :3, 3] = P[i0] + a[:, None] * (P[i1] - P[i0])
        return out


def _at(stamp_ns: int | None) -> int | None:
    """A lookup stamp: 0 (tf2's Time()) and None both mean the latest common time."""
    return None if stamp_ns is None or int(stamp_ns) == 0 else int(stamp_ns)


# ----------------------------------------------------------------------------- the buffer
class TfBuffer:
    """Transform forest with static and time-interpolated dynamic edges (thread-safe).

    cache_time_ns: history kept per dynamic edge, relative to its newest sample (tf2's
        cache_time, 10 s): what bounds the history, at any rate.
    max_extrapolation_ns: how far beyond an edge's oldest/newest sample a lookup may hold the
        nearest sample before raising ExtrapolationError (tf2 allows none; sensors and odometry
        arrive a few ms apart, so a small tolerance avoids needless failures).
    max_samples_per_edge: a safety cap on each edge's history against a runaway publisher
        (default 10 s at 10 kHz: never reached by real odometry, so cache_time decides).
    max_edges: cap on the number of edges (a misbehaving publisher cannot grow it unbounded).
    """

    def __init__(self, cache_time_ns: int = 10 * NS_PER_S, max_extrapolation_ns: int = 50_000_000,
                 max_samples_per_edge: int = 100_000, max_edges: int = 4096) -> None:
        if cache_time_ns <= 0 or max_extrapolation_ns < 0 or max_samples_per_edge < 1 or max_edges < 1:
            raise ValueError("TfBuffer: cache_time_ns, max_samples_per_edge and max_edges must be > 0, "
                             "max_extrapolation_ns >= 0")
        self.cache_time_ns = int(cache_time_ns)
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self.max_samples_per_edge = int(max_samples_per_edge)
        self.max_edges = int(max_edges)
        self._parent: dict[str, str] = {}        # child -> parent
        self._nchildren: dict[str, int] = {}     # parent -> number of children (frame existence)
        self._static: dict[str, np.ndarray] = {}  # child -> T_parent_child
        self._dynamic: dict[str, _History] = {}  # child -> history
        self._paths: dict[str, tuple[str, ...]] = {}  # frame -> (frame, parent, ..., root)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ topology
    def _known(self, frame: str) -> bool:
        return frame in self._parent or frame in self._nchildren

    def _unlink(self, child: str) -> None:
        parent = self._parent.pop(child)
        self._static.pop(child, None)
        self._dynamic.pop(child, None)
        left = self._nchildren[parent] - 1
        if left:
            self._nchildren[parent] = left
        else:
            del self._nchildren[parent]
        self._paths.clear()

    def _path(self, frame: str) -> tuple[str, ...]:
        path = self._paths.get(frame)
        if path is None:
            chain = [frame]
            while chain[-1] in self._parent:
                chain.append(self._parent[chain[-1]])
            path = self._paths[frame] = tuple(chain)
        return path

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray,
                      static: bool = False) -> bool:
        """Add T_parent_child (maps child points into parent) at `stamp_ns`.

        A static edge is timeless (the stamp is ignored). A new parent for an existing child
        replaces its edge (one parent per frame, as tf2), except that dynamic data never
        re-parents a static edge: a sensor mount from /tf_static moved under another parent by a
        /tf publisher would leave that sensor unconnected for good (the static transform is not
        re-sent); only a new static transform changes its parent. Returns False when a dynamic
        sample is older than the edge's cache window and was ignored. Raises ValueError on a
        malformed transform, an empty/self frame id, a cycle, too many edges, or dynamic data
        re-parenting a static edge.
        """
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"bad frame ids: parent {parent!r}, child {child!r}")
        T = _check_rigid(T, parent, child)
        with self._lock:
            old = self._parent.get(child)
            if not static and child in self._static and old != parent:
                raise ValueError(f"dynamic transform {parent!r} <- {child!r} refused: {child!r} has the static "
                                 f"parent {old!r} (/tf_static)")
            if old != parent:
                if old is None and len(self._parent) >= self.max_edges:
                    raise ValueError(f"TfBuffer is full ({self.max_edges} edges); "
                                     f"refusing new edge {parent!r} <- {child!r}")
                if child in self._path(parent):
                    raise ValueError(f"edge {parent!r} <- {child!r} would close a cycle "
                                     f"({' -> '.join(self._path(parent))})")
                if old is not None:
                    self._unlink(child)
                self._parent[child] = parent
                self._nchildren[parent] = self._nchildren.get(parent, 0) + 1
                self._paths.clear()
            if static:
                self._dynamic.pop(child, None)
                self._static[child] = T.copy()
                return True
            self._static.pop(child, None)
            hist = self._dynamic.get(child)
            if hist is None:
                hist = self._dynamic[child] = _History(self.cache_time_ns, self.max_samples_per_edge)
            return hist.insert(int(stamp_ns), matrix_to_quat_xyzw_one(T), T[:3, 3])

    def clear(self, static: bool = False) -> None:
        """Forget all dynamic edges (and static ones too if `static`); e.g. after the clock
        jumped back (bag loop), when old odometry would otherwise poison interpolation.
        Like tf2, static transforms survive a plain clear()."""
        with self._lock:
            for child in list(self._dynamic if not static else self._parent):
                self._unlink(child)

    def frames(self) -> list[str]:
        """All known frame ids, sorted."""
        with self._lock:
            return sorted(set(self._parent) | set(self._nchildren))

    def static_parent(self, frame: str) -> str | None:
        """The parent of `frame` if its edge is static, else None."""
        frame = frame.lstrip("/")
        with self._lock:
            return self._parent.get(frame) if frame in self._static else None

    def parent(self, frame: str) -> str | None:
        """The parent of `frame` (None for a root); UnknownFrameError if unknown."""
        with self._lock:
            if not self._known(frame):
                raise UnknownFrameError(frame, self.frames())
            return self._parent.get(frame)

    def time_range(self, child: str) -> tuple[int, int] | None:
        """(oldest, newest) stamp of the dynamic edge above `child`, None if static or absent."""
        with self._lock:
            h = self._dynamic.get(child)
            return (h.oldest, h.newest) if h is not None and len(h) else None

    def history_size(self, child: str | None = None) -> int:
        """Samples stored for one dynamic edge, or over all edges when `child` is None."""
        with self._lock:
            if child is not None:
                h = self._dynamic.get(child)
                return len(h) if h is not None else 0
            return sum(len(h) for h in self._dynamic.values())

    # ------------------------------------------------------------------ lookups
    def _edges(self, target: str, source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Children whose edges lead up from source and from target to their common ancestor."""
        for f in (target, source):
            if not self._known(f):
                raise UnknownFrameError(f, self.frames())
        sp, tp = self._path(source), self._path(target)
        if sp[-1] != tp[-1]:
            raise ConnectivityError(target, source, tp[-1], sp[-1])
        tset = set(tp)
        i = next(k for k, f in enumerate(sp) if f in tset)
        return sp[:i], tp[:tp.index(sp[i])]

    def _up(self, children: tuple[str, ...], ts: int | np.ndarray) -> np.ndarray | None:
        """T_ancestor_first over the edges above `children` at one stamp (int -> (4, 4)) or many
        ((K,) array -> (K, 4, 4), or (4, 4) when all edges are static); None = identity."""
        M = None
        scalar = isinstance(ts, int)
        for c in children:
            E = self._static.get(c)
            if E is None:
                h, parent = self._dynamic[c], self._parent[c]
                E = (h.sample_one(ts, self.max_extrapolation_ns, parent, c) if scalar
                     else h.sample(ts, self.max_extrapolation_ns, parent, c))
            M = E if M is None else E @ M
        return M

    def _latest_common(self, chains: tuple[tuple[str, ...], ...]) -> int:
        newest = [self._dynamic[c].newest for ch in chains for c in ch if c in self._dynamic]
        return min(newest) if newest else 0

    def _lookup(self, target: str, source: str, stamps: int | np.ndarray | None) -> np.ndarray:
        """T_target_source: (4, 4) for an int stamp or None (latest), (K, 4, 4) for an array."""
        up_s, up_t = self._edges(target, source)
        if stamps is None:  # tf2's time 0: the latest time at which the whole chain is known
            stamps = self._latest_common((up_s, up_t))
        try:
            A = self._up(up_s, stamps)
            B = self._up(up_t, stamps)
        except ExtrapolationError as e:
            raise ExtrapolationError(f"lookup {target!r} <- {source!r}: {e}", parent=e.parent, child=e.child,
                                     stamp_ns=e.stamp_ns, oldest_ns=e.oldest_ns, newest_ns=e.newest_ns,
                                     tolerance_ns=e.tolerance_ns) from None
        if B is not None:
            Binv = invert_transform(B)
            A = Binv if A is None else Binv @ A
        if isinstance(stamps, int):
            return np.eye(4) if A is None else A
        out = np.empty((len(stamps), 4, 4), dtype=np.float64)
        out[:] = np.eye(4) if A is None else A
        return out

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """4x4 T_target_source at `stamp_ns` (maps points in `source` into `target`).

        stamp_ns 0 or None means the latest time available on the whole chain (tf2's time 0).
        Raises UnknownFrameError, ConnectivityError or ExtrapolationError.
        """
        with self._lock:
            return self._lookup(target, source, _at(stamp_ns))

    def lookup_batch(self, target: str, source: str, stamps_ns: Sequence[int] | np.ndarray) -> np.ndarray:
        """(K, 4, 4) T_target_source, one per stamp, in one vectorised pass over the chain."""
        stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
        with self._lock:
            return self._lookup(target, source, stamps)

    def lookup_full(self, target: str, target_stamp_ns: int, source: str, source_stamp_ns: int,
                    fixed_frame: str) -> np.ndarray:
        """4x4 mapping points of `source` at its stamp into `target` at another stamp, through
        `fixed_frame` assumed not to move between the two (tf2's advanced lookupTransform).

        E.g. lookup_full('base_link', t_frame, 'radar', t_sweep, 'odom') moves a radar sweep
        into the ego frame of the reference time: ego-motion compensation.
        """
        with self._lock:
            A = self._lookup(fixed_frame, source, _at(source_stamp_ns))
            B = self._lookup(target, fixed_frame, _at(target_stamp_ns))
        return B @ A

    def lookup_full_batch(self, target: str, target_stamp_ns: int, source: str,
                          source_stamps_ns: Sequence[int] | np.ndarray, fixed_frame: str) -> np.ndarray:
        """lookup_full for many source stamps at once -> (K, 4, 4)."""
        stamps = np.asarray(source_stamps_ns, dtype=np.int64).reshape(-1)
        with self._lock:
            A = self._lookup(fixed_frame, source, stamps)
            B = self._lookup(target, fixed_frame, _at(target_stamp_ns))
        return B @ A

    def latest_common_time(self, target: str, source: str) -> int | None:
        """Newest stamp up to which the whole chain target <- source can be interpolated
        without extrapolation; None when the chain is static (valid at any time).
        Raises UnknownFrameError / ConnectivityError."""
        with self._lock:
            up_s, up_t = self._edges(target, source)
            if not any(c in self._dynamic for c in up_s + up_t):
                return None
            return self._latest_common((up_s, up_t))

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        """Whether lookup(target, source, stamp_ns) would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def can_transform_full(self, target: str, target_stamp_ns: int, source: str, source_stamp_ns: int,
                           fixed_frame: str) -> bool:
        """Whether lookup_full(...) with the same arguments would succeed."""
        try:
            self.lookup_full(target, target_stamp_ns, source, source_stamp_ns, fixed_frame)
        except TransformError:
            return False
        return True


def static_conflicts(tf: TfBuffer, items: Sequence[tuple[str, str, int, np.ndarray]]) -> list[str]:
    """One line per dynamic (parent, child, stamp, T) that would re-parent a static edge of `tf`
    (set_transform refuses those; the node counts and logs them first)."""
    out = []
    for parent, child, _, _ in items:
        static_parent = tf.static_parent(child)
        if static_parent is not None and static_parent != parent.lstrip("/"):
            out.append(f"dynamic {parent!r} <- {child!r} would re-parent the static edge {static_parent!r} <- "
                       f"{child!r}; dropped (a frame has one parent; change it on /tf_static)")
    return out


def reparents_static(tf: TfBuffer, parent: str, child: str) -> bool:
    """True when a dynamic parent <- child would re-parent a static edge of `tf`."""
    static_parent = tf.static_parent(child)
    return static_parent is not None and static_parent != parent.lstrip("/")
