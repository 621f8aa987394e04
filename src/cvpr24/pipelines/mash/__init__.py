"""MASH: Masked and Shuffled Blind Spot Denoising for Real-World Images (CVPR 2024)."""

from cvpr24.pipelines.mash.pipeline import create_pipeline

__all__ = ["create_pipeline"]
