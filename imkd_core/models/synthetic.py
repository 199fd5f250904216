"""Old home of the random frames: kept importable; they live in imkd_core.data.synthetic.frames."""

from imkd_core.data.synthetic.frames import CLASS_SIZES, nuscenes_like_rig, synthetic_batch, synthetic_frame

__all__ = ["CLASS_SIZES", "nuscenes_like_rig", "synthetic_batch", "synthetic_frame"]
