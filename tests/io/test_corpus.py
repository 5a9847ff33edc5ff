"""A corpus of odd files, segmented in ONE batch: each is either segmented with its own geometry (NIfTI masks
carry the input's header) or reported in failures.json with its file and reason, and the rest of the batch
finishes. Files shipped as test data by nibabel and pydicom join the corpus when the installed package has
them (each is skipped alone when it does not)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from autocmr.dataset.integrity import check_case
from autocmr.inference.batch import predict_folder
from autocmr.io.dicom import read_dicom_series
from autocmr.io.image import read_header
from tests.helpers import temporaries, write_dicom_series
from tests.io.test_nifti import _affine, assert_mask_has_image_header, write_nifti

NAN_REASON = "voxels are NaN or infinite"
PYDICOM_FILES = ("MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
                 "MR_small_jpeg_ls_lossless.dcm")
NIBABEL_FILES = ("example_nifti2.nii.gz", "example4d.nii.gz", "anatomical.nii")


def _image(seed: int, shape_xyz=(40, 36, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape_xyz[0]), np.arange(shape_xyz[1]), indexing="ij")
    disc = ((x - shape_xyz[0] / 2) ** 2 + (y - shape_xyz[1] / 2) ** 2 < 60).astype(np.float32) * 300
    return (disc[..., None] + rng.normal(50, 10, shape_xyz)).astype(np.float32)


def _nifti_cases(src: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """(name -> file segmented with its header, name -> expected failure reason) for built NIfTI files."""
    a = _affine()
    ok = {
        "sform_nearly_orthonormal": write_nifti(src / "sform_nearly_orthonormal.nii.gz",
                                                sform=_affine(shear=2e-4), scode=1, data=_image(1)),
        "nifti2": write_nifti(src / "nifti2.nii.gz", sform=a, scode=1, qform=a, qcode=1, data=_image(2), nifti2=True),
        "qform_only": write_nifti(src / "qform_only.nii", qform=a, qcode=1, data=_image(3)),
        "scaled_int16": write_nifti(src / "scaled_int16.nii.gz", sform=a, scode=2, slope=(0.5, 10.0),
                                    data=_image(4).astype(np.int16)),
        "uint8": write_nifti(src / "uint8.nii.gz", sform=a, scode=2, data=np.clip(_image(5), 0, 255).astype(np.uint8)),
        "float64": write_nifti(src / "float64.nii.gz", qform=a, qcode=1, data=_image(6).astype(np.float64)),
        "cine_blank_frame": write_nifti(src / "cine_blank_frame.nii.gz", sform=a, scode=1, qform=a, qcode=1,
                                        data=np.stack([_image(7), np.zeros((40, 36, 3), np.float32)], -1),
                                        zooms=(1.48, 1.48, 10.0, 40.0)),
    }
    big = nib.Nifti1Image(_image(8).astype(">f4"), a, header=nib.Nifti1Header(endianness=">"))
    nib.save(big, str(src / "big_endian.nii.gz"))
    ok["big_endian"] = src / "big_endian.nii.gz"
    nan3d, nan4d = _image(9), np.stack([_image(10), _image(11)], -1)
    nan3d[5, 6, 1] = np.nan
    nan4d[7, 8, 2, 1] = np.inf
    write_nifti(src / "nan3d.nii.gz", sform=a, scode=1, data=nan3d)
    write_nifti(src / "nan4d.nii.gz", sform=a, scode=1, data=nan4d, zooms=(1.48, 1.48, 10.0, 40.0))
    write_nifti(src / "zeros.nii.gz", sform=a, scode=1, data=np.zeros((40, 36, 3), np.float32))
    labels = np.zeros((40, 36, 3), np.uint8)
    labels[10:20, 10:20] = 1
    labels[20:25, 10:20] = 3
    write_nifti(src / "label_map.nii.gz", sform=a, scode=1, data=labels)  # a mask given as input
    write_nifti(src / "sheared.nii.gz", sform=_affine(shear=0.05), scode=1, data=_image(12))
    data = write_nifti(src / "truncated.nii.gz", sform=a, scode=1, data=_image(13)).read_bytes()
    (src / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    failing = {"nan3d": NAN_REASON, "nan4d": NAN_REASON, "zeros": "empty image: all zero",
               "sheared": "affine (sheared) grid", "truncated": "truncated",
               "label_map": "looks like a label map, not an image: whole-number values 0, 1, 3 only"}
    return ok, failing


def _shipped_nifti(src: Path) -> dict[str, Path]:
    folder = Path(nib.__file__).parent / "tests" / "data"
    found = {}
    for name in NIBABEL_FILES:
        if (folder / name).is_file():
            shutil.copy(folder / name, src / f"nibabel_{name}")
            found[f"nibabel_{name.split('.')[0]}"] = src / f"nibabel_{name}"
    return found


def _pydicom_copy(name: str, folder: Path, **changes) -> Path:
    """A pydicom test file in a folder of its own, with a new series UID (they all share one)."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / name)
    ds.SeriesInstanceUID = generate_uid()
    for key, value in changes.items():
        setattr(ds.file_meta, key, value)
    folder.mkdir(parents=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder


def _dicom_cases(src: Path) -> tuple[dict[str, Path], dict[str, str], dict[str, Path]]:
    """(folder of a series that is segmented, file -> expected failure reason, series with a warning)."""
    ok, failing = {}, {}
    shipped = Path(pydicom.data.__file__).parent / "test_files"
    for name in PYDICOM_FILES:
        if (shipped / name).is_file():
            folder = _pydicom_copy(name, src / "dicom" / name.split(".")[0])
            if _decodable(folder / name):
                ok[name] = folder
            else:  # e.g. JPEG-LS without its decoder plugin installed: reported, not segmented
                failing[str(folder)] = "cannot decode pixel data"
    if (shipped / "MR_small.dcm").is_file():
        ok["deflated"] = _pydicom_copy("MR_small.dcm", src / "dicom" / "deflated",
                                       TransferSyntaxUID=DeflatedExplicitVRLittleEndian)
        ds = pydicom.dcmread(shipped / "MR_small.dcm")  # no preamble, no file meta: a bare data set
        ds.SeriesInstanceUID = generate_uid()
        del ds.file_meta
        (src / "dicom" / "no_meta").mkdir()
        ds.save_as(src / "dicom" / "no_meta" / "image.dcm", implicit_vr=True, little_endian=True,
                   enforce_file_format=False)
        ok["no_meta"] = src / "dicom" / "no_meta"
    rng = np.random.default_rng(20)
    two = src / "dicom" / "two_series"  # mixed series in one folder: one job each
    write_dicom_series(two, _frames(21), series_number=3, description="a")
    write_dicom_series(two, _frames(22), series_number=4, description="b")
    ok["two_series_a"], ok["two_series_b"] = two, two
    gappy = src / "dicom" / "one_file_cut"  # a header-truncated instance inside a good series
    write_dicom_series(gappy, np.concatenate([_frames(23), _frames(24)], axis=1), series_number=6)
    cut = sorted(gappy.iterdir())[1]
    cut.write_bytes(cut.read_bytes()[:200])
    failing[str(cut)] = "unreadable DICOM file"
    frames = rng.integers(0, 300, (1, 3, 24, 20)).astype(np.int16)
    nan_folder = src / "dicom" / "nan"
    write_dicom_series(nan_folder, frames, series_number=7)
    _to_float_pixels(sorted(nan_folder.iterdir())[1], nan_at=(3, 4))
    failing[str(nan_folder)] = NAN_REASON
    if (shipped / "MR_truncated.dcm").is_file():
        failing[str(_pydicom_copy("MR_truncated.dcm", src / "dicom" / "MR_truncated"))] = "cannot decode pixel data"
    return ok, failing, {"one_file_cut": gappy}


def _frames(seed: int) -> np.ndarray:
    """One phase of a small stack as write_dicom_series wants it: int16 (t, z, y, x)."""
    return _image(seed).T[None].astype(np.int16)


def _decodable(path: Path) -> bool:
    try:
        pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001 - any decoder problem means autocmr must report the file
        return False
    return True


def _to_float_pixels(path: Path, *, nan_at: tuple[int, int]) -> None:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    pixels[nan_at] = np.nan
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = pixels.astype("<f4").tobytes()
    ds.save_as(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_predictor):
    src = tmp_path_factory.mktemp("corpus")
    out = src.parent / (src.name + "_out")
    nifti_ok, nifti_failing = _nifti_cases(src)
    nifti_ok.update(_shipped_nifti(src))
    dicom_ok, dicom_failing, dicom_warned = _dicom_cases(src)
    report = predict_folder(src, out, tiny_predictor, num_workers=0)  # reading and writing; no after_batch analysis
    return {"src": src, "out": out, "report": report, "nifti_ok": nifti_ok, "nifti_failing": nifti_failing,
            "dicom_ok": dicom_ok, "dicom_failing": dicom_failing, "dicom_warned": dicom_warned,
            "failures": json.loads((out / "failures.json").read_text()),
            "cases": json.loads((out / "predictions.json").read_text())["cases"]}


def test_every_odd_nifti_is_segmented_with_its_own_header(corpus):
    for name, image in corpus["nifti_ok"].items():
        assert name in corpus["report"].done, (name, corpus["failures"])
        assert_mask_has_image_header(corpus["out"] / f"{name}.nii.gz", image)


def test_every_readable_dicom_series_is_segmented_in_its_geometry(corpus):
    by_folder: dict[Path, list[str]] = {}
    for name, case in corpus["cases"].items():
        if case["kind"] == "dicom":
            by_folder.setdefault(Path(case["sources"][0]).parent, []).append(name)
    for label, folder in {**corpus["dicom_ok"], **corpus["dicom_warned"]}.items():
        names = by_folder.get(folder, [])
        assert names, (label, corpus["failures"])
        for name in names:
            sources = corpus["cases"][name]["sources"]
            expected = read_dicom_series([Path(s) for s in sources]).geometry
            assert not read_header(corpus["out"] / f"{name}.nii.gz").differences(expected, 1e-5), label
    assert len(by_folder[corpus["src"] / "dicom" / "two_series"]) == 2


def test_bad_files_are_reported_with_file_and_reason_and_nothing_else_fails(corpus):
    expected = {str(corpus["src"] / path): reason for name, reason in corpus["nifti_failing"].items()
                for path in corpus["src"].glob(f"{name}.nii*")}
    expected.update(corpus["dicom_failing"])
    found = {}
    for failure in corpus["failures"]:
        file = failure["file"]
        key = next((k for k in expected if file == k or Path(file).parent == Path(k)), file)
        found[key] = failure["reason"]
    assert set(found) == set(expected), corpus["failures"]
    for key, reason in expected.items():
        assert reason in found[key], (key, found[key])
    assert not temporaries(corpus["out"])


def test_handled_bad_input_leaves_warnings_in_predictions_json(corpus):
    cases = corpus["cases"]
    assert any("frame(s) [1] of 2 are constant" in w for w in cases["cine_blank_frame"]["warnings"])
    assert any("replaced by the nearest rotation" in w for w in cases["sform_nearly_orthonormal"]["warnings"])
    gappy = [c for c in cases.values() if Path(c["sources"][0]).parent == corpus["dicom_warned"]["one_file_cut"]]
    assert len(gappy) == 1 and any("slice(s) missing from the stack" in w for w in gappy[0]["warnings"])
    assert cases["nifti2"]["warnings"] == []


def test_nan_gets_one_treatment_in_3d_4d_dicom_and_training_data(corpus, tmp_path):
    reasons = {Path(f["file"]).name: f["reason"] for f in corpus["failures"] if NAN_REASON in f["reason"]}
    assert set(reasons) == {"nan3d.nii.gz", "nan4d.nii.gz", "nan"}  # the DICOM series is named by its folder
    assert all(r.startswith("1 voxels are NaN or infinite") for r in reasons.values()), reasons
    nan3d = corpus["src"] / "nan3d.nii.gz"
    problems = check_case("case", [nan3d], None, [0, 1, 2, 3])
    assert [p.reason for p in problems] == [reasons["nan3d.nii.gz"]]


def test_acdc_original_file_gets_a_mask_with_its_header(acdc_root, tmp_path, tiny_predictor):
    """ACDC's own header (sform_code 2 with 1 mm columns, qform_code 0, pixdim 1.5625 x 1.5625 x 10 mm)."""
    image = acdc_root / "patient001" / "patient001_frame01.nii.gz"
    header = nib.load(str(image)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (0, 2)  # the case under test
    report = predict_folder(image, tmp_path / "out", tiny_predictor, num_workers=0)
    assert report.done == ["patient001_frame01"]
    assert_mask_has_image_header(tmp_path / "out" / "patient001_frame01.nii.gz", image)
