"""cvpr24: CVPR 2024 papers as reproducible Kedro / DVC / MLflow pipelines."""

from cvpr24.core.runtime import pin_numerics as _pin_numerics

# Before any torch kernel runs: the same float kernels on every x86-64 machine (see cvpr24.core.runtime).
_pin_numerics()

__version__ = "0.1.0"
