"""AV2AV: Direct Audio-Visual Speech to Audio-Visual Speech Translation with Unified Audio-Visual Speech
Representation (CVPR 2024)."""


def create_pipeline(**kwargs):
    """Kedro's entry point; imported lazily so that importing an AV2AV module does not import every phase
    (each DVC stage depends only on the modules its nodes import: cvpr24.core.dvcdeps)."""
    from cvpr24.pipelines.av2av.pipeline import create_pipeline as create

    return create(**kwargs)


__all__ = ["create_pipeline"]
