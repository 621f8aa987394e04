"""The one ingest dispatch every paper shares: embedded data, real data, or a clear error with the fix.

    def ingest(data, runtime):
        (clean, noisy, meta), fix = dispatch(
            data, slug="mash",
            embedded=lambda: _embedded(data, int(runtime["seed"])),
            real=lambda: _real(data["real"]),
            real_fix="see pipelines/mash/README.md (Real data)")
        ...validate with `fix` in the error message...

A dataset a reader must download and is not where the parameters say raises `MissingDatasetError`
(`missing_dataset(...)` builds one that names what, where it was looked for, and where to get it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class MissingDatasetError(FileNotFoundError):
    """A real dataset is not where the parameters point; the message says where to get it and put it."""


def missing_dataset(what: str, path: str | Path, fix: str) -> MissingDatasetError:
    return MissingDatasetError(f"{what} not found at {path}: {fix}")


def dispatch(data: dict[str, Any], *, slug: str, embedded: Callable[[], T], real: Callable[[], T],
             real_fix: str) -> tuple[T, str]:
    """Run the reader `data["source"]` names; return its result and the fix to quote in validation errors."""
    source = data.get("source")
    if source == "embedded":
        return embedded(), (f"the embedded generator produced bad data: check {slug}.data in "
                            f"conf/<env>/parameters/{slug}.yml")
    if source == "real":
        if not data.get("real"):
            raise MissingDatasetError(f"{slug}.data.source is 'real' but no dataset root is configured under "
                                      f"{slug}.data.real; {real_fix}")
        return real(), real_fix
    raise ValueError(f"{slug}.data.source must be 'embedded' or 'real', got {source!r} "
                     f"(conf/<env>/parameters/{slug}.yml)")
