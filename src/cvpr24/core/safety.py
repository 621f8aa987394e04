"""Safe defaults for the two ways a downloaded file can run or plant code: archives and checkpoints.

- `safe_extract(archive, dest)`: unpacks a `.tar[.gz|.bz2|.xz]` or `.zip` only after checking every
  member: no absolute path, no `..` component, nothing that lands outside `dest`, no symbolic or hard link
  whose target leaves `dest`, no device file or FIFO. A bad member raises `UnsafeArchiveError` naming it,
  and nothing is written (the whole archive is checked before the first byte is extracted).
- `load_weights(path)`: `torch.load(..., weights_only=True)`, the only way the project loads a checkpoint
  or pretrained weights: tensors and plain containers only, never arbitrary pickled objects.

Dataset readers use these for real data a user downloads (the `full` profile).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder (or is not a plain file)."""


def _inside(dest: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(dest.resolve())
        return True
    except ValueError:
        return False


def _check_name(archive: Path, dest: Path, name: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    target = dest / Path(*pure.parts) if pure.parts else dest
    if not _inside(dest, target):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside {dest}; refusing")
    return target


def _check_tar(archive: Path, dest: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        target = _check_name(archive, dest, m.name)
        if m.issym() or m.islnk():
            link = PurePosixPath(m.linkname.replace("\\", "/"))
            if link.is_absolute():
                raise UnsafeArchiveError(f"{archive}: link {m.name!r} points to the absolute path {m.linkname!r}")
            # a symlink's target is relative to the link's folder, a hard link's to the archive root
            base = target.parent if m.issym() else dest
            if not _inside(dest, base / Path(*link.parts)):
                raise UnsafeArchiveError(f"{archive}: link {m.name!r} -> {m.linkname!r} escapes {dest}")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device file or FIFO; refusing")
    return members


def _check_zip(archive: Path, dest: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        _check_name(archive, dest, info.filename)
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar or zip archive into `dest` after checking every member; return the extracted paths."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _check_zip(archive, dest, zf)
            zf.extractall(dest)  # noqa: S202 - every member checked above
            return [dest / n for n in zf.namelist()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = _check_tar(archive, dest, tf)
            # the "data" filter (Python >= 3.11.4) re-checks the same rules and strips unsafe modes
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **kwargs)  # noqa: S202 - every member checked above
            return [dest / m.name for m in members]
    raise UnsafeArchiveError(f"{archive} is neither a tar nor a zip archive")


def load_weights(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load` with `weights_only=True`: tensors and plain containers, never arbitrary objects."""
    import torch

    return torch.load(Path(path), map_location=map_location, weights_only=True)
