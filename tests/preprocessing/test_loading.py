"""autocmr.preprocessing.loading: what a case file must be, said in terms of what to do about it."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.errors import InputFileError
from autocmr.io.image import Geometry, write_image
from autocmr.preprocessing.loading import load_case


def test_a_2d_image_is_refused_with_how_to_store_a_single_slice(tmp_path):
    path = tmp_path / "slice_0000.nii.gz"
    image = np.random.default_rng(0).normal(100, 20, (40, 48)).astype(np.float32)
    write_image(image, Geometry((48, 40), (1.5, 1.5), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)), path)
    with pytest.raises(InputFileError, match=r"is a 2D image.*3D image of one slice") as info:
        load_case([path])
    assert info.value.path == path
    one_slice = tmp_path / "one_0000.nii.gz"  # the same slice stored as advised loads, its slice axis first
    write_image(image[None], Geometry((48, 40, 1), (1.5, 1.5, 8.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
                one_slice)
    assert load_case([one_slice]).data.shape == (1, 1, 40, 48)
