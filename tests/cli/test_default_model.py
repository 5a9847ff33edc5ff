"""``autocmr_predict -i IN -o OUT`` with no model flag: the default model segments NIfTI, 4D cine and DICOM.

The packaged model's weights are the lead's (trained on ACDC); these tests do not depend on them: the default
lookup is pointed at a packed phantom-trained model through $AUTOCMR_DEFAULT_MODEL. One test uses the real
packaged model when it is installed and skips otherwise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autocmr.cli.predict import main
from autocmr.io.cine import read_cine, write_cine
from autocmr.io.image import Geometry, read_image, write_image
from autocmr.models.registry import is_model_folder, packaged_default_model
from autocmr.testing.phantoms import make_phantom_cine
from tests.helpers import small_case, write_dicom_series

DICOM_NAME = "study_s5_sax_cine"


def _inputs(src: Path) -> dict[str, tuple[int, ...]]:
    """One 3D NIfTI, one 4D cine, one DICOM cine series; returns each case's expected mask shape."""
    case = small_case(41, slices=4)
    write_image(case.image, case.geometry, src / "scan.nii.gz")
    image, _, g4, _, _ = make_phantom_cine(42, n_frames=3, fov_mm=120.0)
    g4 = Geometry(g4.size[:2] + (3, 2), g4.spacing, g4.origin, g4.direction)
    write_cine(np.ascontiguousarray(image[:2, :3]), g4, src / "cine.nii.gz")
    phases = np.stack([small_case(43, slices=3, phase=p).image for p in (0.0, 1.0)])
    write_dicom_series(src / "study", np.round(phases).astype(np.int16), series_number=5, description="sax cine")
    return {"scan": case.image.shape, "cine": (2, 3) + image.shape[2:], DICOM_NAME: phases.shape}


def _check_masks(out: Path, expected: dict[str, tuple[int, ...]]) -> None:
    for name, shape in expected.items():
        path = out / f"{name}.nii.gz"
        mask = read_cine(path)[0] if len(shape) == 4 else read_image(path)[0]
        assert mask.shape == shape and mask.dtype == np.uint8, (name, mask.shape, shape)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}


@pytest.fixture(scope="module")
def packed_default(tiny_model_dir, tmp_path_factory) -> Path:
    from autocmr.models.store import pack_model

    dest = tmp_path_factory.mktemp("default_model") / "default"
    pack_model(tiny_model_dir, dest, name="tiny_default")
    return dest


def test_no_model_flag_uses_the_default_model_for_every_input_kind(packed_default, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOCMR_DEFAULT_MODEL", str(packed_default))
    src, out = tmp_path / "in", tmp_path / "out"
    expected = _inputs(src)
    assert main(["-i", str(src), "-o", str(out), "--no-mirror", "-j", "0"]) == 0
    assert "3 predicted" in capsys.readouterr().out
    _check_masks(out, expected)
    assert main(["-i", str(src / "scan.nii.gz"), "-o", str(tmp_path / "named"), "-m", "default", "--no-mirror"]) == 0
    assert np.array_equal(read_image(tmp_path / "named" / "scan.nii.gz")[0], read_image(out / "scan.nii.gz")[0])


def test_without_a_default_model_the_error_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOCMR_DEFAULT_MODEL", str(tmp_path / "nothing_here"))
    case = small_case(44, slices=3)
    write_image(case.image, case.geometry, tmp_path / "scan.nii.gz")
    assert main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no default model" in err and "-m FOLDER" in err and "autocmr_models import" in err


@pytest.mark.skipif(not is_model_folder(packaged_default_model()),
                    reason=f"no default model packaged at {packaged_default_model()} (the trained weights are "
                           "added by the recipe, benchmarks/ README)")
def test_the_packaged_default_model_segments_nifti_cine_and_dicom(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOCMR_DEFAULT_MODEL", raising=False)
    src, out = tmp_path / "in", tmp_path / "out"
    expected = _inputs(src)
    assert main(["-i", str(src), "-o", str(out), "--no-mirror"]) == 0
    _check_masks(out, expected)
