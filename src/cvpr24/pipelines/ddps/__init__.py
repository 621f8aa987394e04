"""DDPS: Differentiable Display Photometric Stereo (CVPR 2024)."""

from cvpr24.pipelines.ddps.pipeline import create_pipeline

__all__ = ["create_pipeline"]
