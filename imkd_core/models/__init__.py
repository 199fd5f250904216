"""Networks: backbones, view transform, radar/LiDAR encoders, fusion, BEV encoder, heads."""
