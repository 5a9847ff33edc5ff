"""Finding DICOM series in an input folder: a corrupt DICOM-looking file is one problem naming it while the
other series go on (whatever pydicom raises on it), and a series in several planes is passed over when it is a
localizer but reported when it is a stack with a re-angled slice."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from scipy.spatial.transform import Rotation

from autocmr.errors import InputFileError
from autocmr.inference.inputs import discover_jobs
from autocmr.io.dicom import find_dicom_series, read_dicom_series
from autocmr.io.dicom_pixels import read_pixels
from autocmr.io.dicom_scan import classify_dicom_file, read_dicom_headers
from autocmr.io.dicom_seg_sources import read_source_headers
from tests.helpers import write_dicom_series

FRAMES = np.arange(2 * 4 * 6 * 5, dtype=np.int16).reshape(2, 4, 6, 5)  # 2 phases x 4 slices of 6x5 images
# preamble, "DICM" and the file meta cut inside an element's length: pydicom raises struct.error
CUT_IN_FILE_META = 154


def _good_file(folder: Path) -> Path:
    write_dicom_series(folder, FRAMES[:1, :1])
    return next(folder.iterdir())


def _study_with_a_cut_file(root: Path) -> Path:
    write_dicom_series(root / "good", FRAMES)
    (root / "other").mkdir()
    cut = root / "other" / "IM0001"
    cut.write_bytes(next((root / "good").iterdir()).read_bytes()[:CUT_IN_FILE_META])
    return cut


def test_a_file_cut_inside_its_file_meta_is_one_problem_and_the_good_series_is_still_found(tmp_path, caplog):
    cut = _study_with_a_cut_file(tmp_path / "in")
    found = discover_jobs(tmp_path / "in", tmp_path / "out")
    assert [j.name for j in found.jobs] == ["good_s5_sax_cine"]
    (problem,) = found.problems
    assert problem.file == str(cut) and problem.reason.startswith("unreadable DICOM file")
    assert "struct.error" in problem.reason  # what went wrong, named with its module (a bare "error" says nothing)
    with caplog.at_level(logging.WARNING):
        (series,) = find_dicom_series(tmp_path / "in")
    assert len(series.files) == 8 and str(cut) in caplog.text
    with pytest.raises(InputFileError, match="cannot be read") as info:
        read_dicom_headers(cut)
    assert info.value.path == cut


def _outcome(path: Path) -> str:
    """'read' when ``path`` reads (headers and pixels), else the reason of the InputFileError naming it; any
    other exception fails the test (it would end the discovery of the whole input)."""
    try:
        found = classify_dicom_file(path)
        for header in found if isinstance(found, list) else ():
            read_pixels(header)
    except InputFileError as exc:
        assert exc.path == path
        return exc.reason
    return "read"


def test_every_cut_of_a_file_reads_or_is_refused_naming_it(tmp_path):
    data = _good_file(tmp_path / "src").read_bytes()
    victim = tmp_path / "victim.dcm"
    outcomes = []
    for keep in range(0, len(data), 3):
        victim.write_bytes(data[:keep])
        outcomes.append(_outcome(victim))
    assert any("struct.error" in o for o in outcomes)  # the cut this test is about is among them
    assert outcomes[0] != "read"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's guesses about garbled encodings
def test_garbled_bytes_in_a_file_read_or_are_refused_naming_it(tmp_path):
    """Bytes changed at random in the header: pydicom then raises NotImplementedError (a garbled value
    representation) or BytesLengthException (a value of the wrong length) when a value is first decoded."""
    data = _good_file(tmp_path / "src").read_bytes()
    victim = tmp_path / "victim.dcm"
    rng = random.Random(7)
    reasons = []
    for _ in range(400):
        garbled = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            garbled[rng.randrange(132, len(garbled) - 60)] = rng.randrange(256)  # header, not pixels
        victim.write_bytes(bytes(garbled))
        reasons.append(_outcome(victim))
    assert any("NotImplementedError" in r for r in reasons)


def test_a_deflated_file_cut_short_after_its_header_was_read_names_the_file(tmp_path):
    """Pixels are read after the headers (the series first checked): a file cut short meanwhile, inside its
    deflated data set, raises zlib.error in pydicom."""
    path = _good_file(tmp_path / "src")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    (header,) = read_dicom_headers(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputFileError, match=r"cannot read DICOM file \(zlib\.error") as info:
        read_pixels(header)
    assert info.value.path == path


def test_a_cut_source_file_of_a_dicom_seg_is_named(tmp_path):
    path = _good_file(tmp_path / "src")
    path.write_bytes(path.read_bytes()[:CUT_IN_FILE_META])
    with pytest.raises(InputFileError, match=r"cannot read DICOM header for the SEG \(struct\.error") as info:
        read_source_headers({(0, 0): path})
    assert info.value.path == path


# ------------------------------------------------------------------------------------ several planes


def _tilted(degrees: float) -> np.ndarray:
    return Rotation.from_euler("x", degrees, degrees=True).as_matrix()


def test_a_stack_with_a_re_angled_slice_is_a_problem_a_localizer_is_passed_over(tmp_path, caplog):
    """Three orthogonal scout planes (every study has them) are skipped with a note; a short-axis stack one of
    whose slices was planned 12 degrees apart cannot be read as one volume, and the user meant it to be
    segmented: a failed case naming its folder, not silence."""
    study = tmp_path / "study"
    localizer = "1.2.826.0.1.3680043.8.498.78"
    for k, rotation in enumerate((np.eye(3), np.eye(3)[:, [1, 2, 0]], np.eye(3)[:, [2, 0, 1]])):
        write_dicom_series(study / "scout" / f"plane{k}", FRAMES[:1, :1], series_number=1, rotation=rotation,
                           description="localizer", attributes={"SeriesInstanceUID": localizer})
    sax = "1.2.826.0.1.3680043.8.498.79"
    write_dicom_series(study / "sax", FRAMES[:, :3], series_number=2, attributes={"SeriesInstanceUID": sax})
    write_dicom_series(study / "sax" / "replanned", FRAMES[:, :1], series_number=2, rotation=_tilted(12.0),
                       origin=(-50.0, -60.0, 50.0), attributes={"SeriesInstanceUID": sax})
    with caplog.at_level(logging.INFO):
        found = discover_jobs(study, tmp_path / "out")
    assert not found.jobs
    (problem,) = found.problems
    assert problem.name == "sax_s2_sax_cine" and problem.file == str(study / "sax")
    assert "holds images in 2 orientations (their planes up to 12 degrees apart" in problem.reason
    assert "not segmented" in problem.reason
    assert "images in 3 planes (a localizer or survey)" in caplog.text
    (info,) = [s for s in find_dicom_series(study) if s.series_instance_uid == sax]
    assert info.n_planes == 2 and info.plane_tilt_deg == pytest.approx(12.0, abs=0.01)
    with pytest.raises(InputFileError, match="mixed orientations"):  # what reading it would have said
        read_dicom_series(study, series_uid=sax)
