"""A model trained with the other cardiac phase: it trains on paired phantom ED/ES cases, validates with the
partner, and predicts with the partner given, without it (the image stands in) and with a misaligned one."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from autocmr.documents.layout import RUN_LOG
from autocmr.errors import ConfigurationError, InputFileError
from autocmr.inference.fast_cine import CineOptions, _PairedFrames, _fast_probabilities
from autocmr.inference.predictor import Predictor
from autocmr.planners.plans import Plans
from autocmr.testing.phantoms import make_phantom_subject


@pytest.fixture(scope="module")
def paired_model(tmp_path_factory):
    from autocmr.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("other_phase_model"), n_subjects=5, iterations=3,
                           final_validation=True, other_phase=True)[0]


@pytest.fixture(scope="module")
def predictor(paired_model):
    return Predictor(paired_model, device="cpu", mirror=False)


@pytest.fixture(scope="module")
def subject():
    cases = make_phantom_subject(11)
    return cases["ED"], cases["ES"], tuple(reversed(cases["ED"].geometry.spacing))


def test_training_pairs_the_phantom_phases_and_validates_with_them(paired_model, predictor):
    plans = Plans.load(paired_model / "plans.json")
    assert plans.configuration("2d").other_phase
    assert predictor.networks[0].encoder[0][0][0].in_channels == 2 * len(plans.channel_names)
    log = (paired_model / "fold_0" / RUN_LOG).read_text()
    assert "other phase: 10 of 10 cases paired" in log
    assert list(paired_model.glob("fold_0/validation/*.nii.gz")), "final validation (paired) wrote nothing"


def test_the_partner_changes_the_prediction_and_its_absence_is_the_image_itself(predictor, subject):
    ed, es, spacing = subject
    with_es = predictor.predict_array(ed.image, spacing, partner=es.image, return_probabilities=True)
    alone = predictor.predict_array(ed.image, spacing, return_probabilities=True)
    itself = predictor.predict_array(ed.image, spacing, partner=ed.image, return_probabilities=True)
    assert with_es.label.shape == ed.image.shape
    np.testing.assert_array_equal(alone.probabilities, itself.probabilities)
    assert not np.allclose(with_es.probabilities, alone.probabilities)


def test_a_partner_of_another_shape_is_refused_and_a_misaligned_one_replaced(predictor, subject, caplog):
    ed, es, spacing = subject
    with pytest.raises(InputFileError, match="other phase has shape"):
        predictor.predict_array(ed.image, spacing, partner=es.image[:-1])
    shifted = es.image.copy()
    shifted[:, :6] = 0  # crops to another bounding box, so its voxels no longer line up with the image's
    with caplog.at_level(logging.WARNING):
        moved = predictor.predict_array(ed.image, spacing, partner=shifted, return_probabilities=True)
    assert "does not lie on its voxel grid" in caplog.text
    alone = predictor.predict_array(ed.image, spacing, return_probabilities=True)
    np.testing.assert_array_equal(moved.probabilities, alone.probabilities)


def test_preprocessed_data_get_the_image_as_partner_in_every_prediction_path(predictor, subject):
    ed, _, spacing = subject
    from autocmr.io.orientation import Reorientation

    pre, _ = predictor.preprocess(ed.image[None], spacing, Reorientation((0, 1, 2), (False, False, False)))
    assert predictor.network_input(pre).shape[0] == 2 * pre.shape[0]
    fast = _fast_probabilities(predictor, pre, CineOptions(fast_folds=1, fast_step=1.0))
    assert fast.shape[1:] == pre.shape[1:]
    with pytest.raises(ConfigurationError, match="channel"):
        predictor.network_input(np.concatenate([pre, pre, pre]))


def _write_subject_folder(folder, subject):
    from autocmr.io.image import write_image

    ed, es, _ = subject
    folder.mkdir()
    write_image(ed.image, ed.geometry, folder / "anna_ED.nii.gz")
    write_image(es.image, es.geometry, folder / "anna_ES.nii.gz")
    write_image(ed.image, ed.geometry, folder / "lone.nii.gz")


def _mask(path):
    from autocmr.io.image import read_image

    return read_image(path)[0]


def test_the_batch_pairs_ed_with_es_and_says_which_volume_had_none(predictor, subject, tmp_path):
    from autocmr.analysis.subjects import phase_pairs_of_jobs
    from autocmr.inference.batch import predict_folder

    ed, es, spacing = subject
    _write_subject_folder(tmp_path / "in", subject)
    predict_folder(tmp_path / "in", tmp_path / "out", predictor, num_workers=0, phase_pairs=phase_pairs_of_jobs)
    np.testing.assert_array_equal(_mask(tmp_path / "out" / "anna_ED.nii.gz"),
                                  predictor.predict_array(ed.image, spacing, partner=es.image).label)
    np.testing.assert_array_equal(_mask(tmp_path / "out" / "anna_ES.nii.gz"),
                                  predictor.predict_array(es.image, spacing, partner=ed.image).label)
    np.testing.assert_array_equal(_mask(tmp_path / "out" / "lone.nii.gz"),
                                  predictor.predict_array(ed.image, spacing).label)
    cases = json.loads((tmp_path / "out" / "predictions.json").read_text())["cases"]
    assert any("no other cardiac phase" in w for w in cases["lone"]["warnings"])
    assert not any("other" in w for w in cases["anna_ED"]["warnings"])
    # without the pairing hook every volume sees itself, and says so
    predict_folder(tmp_path / "in", tmp_path / "alone", predictor, num_workers=0)
    np.testing.assert_array_equal(_mask(tmp_path / "alone" / "anna_ED.nii.gz"),
                                  predictor.predict_array(ed.image, spacing).label)
    # the two differ (else the checks above could not tell pairing from none): the tiny model uses its partner
    assert not np.array_equal(_mask(tmp_path / "out" / "anna_ED.nii.gz"), _mask(tmp_path / "alone" / "anna_ED.nii.gz"))


def test_an_unreadable_partner_costs_the_pairing_not_the_case(predictor, subject, tmp_path):
    from autocmr.analysis.subjects import phase_pairs_of_jobs
    from autocmr.inference.batch import predict_folder
    from autocmr.inference.inputs import discover_jobs

    _write_subject_folder(tmp_path / "in", subject)
    jobs = discover_jobs(tmp_path / "in", tmp_path / "out").jobs
    assert phase_pairs_of_jobs(jobs) == {"anna_ED": "anna_ES", "anna_ES": "anna_ED"}

    def pairs_with_a_missing_file(found):
        (tmp_path / "in" / "anna_ES.nii.gz").write_bytes(b"not an image")  # broken after discovery
        return phase_pairs_of_jobs(found)

    report = predict_folder(tmp_path / "in", tmp_path / "out", predictor, num_workers=0,
                            phase_pairs=pairs_with_a_missing_file)
    assert "anna_ED" in report.done and any(f.name == "anna_ES" for f in report.failures)
    cases = json.loads((tmp_path / "out" / "predictions.json").read_text())["cases"]
    assert any("other phase anna_ES.nii.gz unreadable" in w for w in cases["anna_ED"]["warnings"])


def test_the_fast_cine_path_pairs_its_full_accuracy_frames_and_the_full_path_says_it_does_not(predictor, tmp_path):
    from autocmr.inference.batch import predict_folder
    from autocmr.inference.fast_cine import CineOptions
    from autocmr.io.cine import write_cine
    from autocmr.testing.phantoms import make_phantom_cine

    frames, _, geometry, _, _ = make_phantom_cine(3, n_frames=6, fov_mm=150.0)
    (tmp_path / "in").mkdir()
    write_cine(frames, geometry, tmp_path / "in" / "cine.nii.gz")
    predict_folder(tmp_path / "in", tmp_path / "fast", predictor, num_workers=0)
    record = json.loads((tmp_path / "fast" / "predictions.json").read_text())["cases"]["cine"]
    assert any(note.startswith("other phase:") for note in record["cine"]["notes"])
    predict_folder(tmp_path / "in", tmp_path / "full", predictor, num_workers=0, cine=CineOptions(mode="full"))
    record = json.loads((tmp_path / "full" / "predictions.json").read_text())["cases"]["cine"]
    assert any("--cine full does not pair" in w for w in record["warnings"])


def test_the_fast_cine_path_pairs_only_the_frames_it_predicts_at_full_accuracy():
    """The paired inputs are built on demand, each once, with the partner nearest around the cycle."""
    grid = {"shape_before_crop": (2, 8, 8), "bbox": [[0, 2], [0, 8], [0, 8]], "shape_after_resampling": (2, 8, 8),
            "spacing": (8.0, 1.5, 1.5)}
    units = [(np.full((1, 2, 4, 4), t, np.float32), {**grid, "t": t}) for t in range(10)]
    units[3][1]["bbox"] = [[0, 2], [1, 8], [0, 8]]  # frame 3 cropped differently from every other frame
    notes = []
    frames = _PairedFrames(units, ed=0, es=4, notes=notes)
    assert len(frames) == 10 and notes == []
    data, props = frames[1]
    assert props["t"] == 1 and data.shape[0] == 2 and float(data[1].max()) == 4  # nearer ED: sees ES
    assert frames[8][0][1].max() == 4  # 8 is 2 frames from ED around the cycle, 4 from ES
    assert frames[-2] is frames[8] and frames[1][0] is data  # each frame paired once
    assert notes == []
    assert frames[3][0][1].max() == 3  # nearer ES, so it would see ED, but its grid differs: itself, noted
    assert len(notes) == 1 and "frame 3 predicted with itself in the place of frame 0" in notes[0]
    with pytest.raises(IndexError):
        frames[10]


def test_configuration_selection_scores_an_other_phase_model_with_its_partners(paired_model, tmp_path):
    """autocmr_find_best's cross-validation predictions pair each validation case as training's validation does."""
    from autocmr.inference.predictor import PredictorOptions
    from autocmr.io.orientation import Reorientation
    from autocmr.preprocessing.loading import load_case
    from autocmr.selection.cv_probabilities import (ensure_probabilities, image_files, open_cv_model,
                                                    read_probabilities)

    model = open_cv_model(paired_model, folds=["0"])
    assert model.partners and set(model.partners) == set(model.case_fold)  # every phantom subject has ED and ES
    raw = paired_model.parents[2] / "raw" / paired_model.parent.name
    case_id = sorted(model.case_fold)[0]
    options = PredictorOptions(folds=("0",), device="cpu", mirror=False, postprocess="off", precision="fp32")
    cached = read_probabilities(ensure_probabilities(model, [case_id], raw, tmp_path / "cache", options)[case_id])
    predictor = options.build(paired_model)
    case = load_case(image_files(raw, case_id, model.file_ending))
    partner = load_case(image_files(raw, model.partners[case_id], model.file_ending)).data
    assert isinstance(case.reorientation, Reorientation)
    paired = predictor.predict_canonical(case.data, case.spacing, case.reorientation, return_probabilities=True,
                                         partner=partner).probabilities
    alone = predictor.predict_canonical(case.data, case.spacing, case.reorientation,
                                        return_probabilities=True).probabilities
    np.testing.assert_allclose(cached, paired, atol=2e-3)  # float16 cache
    assert np.abs(cached - alone).max() > 1e-2


def test_a_single_phase_dicom_series_says_it_was_not_paired(predictor, subject, tmp_path):
    from autocmr.inference.batch import predict_folder
    from tests.helpers import write_dicom_series

    ed, _, _ = subject
    write_dicom_series(tmp_path / "in" / "ed_series", np.clip(ed.image, 0, 3000)[None].astype(np.int16),
                       description="sax ED")
    report = predict_folder(tmp_path / "in", tmp_path / "out", predictor, num_workers=0)
    assert report.done and not report.failures
    (record,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["cases"].values()
    assert any("separate ED and ES DICOM series are not paired" in w for w in record["warnings"])
