"""Time synchronisation: timestamped camera images and radar sweeps -> `SensorFrame`s.

Pure Python/numpy (no rclpy), so the node's hardest logic is tested without ROS. The node's
callbacks hand every message to `add_camera` / `add_radar` / `add_transforms` (cheap: they only
buffer and match); the inference loop calls `poll(now_ns)` whenever it is free and gets the
newest completed frame(s), built there (TF lookups, radar compensation, image stacking).

Rules (docs/design.md, "The ROS 2 node"):
- The trigger camera (CAM_FRONT) starts a frame at its stamp; base_link at that stamp is the
  reference frame.
- Every other camera contributes the image whose stamp is nearest to trigger + its expected
  offset (0 unless configured), within `match_window_ns`. Its slot is final once that camera has
  sent an image at or after the expected time (in-order per camera: nothing nearer can follow),
  once its next image, judging by its recent period, would be farther than the one in hand
  (so a camera firing just before the trigger does not hold the frame back), or after
  `camera_timeout_ns` of input time; a camera still missing then is masked. Set
  `camera_offsets_ns` for rigs whose cameras fire more than half a period after the trigger.
- Radar, per radar: the sweeps chosen by `imkd_core.radar.SweepRule` (the rule the offline
  reader applies to the dataset's sweep timeline, so node and training/evaluation take the same
  sweeps): mode "closing" takes the sweeps up to the first one stamped at or after frame stamp -
  `radar_tolerance_ns`, mode "causal" those at or before frame stamp + `radar_tolerance_ns`; then
  at most `radar_sweeps`, none older than `radar_max_age_ns` and none across a gap longer than
  `radar_max_gap_ns` (a 2 Hz keyframe-only bag keeps one sweep per radar, like the reader on
  keyframe-only data). A frame waits for the evidence that settles this choice (the closing
  sweep / a later sweep) at most `radar_timeout_ns` of input time, also for a configured radar that has
  sent nothing since start or the last reset (so the first frames do not depend on which radar
  happened to be heard from first); a radar still without sweeps then is left out (counted in
  `radars_missing`). Replaying a bag thus gives the same frames however the messages
  interleave. Each sweep goes through `lookup_full(base_link @ frame stamp <- radar @
  sweep stamp, fixed_frame)` and the one shared filter + feature function
  `imkd_core.radar.radar_features`.
- A completed frame also waits until the TF buffer covers each of its inputs up to its stamp
  (odometry usually lags the sensors by a few ms; holding the last pose instead would cost
  centimetres at speed), at most `tf_timeout_ns` of input time past the newest needed stamp.
- Input time = the newest stamp seen on any input (or a later `poll(now_ns)`). Timeouts are
  decided per kind of input on its own watermark, so a constant transport latency of one kind
  (compressed images commonly arrive 100-200 ms after radar and /tf) does not expire them:
  camera_timeout in camera time (the newest image stamp of any camera), radar_timeout in radar
  time, each at least input time - `max_stream_lag_ns` (a kind gone silent cannot hold frames
  forever); tf_timeout in input time. The assembler behaves the same at any replay speed.
- Images may be buffered still encoded (`EncodedImage`: anything with `decode() -> (rgb, K)`);
  they are decoded when a frame is built, so only frames that are handed to the consumer cost
  decoding (newest frame wins). A decode failure masks that camera (drops the frame for the
  trigger camera), counted.
- Newest frame wins: at most `max_pending_frames` completed frames wait for the consumer; older
  ones are dropped before any work is spent on them. At most `max_pending_triggers` frames are
  in assembly. Every buffer is bounded.
- Clock jumps are judged per stream (each camera, each radar, /tf): a message stamped more than
  `max_clock_jump_back_ns` before the newest of its own stream is held back, not used. When
  every active stream (one that sent within max_clock_jump_back_ns of input time) has jumped
  back (a bag loop, a restarted simulator), every buffer and by default the TF buffer's dynamic
  edges are reset and the held messages start the new timeline. A stream whose next message is
  back on the old timeline had one stale message: it is dropped and counted (`inputs_stale`),
  nothing else is touched. Lag between streams (callbacks behind, latency) is never a jump.
  `reset()` (the node calls it when the ROS clock jumps back) starts a new timeline too.
- Bad input raises ValueError from add_* (the node counts it); missing TF never raises: a camera
  without TF is masked, a frame without base_link at its stamp is dropped; all counted in `stats`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

from imkd_core.frame import CAMERAS, RADAR_COLUMNS, RADARS, FrameError, SensorFrame
from imkd_core.radar import RADAR_PCD_FIELDS, SweepRule, radar_features
from imkd_ros.tf_buffer import TfBuffer, TransformError

MS = 1_000_000

__all__ = ["AssemblerConfig", "EncodedImage", "FrameAssembler", "STAT_KEYS"]

STAT_KEYS: tuple[str, ...] = (
    "frames_built",             # SensorFrames returned by poll()
    "frames_dropped_overload",  # completed/pending frames dropped: consumer slower than input
    "frames_dropped_tf",        # no TF for base_link (or the trigger camera) at the frame stamp
    "frames_invalid",           # the built frame failed SensorFrame.validate()
    "cameras_masked",           # camera slots masked in built frames (no image in the window)
    "cameras_masked_tf",        # camera slots masked in built frames because TF was missing
    "cameras_resized",          # images resized to the trigger camera's size
    "camera_out_of_order",      # images older than the newest of their camera
    "trigger_duplicates",       # trigger images at or before an already seen trigger stamp
    "radar_out_of_order",       # sweeps older than the newest of their radar (sorted in)
    "radar_duplicates",         # sweeps with a stamp already buffered (replaced)
    "radar_timeouts",           # radars a frame stopped waiting for (silent or never heard from)
    "radars_missing",           # radar slots without any sweep in frames handed to the build
    "tf_timeouts",              # frames built before odometry covered all their stamps
    "radar_sweeps_dropped_tf",  # sweeps left out of a frame because TF was missing
    "radar_points_nonfinite",   # rows dropped after filtering because of NaN/inf features
    "ego_to_global_missing",    # frames whose ego_to_global had to be left at identity
    "tf_rejected",              # transforms refused by the TF buffer (malformed or too old)
    "inputs_stale",             # messages stamped far behind their own stream, dropped alone
    "frames_dropped_decode",    # the trigger camera's image did not decode
    "cameras_masked_decode",    # camera slots masked because the image did not decode
    "clock_resets",             # backwards clock jumps (all buffers reset)
)


@dataclass
class AssemblerConfig:
    """Synchronisation parameters; all times in ns of the sensors' clock (header stamps)."""

    cameras: tuple[str, ...] = CAMERAS          # SensorFrame camera order (the rig's; default nuScenes)
    radars: tuple[str, ...] = RADARS
    trigger_camera: str = "CAM_FRONT"
    match_window_ns: int = 60 * MS               # |image stamp - expected stamp| limit
    camera_offsets_ns: dict[str, int] = field(default_factory=dict)  # expected stamp - trigger
    camera_timeout_ns: int = 100 * MS            # input time after the trigger before masking
    camera_buffer_len: int = 4                   # images kept per camera for matching
    # radar sweep selection: imkd_core.radar.SweepRule (its defaults, shared with the offline reader)
    radar_sweeps: int = SweepRule.sweeps
    radar_mode: str = SweepRule.mode                    # "closing" or "causal"
    radar_tolerance_ns: int = SweepRule.tolerance_ns
    radar_timeout_ns: int = SweepRule.timeout_ns        # input time after the trigger before giving up
    radar_max_gap_ns: int = SweepRule.max_gap_ns
    radar_max_age_ns: int = SweepRule.max_age_ns
    radar_buffer_len: int = 16                   # sweeps kept per radar
    tf_timeout_ns: int = 50 * MS                 # input time past an input's stamp to wait for its TF
    max_pending_frames: int = 1                  # completed frames waiting for poll()
    max_pending_triggers: int = 8                # frames in assembly
    base_frame: str = "base_link"
    fixed_frame: str = "odom"                    # world-fixed frame for motion compensation
    global_frame: str | None = "map"             # for SensorFrame.ego_to_global (identity if absent)
    max_clock_jump_back_ns: int = 1_000 * MS
    max_stream_lag_ns: int = 500 * MS            # a kind's timeouts use at least input time - this
    max_held_per_stream: int = 64                # messages held while a stream's jump is unconfirmed
    decode_threads: int = 1                      # threads decoding one frame's encoded images
    clear_tf_on_reset: bool = True

    def validate(self) -> AssemblerConfig:
        """Raise ValueError naming the bad parameter; return self."""
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be distinct names (the rig's SensorFrame order), got {self.cameras}")
        if self.trigger_camera not in self.cameras:
            raise ValueError(f"trigger_camera {self.trigger_camera!r} is not one of cameras {self.cameras}")
        if len(set(self.radars)) != len(self.radars):
            raise ValueError(f"radars must be distinct, got {self.radars}")
        unknown = set(self.camera_offsets_ns) - set(self.cameras)
        if unknown:
            raise ValueError(f"camera_offsets_ns names unknown cameras {sorted(unknown)}")
        if self.radar_mode not in ("closing", "causal"):
            raise ValueError(f"radar_mode must be 'closing' or 'causal', got {self.radar_mode!r}")
        for name in ("match_window_ns", "camera_timeout_ns", "radar_tolerance_ns", "radar_timeout_ns",
                     "radar_max_gap_ns", "radar_max_age_ns", "tf_timeout_ns", "max_clock_jump_back_ns",
                     "max_stream_lag_ns"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("camera_buffer_len", "radar_sweeps", "max_pending_frames", "max_pending_triggers",
                     "max_held_per_stream", "decode_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.radar_buffer_len < self.radar_sweeps + 1:
            raise ValueError(f"radar_buffer_len ({self.radar_buffer_len}) must exceed radar_sweeps "
                             f"({self.radar_sweeps}): the closing sweep of a frame may be newer")
        for name in ("base_frame", "fixed_frame"):
            if not getattr(self, name):
                raise ValueError(f"{name} must be a frame id")
        return self

    def sweep_rule(self) -> SweepRule:
        """The radar sweep selection (imkd_core.radar.SweepRule, shared with the offline reader)."""
        return SweepRule(sweeps=int(self.radar_sweeps), mode=self.radar_mode,
                         tolerance_ns=int(self.radar_tolerance_ns), timeout_ns=int(self.radar_timeout_ns),
                         max_gap_ns=int(self.radar_max_gap_ns), max_age_ns=int(self.radar_max_age_ns))

    @classmethod
    def from_dict(cls, params: dict) -> AssemblerConfig:
        """Build from a parameter dict (e.g. the node's YAML); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(params) - names)
        if bad:
            raise ValueError(f"unknown assembler parameter(s) {bad}; known: {sorted(names)}")
        p = dict(params)
        for key in ("cameras", "radars"):
            if key in p:
                p[key] = tuple(p[key])
        return cls(**p).validate()


class EncodedImage(Protocol):
    """An image kept encoded until a frame that uses it is built (deferred decoding)."""

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (H x W x 3 uint8 RGB, its 3x3 K); ValueError (counted, camera masked) if it cannot."""
        ...


@dataclass
class _Image:
    stamp: int
    image: np.ndarray | None     # None while still encoded
    K: np.ndarray | None
    frame_id: str
    encoded: EncodedImage | None = None
    error: str | None = None     # why decoding failed (tried once)


@dataclass
class _Sweep:
    stamp: int
    points: np.ndarray  # (18, N)
    frame_id: str


@dataclass
class _Pending:
    """A frame in assembly: the trigger stamp and the best image per camera so far."""

    stamp: int
    images: list[_Image | None]


@dataclass
class _Job:
    """A completed frame's inputs, snapshotted so building needs no lock."""

    stamp: int
    images: list[_Image | None]
    sweeps: list[list[_Sweep]]
    radar_timeouts: int
    radars_missing: int = 0
    tf_timeout: bool = False


def _resize(image: np.ndarray, K: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (H, W) and scale K to match, as the offline reader does. Imported here:
    imkd_core.preprocess pulls in torch, which a same-size rig (nuScenes) never needs."""
    from imkd_core.preprocess import resize_with_intrinsics

    return resize_with_intrinsics(image, K, H, W)


class FrameAssembler:
    """Builds SensorFrames from timestamped inputs; see the module docstring for the rules.

    Thread-safe: sensor callbacks may call add_* while another thread polls.
    """

    def __init__(self, config: AssemblerConfig | None = None, tf: TfBuffer | None = None) -> None:
        self.config = cfg = (config or AssemblerConfig()).validate()
        self.tf = tf if tf is not None else TfBuffer()
        self._cam_index = {name: i for i, name in enumerate(cfg.cameras)}
        self._radar_index = {name: i for i, name in enumerate(cfg.radars)}
        self._trigger = self._cam_index[cfg.trigger_camera]
        self._offsets = [int(cfg.camera_offsets_ns.get(name, 0)) for name in cfg.cameras]
        self._rule = cfg.sweep_rule()
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self.last_error: str | None = None
        self.poll_decode_ms = 0.0  # wall time the last poll() spent decoding images
        self._decode_pool: ThreadPoolExecutor | None = None  # made on first use (cv2 decodes without the GIL)
        self._reset_buffers()

    # ------------------------------------------------------------------ state
    def _reset_buffers(self) -> None:
        n = len(self.config.cameras)
        self._cam_buf: list[list[_Image]] = [[] for _ in range(n)]  # sorted by stamp, bounded
        self._cam_newest: list[int | None] = [None] * n
        self._radar_buf: list[list[_Sweep]] = [[] for _ in self.config.radars]
        self._radar_stamps: list[list[int]] = [[] for _ in self.config.radars]
        self._pending: list[_Pending] = []  # sorted by stamp
        self._ready: deque[_Job] = deque()
        self._last_trigger: int | None = None
        self._now: int | None = None            # input time: newest stamp of any input, or poll's now
        self._poll_now: int | None = None       # the latest explicit poll(now_ns)
        self._kind_newest: dict[str, int] = {}  # "camera" / "radar" / "tf" -> newest stamp (watermarks)
        self._stream_newest: dict[tuple, int] = {}  # per stream ("camera", c), ("radar", r), ("tf",)
        self._held: dict[tuple, list[tuple[int, Callable[[], None]]]] = {}  # streams that jumped back

    def reset(self) -> None:
        """Start a new timeline: drop every buffered input and pending frame (statistics are
        kept); messages held because their stream had jumped back are its first inputs."""
        with self._lock:
            self._new_timeline()

    def _new_timeline(self) -> None:
        held = sorted((item for items in self._held.values() for item in items), key=lambda it: it[0])
        self._reset_buffers()
        for _, apply in held:
            apply()

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (STAT_KEYS)."""
        with self._lock:
            return dict(self._stats)

    @property
    def pending(self) -> int:
        """Frames in assembly plus completed frames not yet polled."""
        with self._lock:
            return len(self._pending) + len(self._ready)

    def _admit(self, stream: tuple, stamp: int, apply: Callable[[], None]) -> bool:
        """Use one input of `stream` (apply() buffers it), judging clock jumps per stream (see
        the module docstring); True when it started a new timeline (buffers reset)."""
        thr = self.config.max_clock_jump_back_ns
        newest = self._stream_newest.get(stream)
        if newest is None or stamp >= newest - thr:
            stale = self._held.pop(stream, None)
            if stale:  # the stream is back on its timeline: what it held was stale, alone
                self._stats["inputs_stale"] += len(stale)
                self.last_error = (f"{len(stale)} {'/'.join(map(str, stream))} message(s) stamped "
                                   f"{(newest - stale[0][0]) / 1e9:.3f} s before the stream's newest: dropped")
            apply()
            return False
        held = self._held.setdefault(stream, [])
        held.append((stamp, apply))
        if len(held) > self.config.max_held_per_stream:
            del held[0]
            self._stats["inputs_stale"] += 1
        now = self._now if self._now is not None else stamp
        active = [k for k, t in self._stream_newest.items() if t >= now - thr]
        if any(k not in self._held for k in active):
            return False  # only some streams jumped: wait for the others (or for their next message)
        self._stats["clock_resets"] += 1
        self.last_error = (f"every input stream jumped back by >= {(newest - stamp) / 1e9:.3f} s "
                           f"(bag loop?): buffers reset")
        if self.config.clear_tf_on_reset:
            self.tf.clear()
        self._new_timeline()
        return True

    def _note(self, stream: tuple, kind: str, stamp: int) -> None:
        """An input was buffered: advance its stream, its kind's watermark and input time."""
        if stamp > self._stream_newest.get(stream, stamp - 1):
            self._stream_newest[stream] = stamp
        if stamp > self._kind_newest.get(kind, stamp - 1):
            self._kind_newest[kind] = stamp
        if self._now is None or stamp > self._now:
            self._now = stamp

    def _kind_now(self, kind: str, default: int) -> int:
        """Time of one kind of input for its timeouts: its newest stamp, at least input time -
        max_stream_lag_ns and any explicit poll(now_ns)."""
        t = [v for v in (self._kind_newest.get(kind), self._poll_now) if v is not None]
        if self._now is not None:
            t.append(self._now - self.config.max_stream_lag_ns)
        return max(t) if t else default

    # ------------------------------------------------------------------ inputs
    def _check_image(self, c: int, image: np.ndarray, K: np.ndarray) -> np.ndarray:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8 and image.shape[0] > 0 and image.shape[1] > 0):
            raise ValueError(f"{self.config.cameras[c]}: image must be (H, W, 3) uint8, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"{self.config.cameras[c]}: K must be a finite 3x3 with fx, fy > 0, got {K.tolist()}")
        return K

    def add_camera(self, camera: int | str, stamp_ns: int, image: np.ndarray | EncodedImage,
                   K: np.ndarray | None, frame_id: str) -> bool:
        """Buffer one image (H, W, 3 uint8 RGB and its 3x3 K, or an EncodedImage decoded only if
        a built frame uses it; optical frame id; header stamp).

        Returns True when this input started a new timeline (buffers reset). ValueError on bad
        input (unknown camera, wrong shape/dtype, non-finite K).
        """
        c = int(camera) if isinstance(camera, (int, np.integer)) else self._cam_index.get(camera, -1)
        if not 0 <= c < len(self.config.cameras):
            raise ValueError(f"unknown camera {camera!r}; expected one of {self.config.cameras} or an index")
        if not frame_id:
            raise ValueError(f"{self.config.cameras[c]}: empty frame_id")
        stamp = int(stamp_ns)
        if callable(getattr(image, "decode", None)):
            img = _Image(stamp, None, None, frame_id, encoded=image)  # type: ignore[arg-type]
        else:
            img = _Image(stamp, image, self._check_image(c, image, K), frame_id)  # type: ignore[arg-type]
        with self._lock:
            return self._admit(("camera", c), stamp, lambda: self._buffer_camera(c, img))

    def _buffer_camera(self, c: int, img: _Image) -> None:
        stamp = img.stamp
        newest = self._cam_newest[c]
        if c == self._trigger:
            if self._last_trigger is not None and stamp <= self._last_trigger:
                self._stats["trigger_duplicates"] += 1
                return
            self._note(("camera", c), "camera", stamp)
            self._last_trigger = stamp
            self._cam_newest[c] = stamp
            self._new_trigger(img)
            return
        self._note(("camera", c), "camera", stamp)
        if newest is not None and stamp < newest:
            self._stats["camera_out_of_order"] += 1
        buf = self._cam_buf[c]
        i = bisect.bisect_right([b.stamp for b in buf], stamp)
        buf.insert(i, img)
        del buf[:-self.config.camera_buffer_len]
        self._cam_newest[c] = stamp if newest is None else max(newest, stamp)
        for p in self._pending:
            self._offer(p, c, img)

    def add_radar(self, radar: int | str, stamp_ns: int, points: np.ndarray, frame_id: str) -> bool:
        """Buffer one sweep: (18, N) nuScenes radar fields (RADAR_PCD_FIELDS order) in the radar's
        own frame `frame_id`. Late sweeps are sorted in. Returns True if the buffers were reset."""
        r = int(radar) if isinstance(radar, (int, np.integer)) else self._radar_index.get(radar, -1)
        if not 0 <= r < len(self.config.radars):
            raise ValueError(f"unknown radar {radar!r}; expected one of {self.config.radars} or an index")
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[0] != len(RADAR_PCD_FIELDS) or not np.issubdtype(pts.dtype, np.number):
            raise ValueError(f"{self.config.radars[r]}: points must be a numeric ({len(RADAR_PCD_FIELDS)}, N) "
                             f"array, got {pts.shape} {pts.dtype}")
        if not frame_id:
            raise ValueError(f"{self.config.radars[r]}: empty frame_id")
        stamp = int(stamp_ns)
        with self._lock:
            return self._admit(("radar", r), stamp, lambda: self._buffer_radar(r, _Sweep(stamp, pts, frame_id)))

    def _buffer_radar(self, r: int, sweep: _Sweep) -> None:
        stamp = sweep.stamp
        self._note(("radar", r), "radar", stamp)
        stamps, buf = self._radar_stamps[r], self._radar_buf[r]
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            self._stats["radar_duplicates"] += 1
            buf[i] = sweep
            return
        if i < len(stamps):
            self._stats["radar_out_of_order"] += 1
        stamps.insert(i, stamp)
        buf.insert(i, sweep)
        extra = len(stamps) - self.config.radar_buffer_len
        if extra > 0:
            del stamps[:extra], buf[:extra]

    def add_transforms(self, transforms: Iterable[tuple[str, str, int, np.ndarray]], static: bool = False) -> bool:
        """Feed (parent, child, stamp_ns, T_parent_child) tuples (a TFMessage) into the TF buffer.

        Dynamic transforms are one stream (/tf) for the clock-jump rule, so a bag loop resets the
        TF buffer with the rest before old odometry can corrupt interpolation. Malformed or
        too-old transforms are counted in tf_rejected, not raised. Returns True on a reset.
        """
        items = list(transforms)
        if not items:
            return False
        if static:
            self._set_transforms(items, True)
            return False
        with self._lock:
            return self._admit(("tf",), max(int(s) for _, _, s, _ in items),
                               lambda: self._set_transforms(items, False, locked=True))

    def _set_transforms(self, items: list, static: bool, locked: bool = False) -> None:
        if not static:
            self._note(("tf",), "tf", max(int(s) for _, _, s, _ in items))
        rejected = 0
        for parent, child, stamp, T in items:
            try:
                ok = self.tf.set_transform(parent, child, int(stamp), T, static=static)
            except ValueError as e:
                ok = False
                self.last_error = str(e)
            rejected += not ok
        if rejected:
            if locked:
                self._stats["tf_rejected"] += rejected
            else:
                with self._lock:
                    self._stats["tf_rejected"] += rejected

    # ------------------------------------------------------------------ matching
    def _offer(self, p: _Pending, c: int, img: _Image) -> None:
        """Keep `img` for camera c of frame p if it is the nearest to the expected stamp so far."""
        target = p.stamp + self._offsets[c]
        d = abs(img.stamp - target)
        cur = p.images[c]
        if d <= self.config.match_window_ns and (cur is None or d < abs(cur.stamp - target)):
            p.images[c] = img

    def _new_trigger(self, img: _Image) -> None:
        p = _Pending(img.stamp, [None] * len(self.config.cameras))
        p.images[self._trigger] = img
        for c, buf in enumerate(self._cam_buf):
            for b in buf:
                self._offer(p, c, b)
        self._pending.append(p)  # trigger stamps are increasing: stays sorted
        if len(self._pending) > self.config.max_pending_triggers:
            self._pending.pop(0)
            self._stats["frames_dropped_overload"] += 1
        self._collect()

    def _camera_final(self, p: _Pending, c: int) -> bool:
        """Whether camera c can no longer deliver a nearer image for frame p.

        Images of one camera arrive in stamp order, so the slot is final once the camera has
        sent an image at/after the expected stamp, or once its next image, at least ~0.75 of
        its shortest recent period later, would be farther than the current candidate (or
        outside the window): then a camera firing just before the trigger (CAM_FRONT_LEFT in
        nuScenes, -8 ms) does not hold the frame back until its next image or the timeout.
        """
        newest = self._cam_newest[c]
        if newest is None:
            return False
        target = p.stamp + self._offsets[c]
        if newest >= target:
            return True
        stamps = [b.stamp for b in self._cam_buf[c]]
        gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
        if not gaps:
            return False
        cur = p.images[c]
        reach = abs(cur.stamp - target) if cur is not None else self.config.match_window_ns
        return newest + 0.75 * min(gaps) > target + reach

    def _cameras_final(self, p: _Pending, timed_out: bool) -> bool:
        return timed_out or all(self._camera_final(p, c) for c in range(len(self._cam_newest))
                                if c != self._trigger)

    def _radar_end(self, r: int, t: int, timed_out: bool) -> int | None:
        """End index (exclusive) of radar r's sweeps for a frame at t; None = keep waiting."""
        return self._rule.end(self._radar_stamps[r], t, complete=timed_out)

    def _radar_start(self, r: int, t: int, end: int) -> int:
        """Start index of radar r's sweeps for a frame at t ending at `end` (exclusive)."""
        return self._rule.start(self._radar_stamps[r], t, end)

    def _try_complete(self, p: _Pending) -> _Job | None:
        cfg = self.config
        if not self._cameras_final(p, self._kind_now("camera", p.stamp) > p.stamp + cfg.camera_timeout_ns):
            return None
        ends = [self._radar_end(r, p.stamp, False) for r in range(len(cfg.radars))]
        waiting = [r for r, e in enumerate(ends) if e is None]
        if waiting:
            if self._kind_now("radar", p.stamp) <= p.stamp + cfg.radar_timeout_ns:
                return None
            for r in waiting:  # give up on these radars: take what they have up to the limit
                ends[r] = self._radar_end(r, p.stamp, True)
        sweeps = [self._radar_buf[r][self._radar_start(r, p.stamp, end):end] for r, end in enumerate(ends)]
        job = _Job(p.stamp, list(p.images), sweeps, len(waiting), sum(not sw for sw in sweeps))
        settled = self._tf_settled(job)
        if settled is None:
            return None
        job.tf_timeout = not settled
        return job

    def _tf_settled(self, job: _Job) -> bool | None:
        """True when the TF buffer covers every input of the job up to its stamp (no
        extrapolation: odometry a few ms late would otherwise cost cm at speed, and replay
        results would depend on how /tf interleaves with the sensors); None = wait; False =
        waited `tf_timeout_ns` past the needed stamp, build with what there is."""
        cfg = self.config
        need: dict[str, int] = {cfg.base_frame: job.stamp}
        for item in [i for i in job.images if i is not None] + [s for sw in job.sweeps for s in sw]:
            need[item.frame_id] = max(need.get(item.frame_id, item.stamp), item.stamp)
        latest_needed = max(need.values())
        for frame, stamp in need.items():
            try:
                latest = self.tf.latest_common_time(cfg.fixed_frame, frame)
            except TransformError:
                continue  # unknown/unconnected: waiting will not help, the build counts it
            if latest is not None and latest < stamp:
                if self._now is not None and self._now > latest_needed + cfg.tf_timeout_ns:
                    return False
                return None
        return True

    def _collect(self) -> None:
        """Move completed frames to the ready queue (newest wins); older unfinished ones are
        superseded by a newer completed frame and dropped (frames are emitted in stamp order)."""
        last = -1
        jobs: dict[int, _Job] = {}
        for i, p in enumerate(self._pending):
            job = self._try_complete(p)
            if job is not None:
                jobs[i] = job
                last = i
        if last < 0:
            return
        for i in range(last + 1):
            if i in jobs:
                self._ready.append(jobs[i])
            else:
                self._stats["frames_dropped_overload"] += 1
        del self._pending[:last + 1]
        while len(self._ready) > self.config.max_pending_frames:
            self._ready.popleft()
            self._stats["frames_dropped_overload"] += 1

    def poll(self, now_ns: int | None = None) -> list[SensorFrame]:
        """Build and return the completed frames (oldest first, at most max_pending_frames).

        now_ns: the current time on the sensors' clock (the node's ROS clock, sim time when
        replaying), so that timeouts fire even when inputs stop (e.g. at the end of a bag).
        Frames that cannot be built (no TF for base_link, invalid) are counted and skipped.
        """
        with self._lock:
            if now_ns is not None:
                if self._now is None or int(now_ns) > self._now:
                    self._now = int(now_ns)
                if self._poll_now is None or int(now_ns) > self._poll_now:
                    self._poll_now = int(now_ns)
            self._collect()
            jobs = list(self._ready)
            self._ready.clear()
        counts = dict.fromkeys(STAT_KEYS, 0)
        self.poll_decode_ms = 0.0
        frames = [f for f in (self._build(j, counts) for j in jobs) if f is not None]
        counts["frames_built"] = len(frames)
        with self._lock:
            for k, v in counts.items():
                self._stats[k] += v
        return frames

    # ------------------------------------------------------------------ building
    def _build(self, job: _Job, counts: dict[str, int]) -> SensorFrame | None:
        cfg, tf, t = self.config, self.tf, job.stamp
        n = len(cfg.cameras)
        counts["radar_timeouts"] += job.radar_timeouts
        counts["radars_missing"] += job.radars_missing
        counts["tf_timeouts"] += job.tf_timeout
        try:
            ego_from_fixed = tf.lookup(cfg.base_frame, cfg.fixed_frame, t)
        except TransformError as e:
            counts["frames_dropped_tf"] += 1
            self.last_error = f"frame at {t} ns dropped: {e}"
            return None
        self._decode_all(job)
        front = job.images[self._trigger]
        if not self._decoded(self._trigger, front):
            counts["frames_dropped_decode"] += 1
            self.last_error = f"frame at {t} ns dropped: trigger image: {front.error}"
            return None
        H, W = front.image.shape[:2]
        images = np.zeros((n, H, W, 3), dtype=np.uint8)
        intrinsics = np.tile(np.eye(3), (n, 1, 1))
        cam_to_ego = np.tile(np.eye(4), (n, 1, 1))
        mask = np.zeros(n, dtype=bool)
        for c, img in enumerate(job.images):
            if img is None:
                counts["cameras_masked"] += 1
                continue
            try:
                fixed_from_cam = tf.lookup(cfg.fixed_frame, img.frame_id, img.stamp)
            except TransformError as e:
                if c == self._trigger:
                    counts["frames_dropped_tf"] += 1
                    self.last_error = f"frame at {t} ns dropped (no TF for the trigger camera): {e}"
                    return None
                counts["cameras_masked_tf"] += 1
                self.last_error = f"{cfg.cameras[c]} masked: {e}"
                continue
            if not self._decoded(c, img):
                counts["cameras_masked_decode"] += 1
                self.last_error = f"{cfg.cameras[c]} masked: {img.error}"
                continue
            cam_to_ego[c] = ego_from_fixed @ fixed_from_cam
            if img.image.shape[:2] != (H, W):
                images[c], intrinsics[c] = _resize(img.image, img.K, H, W)
                counts["cameras_resized"] += 1
            else:
                images[c] = img.image
                intrinsics[c] = img.K
            mask[c] = True
        radar = self._radar_rows(job, ego_from_fixed, counts)
        ego_to_global = np.eye(4)
        if cfg.global_frame:
            try:
                ego_to_global = tf.lookup(cfg.global_frame, cfg.base_frame, t)
            except TransformError:
                counts["ego_to_global_missing"] += 1
        else:
            counts["ego_to_global_missing"] += 1
        frame = SensorFrame(stamp=int(t), images=images, intrinsics=intrinsics, cam_to_ego=cam_to_ego,
                            camera_mask=mask, radar=radar, ego_to_global=ego_to_global)
        try:
            return frame.validate(n)
        except FrameError as e:
            counts["frames_invalid"] += 1
            self.last_error = f"frame at {t} ns invalid: {e}"
            return None

    def _decode_all(self, job: _Job) -> None:
        """Decode the job's still-encoded images, `decode_threads` at a time."""
        todo = [(c, img) for c, img in enumerate(job.images)
                if img is not None and img.image is None and img.error is None]
        if not todo:
            return
        t0 = time.perf_counter()
        n = min(self.config.decode_threads, len(todo))
        if n > 1:
            if self._decode_pool is None:
                self._decode_pool = ThreadPoolExecutor(max_workers=self.config.decode_threads,
                                                       thread_name_prefix="imkd_decode")
            list(self._decode_pool.map(lambda ci: self._decoded(*ci), todo))
        else:
            for c, img in todo:
                self._decoded(c, img)
        self.poll_decode_ms += (time.perf_counter() - t0) * 1e3

    def _decoded(self, c: int, img: _Image) -> bool:
        """Decode a still-encoded image once (kept for another frame that may use it); False
        (img.error says why) when it does not decode or is not a valid image + K."""
        if img.image is not None:
            return True
        if img.error is not None:
            return False
        try:
            rgb, K = img.encoded.decode()  # type: ignore[union-attr]
            img.K = self._check_image(c, rgb, K)
            img.image = rgb
            img.encoded = None  # the pixels replace the bytes
        except ValueError as e:
            img.error = str(e)
            return False
        return True

    def _radar_rows(self, job: _Job, ego_from_fixed: np.ndarray, counts: dict[str, int]) -> np.ndarray:
        """All selected sweeps, motion-compensated into base_link at the frame stamp -> (N, 7)."""
        cfg, tf, t = self.config, self.tf, job.stamp
        rows: list[np.ndarray] = []
        for sweeps in job.sweeps:
            for s in sweeps:  # ~30 scalar lookups per frame (~15 us each): cheaper than batching
                try:
                    fixed_from_radar = tf.lookup(cfg.fixed_frame, s.frame_id, s.stamp)
                except TransformError as e:
                    counts["radar_sweeps_dropped_tf"] += 1
                    self.last_error = f"radar sweep at {s.stamp} ns ({s.frame_id}) dropped: {e}"
                    continue
                rows.append(radar_features(s.points, ego_from_fixed @ fixed_from_radar, dt=(t - s.stamp) * 1e-9))
        if not rows:
            return np.zeros((0, len(RADAR_COLUMNS)), dtype=np.float32)
        radar = np.concatenate(rows)
        finite = np.isfinite(radar).all(axis=1)
        if not finite.all():
            counts["radar_points_nonfinite"] += int((~finite).sum())
            radar = radar[finite]
        return radar
