"""A model trained with the other cardiac phase: it trains on paired phantom ED/ES cases, validates with the
partner, and predicts with the partner given, without it (the image stands in) and with a misaligned one."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from autocmr.documents.layout import RUN_LOG
from autocmr.errors import ConfigurationError, InputFileError
from autocmr.inference.fast_cine import CineOptions, _fast_probabilities
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
