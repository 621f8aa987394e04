"""`python -m cvpr24.core.index [reports_root]`: write `<reports_root>/README.md`, the index of every
paper's regenerated tables, with each paper's status, how many of our cells have a paper number beside
them, and the verdicts of the paper's claims tallied apart from the sanity checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, tally
from cvpr24.core.datasets import atomic_write_bytes

PAPERS = [
    ("mash", "MASH: Masked and Shuffled Blind Spot Denoising for Real-World Images"),
    ("magnet", "Mask Grounding for Referring Image Segmentation (MagNet)"),
    ("bus", "Open-Set Domain Adaptation for Semantic Segmentation (BUS)"),
    ("av2av", "AV2AV: Direct Audio-Visual Speech to Audio-Visual Speech Translation"),
    ("cms", "Contrastive Mean-Shift Learning for Generalized Category Discovery"),
    ("ddps", "Differentiable Display Photometric Stereo"),
    ("stylegru", "Exploiting Style Latent Flows for Generalizing Deepfake Video Detection"),
    ("ltm", "Lightweight Textured Mesh Extraction and Refinement of Large Unbounded Scenes"),
    ("omnilocalrf", "OmniLocalRF: Omnidirectional Local Radiance Fields from Dynamic Videos"),
    ("vidtldr", "vid-TLDR: Training-Free Token Merging for Light-weight Video Transformer"),
]


def paper_cells(folder: Path) -> tuple[int, int]:
    """(cells of ours with a published number beside them, cells of ours with a number), from the
    table CSVs (`<key>_ours` / `<key>_paper` columns)."""
    have = total = 0
    for csv in sorted(folder.glob("table_*.csv")):
        df = pd.read_csv(csv)
        for col in [c for c in df.columns if c.endswith("_ours")]:
            key = col.removesuffix("_ours")
            ours = pd.to_numeric(df[col], errors="coerce")
            paper = pd.to_numeric(df.get(f"{key}_paper", pd.Series(index=df.index, dtype=float)), errors="coerce")
            total += int(ours.notna().sum())
            have += int((ours.notna() & paper.notna()).sum())
    return have, total


def build_index(root: Path) -> str:
    lines = [
        "# Regenerated tables",
        "",
        "Written by `python -m cvpr24.core.index` (the root `dvc.yaml` stage) from each paper's report. "
        "`make repro` regenerates everything; `dvc repro pipelines/<slug>/dvc.yaml` one paper.",
        "",
        "Each table keeps the paper's layout. Where the paper (or a source it is quoted from) gives a number, "
        "it stands beside ours; *paper numbers* counts how many of our cells have one. The paper's claims are "
        "tallied apart from the sanity checks of our pipeline (verdict rule: `src/cvpr24/core/claims.py`).",
        "",
        "| paper | pipeline | tables | paper numbers available | paper's claims: pass / fail / inconclusive / n/a "
        "| sanity checks: pass / fail / inconclusive / n/a |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for slug, title in PAPERS:
        folder = root / slug
        if not (folder / "README.md").is_file():
            lines.append(f"| {title} | `{slug}` | not implemented yet | – | – | – |")
            continue
        tables = sorted(folder.glob("table_*.md"))
        links = ", ".join(f"[{_label(t)}]({slug}/{t.name})" for t in tables)
        have, total = paper_cells(folder)
        cells = f"{have} of {total} cells"
        paper_t = sanity_t = "–"
        claims = folder / "claims.csv"
        if claims.is_file():
            df = pd.read_csv(claims)
            paper_t = _tally_cell(tally(df, "paper"), f"{slug}/claims.md")
            if "kind" in df.columns and (df["kind"] == "sanity").any():
                sanity_t = _tally_cell(tally(df, "sanity"), f"{slug}/claims.md")
        lines.append(f"| [{title}]({slug}/README.md) | `{slug}` | {links} | {cells} | {paper_t} | {sanity_t} |")
    return "\n".join(lines) + "\n"


def _label(table_md: Path) -> str:
    """The table's label as its report names it (`### <label>: <title>`, from paper.yaml), not its file name."""
    first = table_md.read_text().split("\n", 1)[0].lstrip("#").strip()
    return first.split(":", 1)[0].strip() or table_md.stem


def _tally_cell(counts: dict[str, int], link: str) -> str:
    return f"[{counts[PASS]} / {counts[FAIL]} / {counts[INCONCLUSIVE]} / {counts[NA]}]({link})"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path("reports")
    atomic_write_bytes(root / "README.md", build_index(root).encode())
    print(f"wrote {root / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
