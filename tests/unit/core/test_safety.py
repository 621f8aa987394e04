"""Nothing unsafe by default: archives are extracted only after every member is checked, checkpoints and
weights load with weights_only=True, and no server in the project's conf, docs or tests listens beyond
loopback."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from cvpr24.core.safety import UnsafeArchiveError, load_weights, safe_extract
from cvpr24.core.training import Checkpointer

REPO = Path(__file__).resolve().parents[3]


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data or b"")
                tf.addfile(info, io.BytesIO(data or b""))
    return path


def test_good_tar_and_zip_extract(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [("sidd/a.txt", b"a", None), ("sidd/link", None, "a.txt")])
    got = safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out" / "sidd" / "a.txt").read_bytes() == b"a" and len(got) == 2
    z = tmp_path / "ok.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x/y.txt", "y")
    safe_extract(z, tmp_path / "zout")
    assert (tmp_path / "zout" / "x" / "y.txt").read_text() == "y"


@pytest.mark.parametrize("members, why", [
    ([("/etc/evil", b"x", None)], "absolute"),
    ([("ok.txt", b"x", None), ("../evil", b"x", None)], r"'\.\.'"),
    ([("sub/../../evil", b"x", None)], r"'\.\.'"),
    ([("link", None, "/etc/passwd")], "absolute path"),
    ([("sub/link", None, "../../outside")], "escapes"),
])
def test_unsafe_tar_is_refused_before_anything_is_written(tmp_path, members, why):
    arc = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=why):
        safe_extract(arc, dest)
    assert not any(dest.rglob("*")), "nothing may be extracted from a rejected archive"
    assert not (tmp_path / "evil").exists()


def test_unsafe_zip_is_refused(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("good.txt", "g")
        zf.writestr("../evil.txt", "e")
    with pytest.raises(UnsafeArchiveError, match=r"evil\.txt"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "good.txt").exists()


class Payload:
    def __reduce__(self):  # what a malicious checkpoint would run on a pickle load
        return (print, ("pwned",))


def test_checkpoints_and_weights_refuse_pickled_objects(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path / "ck")
    ckpt.save(1, {"step": 1, "w": torch.ones(2)})
    evil = tmp_path / "ck" / "step_00000002.pt"
    torch.save({"step": 2, "obj": Payload()}, evil)
    from cvpr24.core.training import _sha256

    evil.with_suffix(".sha256").write_text(_sha256(evil) + "\n")  # a valid checksum does not make it safe
    state = ckpt.latest()
    assert state["step"] == 1  # the unsafe one is skipped, with a warning, and the previous one used
    assert "cannot be loaded" in caplog.text
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_weights(evil)
    assert torch.equal(load_weights(tmp_path / "ck" / "step_00000001.pt")["w"], torch.ones(2))


def test_code_loads_torch_files_only_with_weights_only_and_extracts_only_through_safe_extract():
    offenders = []
    for py in (REPO / "src").rglob("*.py"):
        text = py.read_text()
        for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                offenders.append(f"{py.relative_to(REPO)}: {m.group(0)[:80]}")
        if py.name != "safety.py" and re.search(r"\.extractall\(|\.extract\(", text):
            offenders.append(f"{py.relative_to(REPO)}: archive extraction outside core.safety")
    assert not offenders, offenders


def test_servers_in_conf_docs_and_tests_bind_to_loopback():
    import yaml

    for yml in (REPO / "conf").glob("*/mlflow.yml"):
        ui = (yaml.safe_load(yml.read_text()) or {}).get("ui")
        if ui:
            assert ui.get("host") == "127.0.0.1", yml
    texts = [REPO / "README.md", REPO / "Makefile", *(REPO / "tests").rglob("*.py")]
    wildcard = re.compile(r"(--host[ =]|host=|-H )['\"]?0\.0\.0\.0")
    for path in texts:
        assert not wildcard.search(path.read_text()), f"{path} starts a server on all interfaces"
    readme = (REPO / "README.md").read_text()
    for cmd in re.findall(r"^\s*(?:mlflow server|kedro viz run|moto_server)[^\n]*", readme, re.M):
        assert "127.0.0.1" in cmd, cmd
