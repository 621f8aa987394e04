"""vid-TLDR: Training Free Token merging for Light-weight Video Transformer (CVPR 2024)."""

from cvpr24.pipelines.vidtldr.pipeline import create_pipeline

__all__ = ["create_pipeline"]
