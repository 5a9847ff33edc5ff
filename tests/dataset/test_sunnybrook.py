"""Sunnybrook converter: the real study becomes 9 single-slice cases with plausible LV/MYO masks that overlay
their images; contour rasterisation convention; failures are collected and reported."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from autocmr.dataset.converters.sunnybrook import (
    SUNNYBROOK_LABELS, contour_mask, convert_sunnybrook, read_contour, sunnybrook_cine)
from autocmr.dataset.raw import load_raw_dataset
from autocmr.errors import DatasetError, InputFileError
from autocmr.io.image import read_image

# Plausible LV cavity area of one short-axis slice, cm^2 (apex to a dilated base).
LV_AREA_CM2 = (2.0, 40.0)
# Fraction of the pixels around the LV cavity that may be background rather than myocardium (basal
# slices, where the annotators close the endocardium along the outflow tract).
MAX_OPEN_RING_FRACTION = 0.15


@pytest.fixture(scope="module")
def converted(sunnybrook_root, tmp_path_factory):
    return convert_sunnybrook(sunnybrook_root, tmp_path_factory.mktemp("raw"), 130)


def test_dataset_layout_and_metadata(converted):
    assert converted.name == "Dataset130_Sunnybrook"
    dataset = load_raw_dataset(converted)
    assert len(dataset.cases) == 9
    assert json.loads((converted / "dataset.json").read_text())["labels"] == SUNNYBROOK_LABELS
    table = pd.read_csv(converted / "cases.csv")
    assert list(table.columns[:8]) == ["case_id", "subject", "phase", "slice_index", "phase_index",
                                       "image_number", "trigger_time_ms", "vendor"]
    assert set(table["subject"]) == {"SC-HF-I-1"}
    assert set(table["vendor"]) == {"GE"} and set(table["field_strength"]) == {"1.5T"}
    assert set(table["centre"]) == {"Sunnybrook"}
    # Every doubly-annotated image is the late-diastolic phase, whose cavities are larger than those of
    # the endocardium-only phase: ED.
    assert set(table["phase"]) == {"ED"}
    assert table["slice_index"].nunique() == 9


def test_masks_are_plausible_and_overlay_the_images(converted):
    contrast = []
    for case in load_raw_dataset(converted).cases:
        image, image_geometry = read_image(case.images[0])
        label, label_geometry = read_image(case.label)
        assert label.shape == image.shape == (1, 256, 256)
        assert label_geometry.differences(image_geometry) == []
        assert set(np.unique(label)) == {0, 1, 2}
        lv, myo = label[0] == 1, label[0] == 2
        area_cm2 = lv.sum() * np.prod(label_geometry.spacing[:2]) / 100.0
        assert LV_AREA_CM2[0] < area_cm2 < LV_AREA_CM2[1], case.case_id
        # The cavity is enclosed by myocardium: growing it by one pixel reaches background at most where
        # the contours meet (the outflow tract on the most basal slice: 14 of 108 pixels).
        ring = ndimage.binary_dilation(lv) & ~lv
        assert (ring & (label[0] == 0)).sum() <= MAX_OPEN_RING_FRACTION * ring.sum(), case.case_id
        assert ndimage.label(lv)[1] == 1
        # bSSFP: blood is bright, myocardium dark (ratio 2.2-3.2 here); a transposed mask gives ~1.5 on
        # average and a 3-pixel shift ~1.8, mixing the two.
        contrast.append(image[0][lv].mean() / image[0][myo].mean())
    assert min(contrast) > 2.0 and np.mean(contrast) > 2.4


def test_cavity_lies_inside_epicardium(converted, sunnybrook_root):
    table = pd.read_csv(converted / "cases.csv")
    contours = sunnybrook_root / "contours"
    for number in table["image_number"]:
        endo = contour_mask(read_contour(contours / "i-contours" / f"IM-0001-{number:04d}-icontour-manual.txt",
                                         (256, 256)), (256, 256))
        epi = contour_mask(read_contour(contours / "o-contours" / f"IM-0001-{number:04d}-ocontour-manual.txt",
                                        (256, 256)), (256, 256))
        assert endo.sum() > 100 and epi.sum() > 1.2 * endo.sum()
        assert (endo & ~epi).sum() <= 0.01 * endo.sum(), number


def test_case_geometry_is_its_slice(converted, sunnybrook_root):
    volume = sunnybrook_cine(sunnybrook_root)
    table = pd.read_csv(converted / "cases.csv").set_index("case_id")
    for case_id in table.index[:3]:
        row = table.loc[case_id]
        z, t = int(row["slice_index"]), int(row["phase_index"])
        image, geometry = read_image(converted / "imagesTr" / f"{case_id}_0000.nii.gz")
        np.testing.assert_array_equal(image[0], volume.array[t, z])
        source = volume.files[(z, t)]
        assert source.name == f"{row['image_number']}.dcm"
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        np.testing.assert_allclose(geometry.origin, [float(v) for v in ds.ImagePositionPatient], atol=1e-3)
        np.testing.assert_allclose(geometry.spacing, (1.367188, 1.367188, 10.0), atol=1e-3)
        assert geometry.differences(volume.geometry.spatial()) == [f"size {geometry.size} vs (256, 256, 12)"]


def test_contour_convention(tmp_path):
    # Integer coordinates are pixel centres: a square through the centres (x 3..7, y 2..5) holds them all.
    path = tmp_path / "c.txt"
    path.write_text("3 2\n7 2\n7 5\n3 5\n")
    points = read_contour(path, (8, 10))
    np.testing.assert_array_equal(points[0], [2, 3])  # (row, col)
    mask = contour_mask(points, (8, 10))
    assert mask.sum() == 20 and mask[2:6, 3:8].all()
    # Half-integer corners enclose exactly the pixels whose centres are inside.
    path.write_text("1.5 1.5\n4.5 1.5\n4.5 3.5\n1.5 3.5\n")
    mask = contour_mask(read_contour(path, (8, 10)), (8, 10))
    assert mask.sum() == 6 and mask[2:4, 2:5].all()
    path.write_text("3 2\n70 2\n7 5\n")
    with pytest.raises(InputFileError, match="outside"):
        read_contour(path, (8, 10))
    path.write_text("3 2\n7 2\n")
    with pytest.raises(InputFileError, match="at least 3"):
        read_contour(path, (8, 10))


def _study_with_image_59(sunnybrook_root, tmp_path):
    """The real study's images with only image 59's contours (a good pair)."""
    study = tmp_path / "SC-HF-I-1"
    (study / "contours" / "i-contours").mkdir(parents=True)
    (study / "contours" / "o-contours").mkdir(parents=True)
    (study / "dicom").symlink_to(sunnybrook_root / "dicom")
    for kind in ("i", "o"):
        name = f"IM-0001-0059-{kind}contour-manual.txt"
        (study / "contours" / f"{kind}-contours" / name).symlink_to(
            sunnybrook_root / "contours" / f"{kind}-contours" / name)
    return study


def test_bad_contours_fail_a_strict_conversion(sunnybrook_root, tmp_path):
    study = _study_with_image_59(sunnybrook_root, tmp_path)
    (study / "contours" / "i-contours" / "IM-0001-0079-icontour-manual.txt").write_text("10 10\nbroken\n")
    (study / "contours" / "o-contours" / "IM-0001-0079-ocontour-manual.txt").write_text("10 10\n20 10\n20 20\n")
    with pytest.raises(DatasetError, match=r"1 problem(.|\n)*0079-icontour"):
        convert_sunnybrook(study, tmp_path / "raw", 131, strict=True)
    assert not (tmp_path / "raw" / "Dataset131_Sunnybrook").exists()  # nothing half-written


def test_inconsistent_contours_are_skipped_and_the_rest_converted(sunnybrook_root, tmp_path, caplog):
    """Image 79 gets image 59's endocardium and an epicardium moved 40 pixels away (as on SC-HF-I-6, whose
    endocardium lies 32-61 % outside the epicardium on 5 images): image 79 is skipped, image 59 converts."""
    study = _study_with_image_59(sunnybrook_root, tmp_path)
    source = sunnybrook_root / "contours"
    (study / "contours" / "i-contours" / "IM-0001-0079-icontour-manual.txt").write_text(
        (source / "i-contours" / "IM-0001-0059-icontour-manual.txt").read_text())
    epi = np.loadtxt(source / "o-contours" / "IM-0001-0059-ocontour-manual.txt") + [40.0, 0.0]
    np.savetxt(study / "contours" / "o-contours" / "IM-0001-0079-ocontour-manual.txt", epi, fmt="%.2f")

    folder = convert_sunnybrook(study, tmp_path / "raw", 131)

    cases = pd.read_csv(folder / "cases.csv")
    assert list(cases["image_number"]) == [59]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{cases['case_id'][0]}.nii.gz"]
    skipped = json.loads((folder / "conversion_skipped.json").read_text())
    assert skipped["converted_cases"] == 1 and len(skipped["skipped"]) == 1
    assert skipped["skipped"][0]["file"].endswith("IM-0001-0079-icontour-manual.txt")
    assert "of the endocardium lies outside the epicardium" in skipped["skipped"][0]["reason"]
    assert "1 source file(s) skipped" in caplog.text


def test_existing_dataset_is_not_replaced_without_overwrite(converted, sunnybrook_root):
    before = sorted(p.name for p in (converted / "labelsTr").iterdir())
    with pytest.raises(DatasetError, match="already exists"):
        convert_sunnybrook(sunnybrook_root, converted.parent, 130)
    assert sorted(p.name for p in (converted / "labelsTr").iterdir()) == before


def test_cli_errors_name_the_dataset_folder_not_a_staging_folder(tmp_path, monkeypatch, capsys):
    """convert_sunnybrook stages its own output: the CLI calls it as it is, so a failed conversion names the
    dataset folder the user asked for."""
    from autocmr.cli.convert import main
    from autocmr.dataset.converters import sunnybrook
    from autocmr.dataset.converters.common import STAGING_PREFIX, ConversionProblem

    study = tmp_path / "SC-HF-I-1"
    bad = study / "contours" / "i-contours" / "IM-0001-0079-icontour-manual.txt"
    monkeypatch.setattr(sunnybrook, "_write_cases", lambda study_dir, folder: ([], [ConversionProblem(bad, "broken")]))
    raw = tmp_path / "raw"

    assert main(["sunnybrook", str(study), "--raw", str(raw), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"nothing was written to {raw / 'Dataset130_Sunnybrook'}:" in err and f"{bad}: broken" in err
    assert STAGING_PREFIX not in err and "Traceback" not in err
    assert sorted(p.name for p in raw.iterdir()) == []
