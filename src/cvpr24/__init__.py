"""cvpr24: CVPR 2024 papers as reproducible Kedro / DVC / MLflow pipelines."""

__version__ = "0.1.0"
