"""The analysis tables as written to disk."""
from __future__ import annotations

import math

import pandas as pd

from autocmr.analysis.tables import MEASURES_CSV, QC_CSV, VOLUMES_CSV, SubjectReport, write_tables


def test_text_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(tmp_path):
    # a subject named from a DICOM PatientID or a file name anyone can set
    reports = [SubjectReport("=HYPERLINK(\"http://x\",\"click\")", sources=["@SUM(1+1).nii.gz"]),
               SubjectReport("-2+3", status="failed", notes=["prediction failed"]),
               SubjectReport("patient001", sources=["patient001_4d.nii.gz"])]
    written = write_tables(reports, tmp_path)
    measures = pd.read_csv(written[MEASURES_CSV], dtype=str, keep_default_na=False)
    assert set(measures["subject"]) == {"'=HYPERLINK(\"http://x\",\"click\")", "'-2+3", "patient001"}
    assert "'@SUM(1+1).nii.gz" in set(measures["source_files"])
    for name in (QC_CSV, VOLUMES_CSV):  # every table, not only measures.csv
        text = written[name].read_text(encoding="utf-8")
        assert "\n=" not in text and ",=" not in text and "\n-2+3" not in text
    # numbers stay numbers: a negative number column is not rewritten
    from autocmr.analysis.tables import spreadsheet_safe
    table = spreadsheet_safe(pd.DataFrame({"subject": ["a"], "bias_mL": [-3.5], "frame": pd.array([2], "Int64")}))
    assert table["bias_mL"].iloc[0] == -3.5 and not math.isnan(table["bias_mL"].iloc[0])
