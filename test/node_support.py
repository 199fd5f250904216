"""Test-only support around the node harness (imkd_ros.harness): the frames node tests play,
hostile images, SensorFrame differences."""

from __future__ import annotations

import cv2
import numpy as np

from imkd_core.frame import SensorFrame
from imkd_ros.raw_frames import SYNTHETIC_NODE_DATA, FrameSet, load_frames
from test.datasets import HAS_REAL, REAL_ROOT, REAL_VERSION, synthetic_root

DATAROOT = REAL_ROOT


def node_frames(real: bool = True, **kwargs) -> FrameSet:
    """harness.load_frames of the real nuScenes subset where present (and `real`), else of the
    synthetic world (harness.SYNTHETIC_NODE_DATA, generated once per run of the generator)."""
    if real and HAS_REAL:
        return load_frames(REAL_ROOT, REAL_VERSION, **kwargs)
    root = synthetic_root(SYNTHETIC_NODE_DATA)
    return load_frames(root, "v1.0-synth", **kwargs)

def huge_jpeg(h: int = 60000, w: int = 60000) -> bytes:
    """A valid 16 x 16 JPEG (about 600 bytes) whose frame header (SOF0) declares h x w pixels."""
    ok, enc = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    buf = bytearray(enc.tobytes())
    i = buf.index(b"\xff\xc0")
    buf[i + 5:i + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(buf)


def huge_png(h: int = 100000, w: int = 100000) -> bytes:
    """An 8 x 8 PNG whose IHDR declares h x w pixels."""
    ok, enc = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    buf = bytearray(enc.tobytes())
    buf[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    return bytes(buf)


def frame_differences(a: SensorFrame, b: SensorFrame, atol: float = 1e-5) -> list[str]:
    """What differs between two SensorFrames of one stamp (empty: the same frame up to float
    round-off of the pose maths): pixels, K, masks exactly; poses and radar rows within atol."""
    out = []
    if not np.array_equal(a.camera_mask, b.camera_mask):
        out.append(f"camera_mask {a.camera_mask.tolist()} != {b.camera_mask.tolist()}")
    if a.images.shape != b.images.shape or not np.array_equal(a.images, b.images):
        out.append("images differ")
    for name in ("intrinsics", "cam_to_ego", "ego_to_global"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or not np.allclose(x, y, atol=atol, rtol=0):
            out.append(f"{name} differ (max {np.abs(x - y).max() if x.shape == y.shape else 'shape'})")
    if a.radar.shape != b.radar.shape:
        out.append(f"radar {a.radar.shape} != {b.radar.shape} (dt {sorted(set(np.round(a.radar[:, 6], 3)))} vs "
                   f"{sorted(set(np.round(b.radar[:, 6], 3)))})")
    elif not np.allclose(a.radar, b.radar, atol=atol, rtol=1e-6):
        out.append(f"radar rows differ (max {np.abs(a.radar - b.radar).max():.2e})")
    return out
