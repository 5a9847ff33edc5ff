"""Orientation robustness of batch prediction: the same image stored with permuted/flipped axes (LPS, PIR...)
or obliquely gets the same mask, and every mask carries exactly its input file's header."""
from __future__ import annotations

import numpy as np

from autocmr.inference.batch import predict_folder
from autocmr.io.image import read_header, read_image, write_image
from autocmr.io.orientation import store_permuted, to_canonical
from tests.helpers import small_case, temporaries

HEADER_TOLERANCE = 1e-5  # mm / direction cosines: masks must carry the input header, not an approximation
# (axes, flips) of the stored copies: identity, two reversed orders (e.g. PIR-like), one plain flip.
STORAGE = {"canonical": ((0, 1, 2), (False, False, False)), "rev": ((2, 1, 0), (True, False, True)),
           "rot": ((1, 2, 0), (False, True, False)), "flip": ((0, 1, 2), (True, True, False))}


def test_reoriented_copies_give_identical_masks_with_their_own_headers(tmp_path, tiny_predictor):
    bases = {"axial": small_case(11), "oblique": small_case(12, oblique=True)}
    variants = {"axial": ("canonical", "rev", "rot"), "oblique": ("canonical", "rev", "flip")}
    src = tmp_path / "in"
    for base, case in bases.items():
        for variant in variants[base]:
            image, geometry = store_permuted(case.image, case.geometry, *STORAGE[variant])
            write_image(image, geometry, src / f"{base}_{variant}.nii.gz")
    report = predict_folder(src, tmp_path / "out", tiny_predictor, num_workers=0)
    assert report.ok and len(report.done) == 6
    for base in bases:
        canonical_masks = []
        for variant in variants[base]:
            name = f"{base}_{variant}"
            mask, geometry = read_image(tmp_path / "out" / f"{name}.nii.gz")
            assert geometry.differences(read_header(src / f"{name}.nii.gz"), HEADER_TOLERANCE) == [], name
            canonical_masks.append(to_canonical(mask, geometry)[0])
        assert len(np.unique(canonical_masks[0])) > 1  # the model predicts something
        for variant, mask in zip(variants[base][1:], canonical_masks[1:]):
            np.testing.assert_array_equal(mask, canonical_masks[0], err_msg=f"{base}_{variant}")
    assert not temporaries(tmp_path / "out")
