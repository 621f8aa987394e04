"""`python -m cvpr24.core.index [reports_root]`: write `<reports_root>/README.md`, the index of every
paper's regenerated tables, with each paper's status and how many of its checked claims hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

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


def build_index(root: Path) -> str:
    lines = [
        "# Regenerated tables",
        "",
        "Written by `python -m cvpr24.core.index` (the root `dvc.yaml` stage) from each paper's report. "
        "`make repro` regenerates everything; `dvc repro pipelines/<slug>/dvc.yaml` one paper.",
        "",
        "| paper | pipeline | tables | claims that hold on our data |",
        "| --- | --- | --- | --- |",
    ]
    for slug, title in PAPERS:
        folder = root / slug
        if not (folder / "README.md").is_file():
            lines.append(f"| {title} | `{slug}` | not implemented yet | – |")
            continue
        tables = sorted(p.stem for p in folder.glob("table_*.md"))
        links = ", ".join(f"[{t.replace('_', ' ')}]({slug}/{t}.md)" for t in tables)
        claims = folder / "claims.csv"
        held = "–"
        if claims.is_file():
            df = pd.read_csv(claims)
            ok = int((df["passed"].astype(str) == "True").sum())
            held = f"[{ok} of {len(df)}]({slug}/claims.md)"
        lines.append(f"| [{title}]({slug}/README.md) | `{slug}` | {links} | {held} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path("reports")
    atomic_write_bytes(root / "README.md", build_index(root).encode())
    print(f"wrote {root / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
