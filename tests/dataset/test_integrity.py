"""Raw-dataset integrity check: every kind of broken input is found, all in one report."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from autocmr.dataset.integrity import ERROR, WARNING, check_dataset
from autocmr.errors import DatasetError
from autocmr.io.image import Geometry, read_image, write_image
from autocmr.testing.phantoms import write_phantom_dataset


@pytest.fixture()
def phantom(tmp_path: Path) -> Path:
    return write_phantom_dataset(tmp_path / "raw", n_subjects=6, seed=3, fov_mm=100)


def _image(folder: Path, case_id: str, channel: int = 0) -> Path:
    return folder / "imagesTr" / f"{case_id}_{channel:04d}.nii.gz"


def _label(folder: Path, case_id: str) -> Path:
    return folder / "labelsTr" / f"{case_id}.nii.gz"


def _rewrite(path: Path, array: np.ndarray | None = None, **geometry_changes) -> None:
    old, geometry = read_image(path)
    fields = {**geometry.to_dict(), **geometry_changes}
    write_image(old if array is None else array, Geometry.from_dict(fields), path)


def _break_everything(folder: Path) -> dict[str, tuple[Path, str]]:
    """Break one case per kind of problem; returns case -> (file at fault, words the reason must contain)."""
    expected = {}
    label, _ = read_image(_label(folder, "subject000_ED"))
    _rewrite(_label(folder, "subject000_ED"), label[:-1], size=list(reversed(label[:-1].shape)))
    expected["subject000_ED"] = (_label(folder, "subject000_ED"), "size")
    origin = list(read_image(_label(folder, "subject000_ES"))[1].origin)
    _rewrite(_label(folder, "subject000_ES"), origin=[origin[0] + 2.0] + origin[1:])
    expected["subject000_ES"] = (_label(folder, "subject000_ES"), "origin")
    theta = np.deg2rad(10)
    rotation = [np.cos(theta), -np.sin(theta), 0, np.sin(theta), np.cos(theta), 0, 0, 0, 1]
    _rewrite(_label(folder, "subject001_ED"), direction=rotation)
    expected["subject001_ED"] = (_label(folder, "subject001_ED"), "direction")
    spacing = list(read_image(_label(folder, "subject001_ES"))[1].spacing)
    _rewrite(_label(folder, "subject001_ES"), spacing=spacing[:2] + [spacing[2] * 1.5])
    expected["subject001_ES"] = (_label(folder, "subject001_ES"), "spacing")
    label, _ = read_image(_label(folder, "subject002_ED"))
    label[0, 0, :3] = 7
    _rewrite(_label(folder, "subject002_ED"), label)
    expected["subject002_ED"] = (_label(folder, "subject002_ED"), "label values [7]")
    image, _ = read_image(_image(folder, "subject002_ES"))
    image[1, 2, 3:6] = np.nan
    _rewrite(_image(folder, "subject002_ES"), image)
    expected["subject002_ES"] = (_image(folder, "subject002_ES"), "3 voxels are NaN")
    _rewrite(_image(folder, "subject003_ED"), np.zeros_like(read_image(_image(folder, "subject003_ED"))[0]))
    expected["subject003_ED"] = (_image(folder, "subject003_ED"), "all zero")
    image, geometry = read_image(_image(folder, "subject003_ES"))
    d4 = np.eye(4)
    d4[:3, :3] = geometry.direction_matrix()
    write_image(np.stack([image, image]), Geometry(geometry.size + (2,), geometry.spacing + (1.0,),
                                                   geometry.origin + (0.0,), tuple(d4.ravel())),
                _image(folder, "subject003_ES"))
    expected["subject003_ES"] = (_image(folder, "subject003_ES"), "4D")
    _image(folder, "subject004_ED").write_bytes(gzip.compress(b"this is not a NIfTI file" * 10))
    expected["subject004_ED"] = (_image(folder, "subject004_ED"), "cannot read")
    _label(folder, "subject004_ES").unlink()
    expected["subject004_ES"] = (_label(folder, "subject004_ES"), "label file missing")
    dataset_json = folder / "dataset.json"
    data = json.loads(dataset_json.read_text())
    data["numTraining"] = 99
    dataset_json.write_text(json.dumps(data))
    expected[""] = (dataset_json, "numTraining is 99 but 12")
    return expected


def test_every_problem_in_one_report(phantom: Path) -> None:
    expected = _break_everything(phantom)
    report = check_dataset(phantom)

    assert not report.ok
    listing = report.format()
    for case_id, (path, words) in expected.items():
        found = [p for p in report.errors if p.case_id == case_id and p.file == path and words in p.reason]
        assert found, f"{case_id}: no error on {path.name} mentioning {words!r}; got:\n{listing}"
        assert str(path.relative_to(phantom)) in listing
    # The intact cases have no problem at all.
    assert {p.case_id for p in report.problems} <= set(expected)
    assert "subject005_ED" not in listing
    with pytest.raises(DatasetError) as err:
        report.raise_if_errors()
    for path, _ in expected.values():
        assert str(path.relative_to(phantom)) in str(err.value)

    parallel = check_dataset(phantom, num_workers=2)
    assert sorted(map(repr, parallel.problems)) == sorted(map(repr, report.problems))


def test_clean_phantom_dataset_is_ok(tmp_path: Path) -> None:
    folder = write_phantom_dataset(tmp_path / "raw", n_subjects=2, seed=1, fov_mm=100, reorient=True)
    report = check_dataset(folder)
    assert report.ok and report.problems == () and report.num_training == 4
    assert "no problems found" in report.format()
    report.raise_if_errors()


def test_channels_and_cases_csv(tmp_path: Path) -> None:
    folder = write_phantom_dataset(tmp_path / "raw", n_subjects=2, seed=2, fov_mm=100)
    data = json.loads((folder / "dataset.json").read_text())
    data["channel_names"] = {"0": "cineMRI", "1": "copy"}
    (folder / "dataset.json").write_text(json.dumps(data))
    for case_id in ("subject000_ED", "subject000_ES", "subject001_ED", "subject001_ES"):
        image, geometry = read_image(_image(folder, case_id))
        origin = list(geometry.origin)
        shift = 5.0 if case_id == "subject001_ES" else 0.0
        write_image(image, Geometry(geometry.size, geometry.spacing, (origin[0] + shift,) + tuple(origin[1:]),
                                    geometry.direction), _image(folder, case_id, 1))
    _image(folder, "subject001_ED", 1).unlink()
    with open(folder / "cases.csv", "a", encoding="utf-8") as f:
        f.write("subject000_ED,someone_else,ED,phantom,synthetic\nghost_case,subject009,ED,phantom,synthetic\n")
    (folder / "labelsTr" / "stray.nii.gz").write_bytes(_label(folder, "subject000_ED").read_bytes())

    report = check_dataset(folder)
    problems = {(p.case_id, p.file.name, p.severity): p.reason for p in report.problems}
    assert "geometry differs from subject001_ES_0000.nii.gz: origin" in problems[
        ("subject001_ES", "subject001_ES_0001.nii.gz", ERROR)]
    assert "channels [0]" in problems[("subject001_ED", "subject001_ED_0000.nii.gz", ERROR)]
    assert "several subjects ['someone_else', 'subject000']" in problems[("subject000_ED", "cases.csv", ERROR)]
    assert "not in imagesTr" in problems[("ghost_case", "cases.csv", WARNING)]
    assert "without a training image" in problems[("stray", "stray.nii.gz", WARNING)]
    assert "numTraining is 4 but 3" in problems[("", "dataset.json", ERROR)]


def test_case_ids_whose_stored_files_would_collide_are_an_error(tmp_path: Path) -> None:
    """Case P's label map is stored as P_seg.b2nd, which is also case P_seg's image file."""
    folder = write_phantom_dataset(tmp_path / "raw", n_subjects=1, seed=1, fov_mm=100)
    for kind, path in (("image", _image(folder, "subject000_ED")), ("label", _label(folder, "subject000_ED"))):
        copy = path.with_name(path.name.replace("subject000_ED", "subject000_ED_seg"))
        copy.write_bytes(path.read_bytes())
    data = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**data, "numTraining": 3}))
    report = check_dataset(folder)
    (problem,) = report.errors
    assert problem.case_id == "subject000_ED_seg" and "clashes with case subject000_ED" in problem.reason


def test_a_test_case_named_like_a_training_case_hides_none_of_its_problems(tmp_path: Path) -> None:
    """The check of imagesTs/A must not replace the check of imagesTr/A; the shared id is itself an error."""
    folder = write_phantom_dataset(tmp_path / "raw", n_subjects=1, seed=4, fov_mm=100)
    clean = _image(folder, "subject000_ED").read_bytes()
    image, _ = read_image(_image(folder, "subject000_ED"))
    image[0, 0, 0] = np.nan
    _rewrite(_image(folder, "subject000_ED"), image)
    label, _ = read_image(_label(folder, "subject000_ED"))
    label[0, 0, :2] = 7
    _rewrite(_label(folder, "subject000_ED"), label)
    (folder / "imagesTs").mkdir()
    (folder / "imagesTs" / "subject000_ED_0000.nii.gz").write_bytes(clean)

    for workers in (1, 2):
        report = check_dataset(folder, num_workers=workers)
        reasons = {(p.file.parent.name, p.file.name): p.reason for p in report.errors}
        assert "1 voxels are NaN" in reasons[("imagesTr", "subject000_ED_0000.nii.gz")]
        assert "label values [7]" in reasons[("labelsTr", "subject000_ED.nii.gz")]
        assert "both imagesTr and imagesTs" in reasons[("imagesTs", "subject000_ED_0000.nii.gz")]
        assert len(report.errors) == 3 and report.num_test == 1


@pytest.mark.parametrize("changes, words", [
    ({"labels": {"0": "background", "1": "LV", "2": "MYO", "3": "RV"}},
     "label '0' has the value 'background', expected an integer; this is nnU-Net v1's direction (value -> name), "
     'nnU-Net v2 maps name -> value: "labels": {"background": 0, "LV": 1, "MYO": 2, "RV": 3}'),
    ({"labels": ["background", "LV", "MYO", "RV"]}, "labels must be an object of name/value pairs"),
    ({"channel_names": ["cineMRI"]}, "channel_names must be an object of name/value pairs"),
    ({"numTraining": "four"}, "numTraining must be a whole number of cases, got 'four'"),
    ({"numTraining": 3.5}, "numTraining must be a whole number of cases, got 3.5"),
    ({"channel_names": None, "file_ending": None, "modality": {"0": "MRI"}},  # None: the key is left out
     "missing required keys ['channel_names', 'file_ending']; this is nnU-Net v1's dataset.json"),
])
def test_a_malformed_dataset_json_is_a_dataset_error_naming_it(tmp_path: Path, capsys, changes, words) -> None:
    from autocmr.cli.convert import main
    from autocmr.dataset.raw import DatasetJson

    folder = write_phantom_dataset(tmp_path / "raw", n_subjects=1, seed=5, fov_mm=100)
    dataset_json = folder / "dataset.json"
    document = {**json.loads(dataset_json.read_text()), **changes}
    dataset_json.write_text(json.dumps({k: v for k, v in document.items() if v is not None}))
    with pytest.raises(DatasetError) as info:
        DatasetJson.load(dataset_json)
    assert str(info.value).startswith(f"{dataset_json}: {words}")
    assert main(["check", "-d", folder.name, "--raw", str(tmp_path / "raw"), "-j", "1"]) == 1
    captured = capsys.readouterr()
    assert words in captured.out and "Traceback" not in captured.err
