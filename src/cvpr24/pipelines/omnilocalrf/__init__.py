"""OmniLocalRF: Omnidirectional Local Radiance Fields from Dynamic Videos (CVPR 2024)."""


def create_pipeline(**kwargs):
    """Kedro's entry point; imported lazily so that importing an OmniLocalRF module does not import every phase
    (each DVC stage depends only on the modules its nodes import: cvpr24.core.dvcdeps)."""
    from cvpr24.pipelines.omnilocalrf.pipeline import create_pipeline as create

    return create(**kwargs)


__all__ = ["create_pipeline"]
