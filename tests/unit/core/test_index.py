"""The cross-paper index lists every paper, links the tables of those with a report and counts their
claims from claims.csv."""

from __future__ import annotations

import pandas as pd

from cvpr24.core.index import PAPERS, build_index


def test_index_links_reports_and_counts_claims(tmp_path):
    (tmp_path / "bus").mkdir()
    (tmp_path / "bus" / "README.md").write_text("# bus\n")
    (tmp_path / "bus" / "table_main.md").write_text("x")
    pd.DataFrame({"id": ["C1", "C2", "C3"], "passed": [True, False, True]}).to_csv(
        tmp_path / "bus" / "claims.csv", index=False)
    text = build_index(tmp_path)
    assert "[2 of 3](bus/claims.md)" in text
    assert "[table main](bus/table_main.md)" in text
    # a paper without a report says so instead of linking
    assert text.count("not implemented yet") == len(PAPERS) - 1
