"""Code deps of each DVC stage, from the imports: `python -m cvpr24.core.dvcdeps [--write] [slug ...]`.

A stage of `pipelines/<slug>/dvc.yaml` runs `kedro run --pipeline=<slug> --tags=<tag>`; its nodes are the
pipeline's nodes with that tag. The modules of src/cvpr24 those nodes import, transitively (lazy imports
inside functions and package `__init__` imports included), are the stage's code deps; package
`__init__.py` files themselves are left out. `tests/unit/core/test_dvc_deps.py` fails when one is missing;
`--write` rewrites the `src/cvpr24/...` lines of each stage's deps (other deps and comments are kept).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from functools import partial
from importlib import import_module
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]  # src/cvpr24/core -> repository root
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Names of the cvpr24 modules `path` imports (`from pkg import mod` counts `pkg.mod` when it is one)."""
    pkg = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    # a package __init__ runs its top-level imports whenever a submodule is imported; a module's lazy
    # imports (inside functions) count too, since a node may call them
    nodes = tree.body if path.name == "__init__.py" else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cvpr24")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if not base.startswith("cvpr24"):
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}") is not None}
    return {m for m in out if _module_file(m) is not None}


def _closure(files: set[Path]) -> set[Path]:
    seen, todo = set(), list(files)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += [_module_file(m) for m in _imports(f)]
    return {f for f in seen if f.name != "__init__.py"}


def _stages(slug: str):
    doc = yaml.safe_load((ROOT / "pipelines" / slug / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        tag = re.search(r"--tags=(\w+)", stage["cmd"])
        if tag:
            yield name, tag.group(1), {str(d) for d in stage.get("deps", [])}


def _node_files(slug: str, tag: str) -> set[Path]:
    pipe = import_module(f"cvpr24.pipelines.{slug}.pipeline").create_pipeline()
    files = set()
    for n in pipe.only_nodes_with_tags(tag).nodes:
        func = n.func.func if isinstance(n.func, partial) else n.func
        files.add(Path(inspect.getfile(func)).resolve())
    return files




def needed_deps(slug: str) -> dict[str, list[str]]:
    """{stage: sorted code deps (paths relative to the repository root)}."""
    return {stage: sorted(str(f.relative_to(ROOT)) for f in _closure(_node_files(slug, tag)))
            for stage, tag, _ in _stages(slug)}


def missing_deps(slug: str) -> dict[str, list[str]]:
    need = needed_deps(slug)
    return {stage: sorted(set(need[stage]) - deps) for stage, _, deps in _stages(slug)
            if set(need[stage]) - deps}


def write_deps(slug: str) -> None:
    """Replace each stage's `src/cvpr24/*.py` deps by the needed ones, keeping every other line."""
    path = ROOT / "pipelines" / slug / "dvc.yaml"
    lines, need = path.read_text().splitlines(keepends=True), needed_deps(slug)
    out, stage, in_deps = [], None, False
    for line in lines:
        m = re.match(r"^  ([A-Za-z0-9_]+):\s*$", line)
        if m:
            stage, in_deps = m.group(1), False
        if re.match(r"^    deps:\s*$", line) and stage in need:
            out.append(line)
            out += [f"      - {d}\n" for d in need[stage]]
            in_deps = True
            continue
        if in_deps and re.match(r"^      - src/cvpr24/.*\.py\s*$", line):
            continue
        if in_deps and not line.startswith("      "):
            in_deps = False
        out.append(line)
    path.write_text("".join(out))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    write = "--write" in args
    slugs = [a for a in args if not a.startswith("--")] or sorted(
        p.parent.name for p in (ROOT / "pipelines").glob("*/dvc.yaml"))
    bad = 0
    for slug in slugs:
        if write:
            write_deps(slug)
        for stage, missing in missing_deps(slug).items():
            bad += 1
            print(f"{slug}:{stage} lacks {missing}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
