"""Loss, splits, augmentation presets and the seeded batch stream."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from autocmr.errors import ConfigurationError
from autocmr.trainers.augmentation import (PRESETS, RandomRotation, build_transforms, preset,
                                           sampling_patch_size)
from autocmr.trainers.data import PatchSampler, crop_padded
from autocmr.trainers.loader import BatchStream, deep_supervision_scales
from autocmr.trainers.loss import DeepSupervisionLoss, DiceCELoss, SoftDiceLoss, deep_supervision_weights
from autocmr.trainers.options import TrainOptions, parse_duration
from autocmr.trainers.splits import select_fold, subject_folds


def test_dice_loss_is_zero_for_perfect_prediction_and_high_for_wrong():
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    good = torch.full((2, 2, 8, 8), -20.0)
    good[:, 1][target[:, 0] == 1] = 20
    good[:, 0][target[:, 0] == 0] = 20
    dice = SoftDiceLoss(batch_dice=True)
    assert float(dice(good, target)) < 1e-3
    assert float(dice(-good, target)) > 0.99
    combined = DiceCELoss(batch_dice=False)
    assert float(combined(good, target)) < float(combined(torch.zeros_like(good), target))


def test_dice_weight_zero_is_cross_entropy_only_and_is_validated():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 1, 8, 8))
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    assert float(DiceCELoss(batch_dice=True, weight_dice=0.0)(logits, target)) == pytest.approx(float(ce))
    dice = SoftDiceLoss(batch_dice=True)(logits, target)
    assert float(DiceCELoss(batch_dice=True)(logits, target)) == pytest.approx(float(ce + dice))
    assert TrainOptions().dice_weight == 1.0  # nnU-Net's Dice + CE stays the default
    assert TrainOptions(dice_weight=0.0).digest() != TrainOptions().digest()  # a different experiment
    for bad in (-0.5, float("nan")):
        with pytest.raises(ConfigurationError, match="dice-weight"):
            TrainOptions(dice_weight=bad)


def test_dice_weight_schedule_goes_linearly_to_its_end_value():
    from autocmr.trainers.schedule import dice_weight

    constant = TrainOptions(dice_weight=0.5)
    assert [dice_weight(constant, p) for p in (0.0, 0.5, 1.0)] == [0.5, 0.5, 0.5]
    ramp = TrainOptions(dice_weight=1.0, dice_weight_end=0.0)
    assert [dice_weight(ramp, p) for p in (0.0, 0.25, 1.0, 1.5)] == [1.0, 0.75, 0.0, 0.0]
    assert ramp.digest() != TrainOptions().digest()
    with pytest.raises(ConfigurationError, match="dice-weight-end"):
        TrainOptions(dice_weight_end=-1.0)


def test_deep_supervision_weights_halve_and_ignore_coarsest():
    w = deep_supervision_weights(4)
    assert w[3] == 0 and w[0] == pytest.approx(2 * w[1]) and sum(w) == pytest.approx(1)
    loss = DeepSupervisionLoss(DiceCELoss(batch_dice=True), 3)
    outs = [torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)]
    targets = [torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 1, 4, 4, dtype=torch.long),
               torch.zeros(1, 1, 2, 2, dtype=torch.long)]
    assert torch.isfinite(loss(outs, targets))
    assert deep_supervision_scales([(1, 1), (2, 2), (2, 1)], 3) == [[1, 1], [0.5, 0.5], [0.25, 0.5]]


def test_subject_folds_keep_ed_and_es_together_and_cover_everything_once():
    subjects = {f"p{i:03d}": [f"p{i:03d}_ED", f"p{i:03d}_ES"] for i in range(23)}
    folds = subject_folds(subjects, n_folds=5, seed=1)
    val_all = [c for f in folds for c in f["val"]]
    assert sorted(val_all) == sorted(c for cs in subjects.values() for c in cs)
    for f in folds:
        for s, cases in subjects.items():
            assert all(c in f["val"] for c in cases) or all(c in f["train"] for c in cases)
        assert not set(f["train"]) & set(f["val"])
    assert folds == subject_folds(subjects, n_folds=5, seed=1)  # seeded
    assert folds != subject_folds(subjects, n_folds=5, seed=2)


def test_fold_selection_errors_are_clear():
    subjects = {f"s{i}": [f"s{i}"] for i in range(5)}
    folds = subject_folds(subjects)
    cases = [f"s{i}" for i in range(5)]
    assert select_fold(folds, "all", cases) == (sorted(cases), [])
    with pytest.raises(ConfigurationError, match="valid folds are 0..4"):
        select_fold(folds, 7, cases)
    with pytest.raises(ConfigurationError, match="no validation subjects"):
        select_fold([{"train": cases, "val": []}], 0, cases)
    with pytest.raises(ConfigurationError, match="cannot be split"):
        subject_folds({"a": ["a"], "b": ["b"]})


def test_a_split_that_mixes_one_patients_cases_is_refused():
    cases = ["p1_ED", "p1_ES", "p2_ED", "p2_ES"]
    subject_of = {c: c.split("_")[0] for c in cases}
    per_case = [{"train": ["p1_ED", "p2_ED", "p2_ES"], "val": ["p1_ES"]}]  # as a per-case split draws them
    with pytest.raises(ConfigurationError, match=r"subject\(s\) \['p1'\] in training and validation"):
        select_fold(per_case, 0, cases, subject_of=subject_of)
    with pytest.raises(ConfigurationError, match="cases in training and validation"):
        select_fold([{"train": cases, "val": ["p1_ES"]}], 0, cases)
    per_subject = [{"train": ["p2_ED", "p2_ES"], "val": ["p1_ED", "p1_ES"]}]
    assert select_fold(per_subject, 0, cases, subject_of=subject_of) == (per_subject[0]["train"], per_subject[0]["val"])


def test_presets_and_durations():
    assert {"default", "cross-domain", "none"} <= set(PRESETS)
    with pytest.raises(ConfigurationError, match="valid"):
        preset("heavy")
    cross, default = preset("cross-domain"), preset("default")
    assert cross.p_brightness > default.p_brightness and cross.brightness == (0.5, 1.5)
    assert parse_duration("60m") == 3600 and parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(ConfigurationError):
        parse_duration("an hour")
    with pytest.raises(ConfigurationError, match="freeze"):
        TrainOptions(freeze="all")


def test_learning_rate_defaults_lower_for_fine_tuning_and_survives_a_round_trip():
    assert TrainOptions().learning_rate == 1e-2
    tuned = TrainOptions(pretrained="model_dir")
    assert tuned.learning_rate == 1e-3
    assert TrainOptions(pretrained="model_dir", learning_rate=5e-3).learning_rate == 5e-3
    assert TrainOptions.from_dict(tuned.to_dict()) == tuned  # stored resolved: --continue resumes alike
    with pytest.raises(ConfigurationError, match="learning rate"):
        TrainOptions(learning_rate=0.0)
    with pytest.raises(ConfigurationError, match="val_iterations must be >= 1"):  # crashed after an epoch before
        TrainOptions(val_iterations=0)


def test_sampling_patch_covers_rotated_and_zoomed_patch():
    size = sampling_patch_size((64, 32), preset("default"), in_plane=False)
    assert size[0] >= 64 * 1.4 and size[1] >= 64  # rotation mixes the axes
    assert sampling_patch_size((64, 64), preset("none"), in_plane=False) == (64, 64)
    size3 = sampling_patch_size((8, 64, 64), preset("default"), in_plane=True)
    assert size3[0] == 8  # thick-slice stacks are not rotated or zoomed through-plane


def test_transforms_produce_patch_and_deep_supervision_targets_reproducibly():
    rot = RandomRotation(0.5, True)
    assert pickle.loads(pickle.dumps(rot)) == rot  # workers must unpickle it
    t = build_transforms(preset("cross-domain"), (32, 32), anisotropic=False, ds_scales=[[1, 1], [0.5, 0.5]])
    img = torch.randn(1, 46, 46)
    seg = torch.zeros(1, 46, 46, dtype=torch.int16)
    seg[:, 10:30, 10:30] = 2
    outs = []
    for _ in range(2):
        np.random.seed(3)
        torch.manual_seed(3)
        outs.append(t(image=img.clone(), segmentation=seg.clone()))
    assert outs[0]["image"].shape == (1, 32, 32)
    assert [s.shape for s in outs[0]["segmentation"]] == [(1, 32, 32), (1, 16, 16)]
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert set(torch.unique(outs[0]["segmentation"][0]).tolist()) <= {0, 2}


def test_thick_slice_stacks_are_zoomed_in_plane_only():
    from autocmr.trainers.augmentation import InPlaneScaling, sampling_patch_size, with_overrides

    params = with_overrides(preset("none"), p_scaling=1.0, scaling=(1.4, 1.4))  # always zoom out by 1.4
    patch = (8, 32, 32)
    t = build_transforms(params, patch, anisotropic=True, ds_scales=None)
    size = sampling_patch_size(patch, params, in_plane=True)
    seg = torch.ones((1, *size), dtype=torch.int16)  # label everywhere in the region cut for the patch
    out = t(image=torch.ones((1, *size)), segmentation=seg)
    # through-plane untouched: every slice of the patch still lies inside the region (none blanked)
    assert (out["segmentation"][0].float().mean(axis=(1, 2)) == 1).all()
    scaling = pickle.loads(pickle.dumps(InPlaneScaling((0.7, 1.4))))  # workers must unpickle it
    draws = [scaling(dim=d) for d in (0, 1, 2)]
    assert draws[0] == 1.0 and draws[1] == draws[2] and 0.7 <= draws[1] <= 1.4


def test_elastic_deformation_moves_voxels_by_pixels_not_fractions_of_one():
    from autocmr.trainers.augmentation import ElasticMagnitude, with_overrides

    params = with_overrides(preset("none"), p_elastic=1.0)
    t = build_transforms(params, (64, 64), anisotropic=False, ds_scales=None)
    ramp = torch.arange(64, dtype=torch.float32)[None, :, None].expand(1, 64, 64).contiguous()  # value = row
    shifts = []
    for seed in range(5):
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = t(image=ramp.clone(), segmentation=torch.zeros((1, 64, 64), dtype=torch.int16))["image"]
        shifts.append(float((out - ramp)[0, 8:-8, 8:-8].abs().max()))  # rows moved, in pixels
    assert max(shifts) > 1.0  # a fifth of a pixel before: no deformation to speak of
    assert ElasticMagnitude(0.05, True)(dim=0, patch_size=(8, 64, 64)) == 0.0  # thick slices: in-plane only
    assert 0 <= ElasticMagnitude(0.05, False)(dim=1, patch_size=(64, 64)) <= 3.2
    assert pickle.loads(pickle.dumps(ElasticMagnitude(0.05, True))) == ElasticMagnitude(0.05, True)


def test_the_region_cut_for_an_elastic_deformation_covers_every_point_it_samples():
    """--augmentation none --elastic: the region cut before augmentation was the bare patch, so a deformation
    pointing outwards sampled zeros (a blank band at the patch edge); the region now allows for it."""
    from autocmr.trainers.augmentation import with_overrides

    params = with_overrides(preset("none"), p_elastic=1.0)
    patch = (64, 64)
    size = sampling_patch_size(patch, params, in_plane=False)
    assert all(s > p for s, p in zip(size, patch))
    spatial = build_transforms(params, patch, anisotropic=False, ds_scales=None).transforms[0]
    for seed in range(30):
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = spatial(image=torch.ones((1, *size)), segmentation=torch.ones((1, *size), dtype=torch.int16))
        assert out["image"].shape[1:] == patch
        assert float(out["image"].min()) > 0.99 and int(out["segmentation"].min()) == 1, seed


def test_elastic_deformation_never_folds_the_image():
    """A field smoothed over a pixel or two with a 6 px displacement swaps neighbours (12 % of draws did with
    batchgeneratorsv2's default smoothing range): the displacement steps between neighbours stay above -1 px."""
    from autocmr.trainers.augmentation import with_overrides

    params = with_overrides(preset("none"), p_elastic=1.0)
    spatial = build_transforms(params, (128, 128), anisotropic=False, ds_scales=None).transforms[0]
    image = torch.zeros((1, 128, 128))
    worst = 0.0
    for seed in range(60):
        np.random.seed(seed)
        torch.manual_seed(seed)
        offsets = spatial.get_parameters(image=image)["elastic_offsets"]  # (y, x, 2), pixels
        dy = offsets[1:, :, 0] - offsets[:-1, :, 0]
        dx = offsets[:, 1:, 1] - offsets[:, :-1, 1]
        worst = max(worst, float((dy < -1).float().mean()), float((dx < -1).float().mean()))
    assert worst == 0.0


def test_context_channels_get_one_intensity_change():
    from autocmr.trainers.augmentation import with_overrides

    params = with_overrides(preset("none"), p_brightness=1.0, p_gamma=1.0, p_contrast=1.0, p_blur=1.0)
    image = torch.rand(1, 32, 32).repeat(3, 1, 1) + 0.5  # three channels that are one image
    seg = torch.zeros((1, 32, 32), dtype=torch.int16)
    np.random.seed(0)
    together = build_transforms(params, (32, 32), anisotropic=False, ds_scales=None, synchronize_channels=True)(
        image=image.clone(), segmentation=seg.clone())["image"]
    assert torch.allclose(together[0], together[1]) and torch.allclose(together[0], together[2])
    np.random.seed(0)
    apart = build_transforms(params, (32, 32), anisotropic=False, ds_scales=None)(
        image=image.clone(), segmentation=seg.clone())["image"]
    assert not torch.allclose(apart[0], apart[1])  # modalities: each channel its own change


class _FakeCache:
    def __init__(self):
        rng = np.random.default_rng(0)
        data = rng.normal(size=(1, 6, 40, 40)).astype(np.float32)
        seg = np.zeros((1, 6, 40, 40), np.int8)
        seg[0, 2:4, 30:35, 30:35] = 1
        self.item = (data, seg, {1: np.argwhere(seg[0] == 1)})

    def get(self, case_id):
        return self.item


def test_foreground_oversampling_and_stream_determinism():
    sampler = PatchSampler(_FakeCache(), ["a"], dim=2, sample_size=(16, 16), batch_size=3, oversampling=0.33,
                           foreground_labels=[1])
    _, segs = sampler.sample(np.random.default_rng(0))
    assert (segs[-1] == 1).any()  # the last sample is forced to contain foreground
    stream = BatchStream(sampler, None, seed=5)
    a, b, c = stream.batch(7), stream.batch(7), stream.batch(8)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_crop_padded_pads_outside_the_array():
    arr = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = crop_padded(arr, (-1, 2), (3, 4))
    assert out.shape == (1, 3, 4)
    assert (out[:, 0] == 0).all() and out[0, 1, 0] == arr[0, 0, 2] and (out[0, 1, 2:] == 0).all()
