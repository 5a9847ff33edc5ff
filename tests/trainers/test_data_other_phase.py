"""The patch sampler with the other cardiac phase as extra channels."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.trainers.data import PatchSampler


class _TwoPhaseCache:
    """Cases 'ed' (value 1 everywhere), 'es' (value 2) and 'lone' (value 3): a channel tells its source."""

    def __init__(self):
        seg = np.zeros((1, 5, 32, 32), np.int8)
        seg[0, 1:4, 10:20, 10:20] = 1
        self.items = {name: (np.full((1, 5, 32, 32), value, np.float32), seg, {1: np.argwhere(seg[0] == 1)})
                      for name, value in (("ed", 1.0), ("es", 2.0), ("lone", 3.0))}

    def get(self, case_id):
        return self.items[case_id]


PARTNERS = {"ed": "es", "es": "ed"}


def _sampler(cases, dropout=0.0, context=0, other_phase=True, batch_size=32):
    return PatchSampler(_TwoPhaseCache(), cases, dim=2, sample_size=(16, 16), batch_size=batch_size,
                        oversampling=0.5, foreground_labels=[1], context_slices=context, other_phase=other_phase,
                        partners=PARTNERS, partner_dropout=dropout)


def _sources(images):
    """(image value, partner value) of each sample, read at the patch centre."""
    return [(float(s[0, 8, 8]), float(s[-1, 8, 8])) for s in images]


def test_each_sample_carries_its_partner_and_a_lone_case_itself():
    images, segs = _sampler(["ed", "es", "lone"]).sample(np.random.default_rng(0))
    assert images.shape == (32, 2, 16, 16) and segs.shape == (32, 1, 16, 16)
    pairs = set(_sources(images))
    assert pairs == {(1.0, 2.0), (2.0, 1.0), (3.0, 3.0)}


def test_dropout_one_pairs_every_sample_with_itself_and_a_share_in_between():
    assert {a == b for a, b in _sources(_sampler(["ed", "es"], dropout=1.0).sample(np.random.default_rng(1))[0])} \
        == {True}
    rng = np.random.default_rng(2)
    same = [a == b for _ in range(20) for a, b in _sources(_sampler(["ed", "es"], dropout=0.3).sample(rng)[0])]
    assert 0.2 < np.mean(same) < 0.4


def test_the_dropout_decision_changes_only_the_partner_channels():
    """Both samplers draw the same patches: whether the partner is kept does not shift the random stream."""
    kept_images, kept_segs = _sampler(["ed", "es"], dropout=0.0).sample(np.random.default_rng(5))
    self_images, self_segs = _sampler(["ed", "es"], dropout=1.0).sample(np.random.default_rng(5))
    np.testing.assert_array_equal(kept_segs, self_segs)
    np.testing.assert_array_equal(kept_images[:, :1], self_images[:, :1])
    assert (kept_images[:, 1, 8, 8] != self_images[:, 1, 8, 8]).all()
    plain_images, _ = _sampler(["ed"], other_phase=False).sample(np.random.default_rng(5))
    assert plain_images.shape == (32, 1, 16, 16)


def test_with_context_each_phase_brings_its_neighbouring_slices():
    images, _ = _sampler(["ed"], context=1).sample(np.random.default_rng(3))
    assert images.shape == (32, 6, 16, 16)
    centre = images[:, :, 8, 8]
    assert set(np.unique(centre[:, 1])) == {1.0} and set(np.unique(centre[:, 4])) == {2.0}
    assert set(np.unique(centre[:, [0, 2]])) <= {0.0, 1.0} and set(np.unique(centre[:, [3, 5]])) <= {0.0, 2.0}


def test_dropout_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="partner_dropout"):
        _sampler(["ed"], dropout=1.5)


def test_the_option_and_its_flag_check_their_range():
    from autocmr.cli.train import build_parser
    from autocmr.errors import ConfigurationError
    from autocmr.trainers.options import TrainOptions

    assert TrainOptions().other_phase_dropout == 0.2
    with pytest.raises(ConfigurationError, match="other-phase-dropout"):
        TrainOptions(other_phase_dropout=float("nan"))
    args = build_parser().parse_args(["101", "2d", "0", "--other-phase-dropout", "0.5"])
    assert args.other_phase_dropout == 0.5


def test_training_reads_the_phase_as_prediction_does(monkeypatch, tmp_path):
    """cases.csv spellings prediction accepts (``End-Systole``, `` ed ``) pair in training too, names ending in
    _ED/_ES pair without a phase column, and a dataset where nothing pairs says so."""
    import pandas as pd

    from autocmr.trainers import run

    grid = {"shape_before_crop": (5, 32, 32), "bbox": [[0, 5], [0, 32], [0, 32]],
            "shape_after_resampling": (5, 32, 32), "spacing": (10.0, 1.5, 1.5)}
    monkeypatch.setattr(run.storage, "load_properties", lambda folder, case_id: grid)
    metadata = pd.DataFrame({"subject": ["a", "a", "b", "b", "c"],
                             "phase": [" ed", "End-Systole", "diastole", "systole", "ED"]},
                            index=pd.Index(["a1", "a2", "b1", "b2", "c1"], name="case_id"))
    lines = []
    partners = run._phase_partners(metadata, tmp_path, lines.append)
    assert partners == {"a1": "a2", "a2": "a1", "b1": "b2", "b2": "b1"}  # c has no ES: paired with itself
    assert "4 of 5 cases paired" in lines[-1]

    named = pd.DataFrame({"subject": ["p_ED", "p_ES"]}, index=pd.Index(["p_ED", "p_ES"], name="case_id"))
    assert run._phase_partners(named, tmp_path, lines.append) == {"p_ED": "p_ES", "p_ES": "p_ED"}

    lone = pd.DataFrame({"subject": ["x", "y"]}, index=pd.Index(["x", "y"], name="case_id"))
    assert run._phase_partners(lone, tmp_path, lines.append) == {}
    assert lines[-1].startswith("warning: other phase: none of the 2 cases")
