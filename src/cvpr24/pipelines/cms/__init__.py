"""CMS: Contrastive Mean-Shift Learning for Generalized Category Discovery (Choi, Kang & Cho, CVPR 2024)."""

from cvpr24.pipelines.cms.pipeline import create_pipeline

__all__ = ["create_pipeline"]
