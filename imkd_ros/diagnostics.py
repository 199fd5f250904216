"""The detector node's /diagnostics: the kinds of bad input it counts, the windows and log
throttle it keeps, and the DiagnosticArray built from a snapshot of its state.

Five DiagnosticStatus entries, hardware id = the node name (README.md, *Diagnostics*): inputs,
frames, bad input, latency, timing. Each level judges what changed since the previous report
(rates, new drops, new bad input), the values carry the running totals. The builder sees only
a `NodeState` snapshot, so the node keeps its locking and this module none of its plumbing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from imkd_ros.assembler import STAT_KEYS

# Counted kinds of bad input (keys of the "bad input" diagnostics status, always all present).
BAD_KINDS: tuple[str, ...] = (
    "stamp_zero",           # header stamp 0 (or negative)
    "stamp_future",         # stamp more than max_stamp_future ahead of the node clock
    "frame_id_empty",       # sensor message without header.frame_id
    "image_encoding",       # unsupported Image encoding / CompressedImage format
    "image_corrupt",        # JPEG/PNG bytes that do not decode
    "image_empty",          # no pixels / no bytes
    "image_too_large",      # more than max_image_bytes
    "image_dimensions",     # header (JPEG SOF / PNG IHDR / Image fields) declares more than max_image_size
    "camera_info_mismatch",  # image size differs from its CameraInfo's (after ROI/binning): no K for it
    "image_malformed",      # Image data size inconsistent with height * step, ...
    "waiting_camera_info",  # image held back because its camera has sent no CameraInfo yet
    "camera_info_invalid",  # CameraInfo without a pinhole K or image size
    "radar_empty",          # PointCloud2 without fields
    "radar_fields",         # PointCloud2 lacking nuScenes radar fields (x, y, z, rcs, ...)
    "radar_malformed",      # truncated data, bad steps, overlapping fields, ...
    "radar_too_large",      # more than max_radar_points points (dropped unparsed)
    "radar_nan_points",     # sweeps with NaN/inf x/y/z (those points are dropped)
    "tf_invalid",           # TFMessage with a non-finite or zero-quaternion transform
    "tf_stamp_invalid",     # dynamic transforms with a zero or far-future stamp (dropped)
    "tf_static_conflict",   # dynamic /tf re-parenting a frame whose edge /tf_static defines (dropped)
    "assembler_rejected",   # input the assembler refused (unknown frame layout, bad K, ...)
    "callback_errors",      # any other exception while handling an input (logged with its traceback)
    "inference_errors",     # the predictor raised on a built frame
    "parameter_rejected",   # run-time parameter changes refused
)


class Window:
    """Bounded window of recent float samples with percentiles (thread-safe enough: GIL + copy)."""

    def __init__(self, n: int = 200) -> None:
        self.values: deque[float] = deque(maxlen=n)

    def add(self, v: float) -> None:
        self.values.append(float(v))

    def summary(self) -> dict[str, float]:
        v = np.array(list(self.values), dtype=np.float64)
        if v.size == 0:
            return {}
        return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
                "last": float(v[-1])}


class Throttle:
    """Per-key log throttle: at most one message per key every `period` s, with a skipped count."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._skipped: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> int | None:
        """None = stay quiet; else log now (returns how many were skipped since the last one)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._skipped[key] += 1
                return None
            self._last[key] = now
            return self._skipped.pop(key, 0)


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


@dataclass
class NodeState:
    """What one report shows, read from the node at one instant."""

    name: str                              # the node's name (status names, hardware id)
    waiting_for: str | None                # what the node waits for before it can build frames
    base_frame: str
    input_topics: list[str]                # every input topic, in report order
    sensor_topics: list[str]               # image and radar topics (a silent one warns)
    input_counts: dict[str, int]           # messages fully handled per topic
    frames_without_tf: list[str]           # sensor frames with no TF to base_frame
    frames_published: int
    detections_subscribers: int
    ros_clock_resets: int
    pending: int                           # frames in assembly
    assembler_stats: dict[str, int]        # FrameAssembler.stats (STAT_KEYS)
    bad: dict[str, int]                    # count per BAD_KINDS
    latency: dict[str, dict[str, float]]   # Window.summary() per latency kind
    stages: dict[str, dict[str, float]]    # Window.summary() per stage of ~/timing
    device: str
    model: str


class DiagnosticsReport:
    """Builds the node's DiagnosticArray; keeps the previous report's totals for rates and news."""

    def __init__(self) -> None:
        self._last_rates: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._last_stats: dict[str, int] = {}
        self._last_bad: dict[str, int] = dict.fromkeys(BAD_KINDS, 0)

    def build(self, s: NodeState) -> DiagnosticArray:
        """The five statuses for state `s` (header stamp left to the caller's clock)."""
        now_mono = time.monotonic()
        t_prev, counts_prev = self._last_rates
        dt = max(now_mono - t_prev, 1e-6)
        self._last_rates = (now_mono, dict(s.input_counts))
        return DiagnosticArray(status=[self._inputs(s, counts_prev, dt), self._frames(s), self._bad_input(s),
                                       *self._timing(s)])

    def _inputs(self, s: NodeState, counts_prev: dict[str, int], dt: float) -> DiagnosticStatus:
        counts = s.input_counts
        rates = {t: (counts.get(t, 0) - counts_prev.get(t, 0)) / dt for t in s.input_topics}
        values = [kv("waiting_for", s.waiting_for or "")]
        values += [kv(f"rate_hz {t}", rates[t]) for t in s.input_topics]
        values += [kv(f"count {t}", counts.get(t, 0)) for t in s.input_topics]
        values.append(kv("frames_without_tf", ",".join(sorted(set(s.frames_without_tf)))))
        silent = [t for t in s.sensor_topics if rates[t] == 0.0]
        if s.waiting_for:
            lvl, msg = DiagnosticStatus.WARN, f"waiting for {s.waiting_for}"
        elif s.frames_without_tf:
            lvl, msg = DiagnosticStatus.WARN, f"no TF to {s.base_frame} for {sorted(set(s.frames_without_tf))}"
        elif silent:
            lvl, msg = DiagnosticStatus.WARN, f"{len(silent)} sensor topic(s) silent"
        else:
            lvl, msg = DiagnosticStatus.OK, "all inputs arriving"
        return DiagnosticStatus(level=lvl, name=f"{s.name}: inputs", message=msg, hardware_id=s.name, values=values)

    def _frames(self, s: NodeState) -> DiagnosticStatus:
        stats = s.assembler_stats
        new = {k: stats[k] - self._last_stats.get(k, 0) for k in STAT_KEYS}
        self._last_stats = stats
        values = [kv("frames_published", s.frames_published), kv("detections_subscribers", s.detections_subscribers),
                  kv("ros_clock_resets", s.ros_clock_resets), kv("pending", s.pending)]
        values += [kv(k, stats[k]) for k in STAT_KEYS]
        drops = sum(new[k] for k in ("frames_dropped_overload", "frames_dropped_tf", "frames_invalid",
                                     "frames_dropped_decode"))
        masked = new["cameras_masked"] + new["cameras_masked_tf"] + new["cameras_masked_decode"]
        lvl, msg = (DiagnosticStatus.WARN, f"{drops} frame(s) dropped, {masked} camera slot(s) masked") \
            if drops or masked else (DiagnosticStatus.OK, f"{s.frames_published} frames published")
        return DiagnosticStatus(level=lvl, name=f"{s.name}: frames", message=msg, hardware_id=s.name, values=values)

    def _bad_input(self, s: NodeState) -> DiagnosticStatus:
        bad = s.bad
        new = {k: bad[k] - self._last_bad.get(k, 0) for k in BAD_KINDS}
        self._last_bad = bad
        grew = [k for k in BAD_KINDS if new[k]]
        lvl = DiagnosticStatus.ERROR if new["inference_errors"] else DiagnosticStatus.WARN if grew \
            else DiagnosticStatus.OK
        msg = ("new: " + ", ".join(f"{k} +{new[k]}" for k in grew)) if grew else "none new"
        return DiagnosticStatus(level=lvl, name=f"{s.name}: bad input", message=msg, hardware_id=s.name,
                                values=[kv(k, bad[k]) for k in BAD_KINDS])

    @staticmethod
    def _timing(s: NodeState) -> tuple[DiagnosticStatus, DiagnosticStatus]:
        """The latency status (every window's summary) and the per-stage timing status."""
        values = [kv(f"{k} {q}", v) for k, summary in s.latency.items() for q, v in summary.items()]
        p50 = s.latency["latency_ms"].get("p50")
        latency = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{s.name}: latency", hardware_id=s.name,
                                   values=values, message=f"p50 {p50:.1f} ms (last input -> published)"
                                   if p50 is not None else "no frames yet")
        values = [kv("device", s.device), kv("model", s.model)]
        values += [kv(f"{k} {q}_ms", v) for k, summary in s.stages.items() for q, v in summary.items()
                   if q in ("p50", "last")]
        total = s.stages.get("total", {}).get("p50")
        timing = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{s.name}: timing", hardware_id=s.name,
                                  values=values,
                                  message=f"predictor p50 {total:.1f} ms" if total is not None else "no frames yet")
        return latency, timing
