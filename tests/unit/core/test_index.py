"""The cross-paper index lists every paper, links the tables of those with a report, counts the cells
that have a paper number beside ours, and tallies the paper's claims apart from sanity checks."""

from __future__ import annotations

import pandas as pd

from cvpr24.core.index import PAPERS, build_index


def test_index_links_reports_and_tallies_claims(tmp_path):
    (tmp_path / "bus").mkdir()
    (tmp_path / "bus" / "README.md").write_text("# bus\n")
    (tmp_path / "bus" / "table_main.md").write_text("### Main paper, comparison table: H-Score\n\n| a |\n")
    pd.DataFrame({"method": ["A", "B", "C"], "psnr_paper": [30.0, None, None], "psnr_ours": [28.0, 27.0, None]}
                 ).to_csv(tmp_path / "bus" / "table_main.csv", index=False)
    pd.DataFrame({"id": ["C1", "C2", "C3", "S1"], "kind": ["paper", "paper", "paper", "sanity"],
                  "verdict": ["PASS", "INCONCLUSIVE", "N/A", "PASS"]}).to_csv(tmp_path / "bus" / "claims.csv",
                                                                            index=False)
    text = build_index(tmp_path)
    assert "| 1 of 2 cells |" in text
    assert "[1 / 0 / 1 / 1](bus/claims.md) | [1 / 0 / 0 / 0](bus/claims.md)" in text
    assert "[Main paper, comparison table](bus/table_main.md)" in text  # the label, not the file name
    # a paper without a report says so instead of linking
    assert text.count("not implemented yet") == len(PAPERS) - 1


def test_index_reads_claims_written_before_verdicts(tmp_path):
    (tmp_path / "cms").mkdir()
    (tmp_path / "cms" / "README.md").write_text("# cms\n")
    pd.DataFrame({"id": ["C1", "C2"], "passed": [True, False]}).to_csv(tmp_path / "cms" / "claims.csv", index=False)
    assert "[1 / 1 / 0 / 0](cms/claims.md) | – |" in build_index(tmp_path)
