"""IMKD networks: ResNet backbone, neck, depth net, lift-splat, radar/LiDAR pillars, fusion,
BEV encoder, CenterPoint head, and the `Teacher` / `Student` detectors."""

from imkd_core.models.detector import Student, Teacher, batch_to

__all__ = ["Student", "Teacher", "batch_to"]
