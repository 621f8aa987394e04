"""MagNet: Mask Grounding for Referring Image Segmentation (CVPR 2024)."""


def create_pipeline(**kwargs):
    """Kedro's entry point; imported lazily so that importing a MagNet module does not import every phase
    (each DVC stage depends only on the modules its nodes import: cvpr24.core.dvcdeps)."""
    from cvpr24.pipelines.magnet.pipeline import create_pipeline as create

    return create(**kwargs)


__all__ = ["create_pipeline"]
