"""benchmarks/fast_pass_agreement.py: which ACDC volumes it compares (no model, no prediction)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
fpa = pytest.importorskip("fast_pass_agreement")


def test_volumes_are_the_ed_and_es_frames_of_patients_spread_over_the_list(tmp_path, monkeypatch):
    for i in range(1, 21):  # ACDC numbers its patients in blocks of one group: spread, not the first ones
        folder = tmp_path / f"patient{i:03d}"
        folder.mkdir()
        (folder / "Info.cfg").write_text(f"ED: 1\nES: {i % 7 + 2}\nGroup: NOR\n")
    monkeypatch.setattr(fpa, "ACDC", tmp_path)
    volumes = fpa.acdc_volumes(4)
    assert [v.parent.name for v in volumes][::2] == ["patient001", "patient007", "patient014", "patient020"]
    assert [v.parent.name for v in volumes][1::2] == ["patient001", "patient007", "patient014", "patient020"]
    assert volumes[0].name == "patient001_frame01.nii.gz" and volumes[1].name == "patient001_frame03.nii.gz"
    assert volumes[-1].name == "patient020_frame08.nii.gz"  # ES of patient 20: 20 % 7 + 2
    assert len(fpa.acdc_volumes(50)) == 40  # no more patients than there are
