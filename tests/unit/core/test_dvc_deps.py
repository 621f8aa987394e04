"""DVC stages cannot go stale: every module of src/cvpr24 that a stage's nodes import (transitively, lazy
imports inside functions included) is listed in that stage's `deps` in pipelines/<slug>/dvc.yaml.
Fix a failure with `python -m cvpr24.core.dvcdeps --write <slug>` (see cvpr24.core.dvcdeps)."""

from __future__ import annotations

import pytest

from cvpr24.core.dvcdeps import ROOT, SRC, _closure, missing_deps

SLUGS = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/dvc.yaml"))


@pytest.mark.parametrize("slug", SLUGS)
def test_every_imported_module_is_a_dep_of_its_stage(slug):
    missing = missing_deps(slug)
    assert not missing, f"run `python -m cvpr24.core.dvcdeps --write {slug}`; missing: {missing}"


def test_the_import_walk_sees_lazy_imports():
    files = _closure({SRC / "cvpr24" / "core" / "datasets.py"})
    assert SRC / "cvpr24" / "core" / "tracking.py" in files  # imported inside a method
