"""BUS: Open-Set Domain Adaptation for Semantic Segmentation (Choe et al., CVPR 2024)."""

from cvpr24.pipelines.bus.pipeline import create_pipeline

__all__ = ["create_pipeline"]
