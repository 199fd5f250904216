"""Offline scripts: dataset generation, training, evaluation, export, benchmarks."""
