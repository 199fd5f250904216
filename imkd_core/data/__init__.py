"""Data readers: nuScenes (devkit), synthetic nuScenes-format generator, training Dataset."""
