"""Shipped weights. `imkd_tiny_demo.pt`: a tiny student trained on our synthetic
nuScenes-format data (train/ablate.py, student_full row) for `make demo` - not a nuScenes model."""

from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().with_name("imkd_tiny_demo.pt")
