"""4D cine NIfTI helpers: exact header round trip (oblique, time spacing), frames split/join, is_cine."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from autocmr.errors import InputFileError
from autocmr.io.atomic import TEMP_PREFIX
from autocmr.io.cine import is_cine, join_frames, read_cine, split_frames, write_cine
from autocmr.io.image import Geometry, read_header, read_image, write_image
from autocmr.testing.phantoms import make_phantom_cine

TIME_STEP_MS = 31.25
TIME_ORIGIN_MS = 12.5


@pytest.fixture(scope="module")
def cine() -> tuple[np.ndarray, Geometry]:
    image, _, geometry, _, _ = make_phantom_cine(3, n_frames=4, fov_mm=100.0, oblique=True)
    # A time step and time origin other than the phantom's defaults, to see they survive the round trip.
    geometry = replace(geometry, spacing=geometry.spacing[:3] + (TIME_STEP_MS,),
                       origin=geometry.origin[:3] + (TIME_ORIGIN_MS,))
    return image, geometry


def test_round_trip_keeps_exact_4d_header(tmp_path, cine):
    image, geometry = cine
    assert not np.allclose(geometry.direction_matrix()[:3, :3], np.eye(3), atol=0.05)  # really oblique
    path = tmp_path / "cine.nii.gz"
    write_cine(image, geometry, path)
    array, read_geometry = read_cine(path)
    assert array.shape == image.shape and array.dtype == image.dtype
    np.testing.assert_array_equal(array, image)
    assert read_geometry.differences(geometry, tol=1e-5) == []
    assert read_geometry.spacing[3] == pytest.approx(TIME_STEP_MS)
    assert read_geometry.origin[3] == pytest.approx(TIME_ORIGIN_MS)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def test_split_and_join_frames(tmp_path, cine):
    image, geometry = cine
    frames = split_frames(image, geometry)
    assert len(frames) == image.shape[0]
    for t, (frame, frame_geometry) in enumerate(frames):
        np.testing.assert_array_equal(frame, image[t])
        assert frame_geometry == geometry.spatial() and frame_geometry.dim == 3
    # A frame written alone overlays the cine: same 3D header as the 4D file's spatial part.
    write_image(frames[1][0], frames[1][1], tmp_path / "frame1.nii.gz")
    write_cine(image, geometry, tmp_path / "cine.nii.gz")
    assert read_header(tmp_path / "frame1.nii.gz").differences(read_header(tmp_path / "cine.nii.gz").spatial()) == []
    masks = [(f > np.median(f)).astype(np.uint8) for f, _ in frames]
    joined = join_frames(masks, geometry)
    assert joined.shape == image.shape
    np.testing.assert_array_equal(joined[2], masks[2])
    with pytest.raises(ValueError, match="frames"):
        join_frames(masks[:-1], geometry)
    with pytest.raises(ValueError, match="shape"):
        join_frames([m[:, :-1] for m in masks], geometry)


def test_is_cine_and_single_frames(tmp_path, cine):
    image, geometry = cine
    write_cine(image, geometry, tmp_path / "cine.nii.gz")
    write_image(image[0], geometry.spatial(), tmp_path / "frame.nii.gz")
    single = replace(geometry, size=geometry.size[:3] + (1,))
    write_cine(image[:1], single, tmp_path / "single.nii.gz")
    assert is_cine(tmp_path / "cine.nii.gz") and is_cine(geometry)
    assert not is_cine(tmp_path / "frame.nii.gz") and not is_cine(geometry.spatial())
    assert not is_cine(tmp_path / "single.nii.gz") and not is_cine(single)
    # A 3D file reads as a one-frame cine with the same spatial header.
    array, g4 = read_cine(tmp_path / "frame.nii.gz")
    assert array.shape == (1,) + image.shape[1:] and g4.dim == 4
    assert g4.spatial().differences(geometry.spatial(), tol=1e-5) == []
    np.testing.assert_array_equal(array[0], read_image(tmp_path / "frame.nii.gz")[0])


def test_invalid_inputs(tmp_path, cine):
    image, geometry = cine
    with pytest.raises(ValueError, match="shape"):
        write_cine(image[:, :-1], geometry, tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="4D"):
        write_cine(image[0], geometry, tmp_path / "a.nii.gz")
    mixed = geometry.direction_matrix().copy()
    mixed[0, 3] = mixed[3, 0] = 0.3  # time leaking into x: NIfTI cannot store it
    with pytest.raises(ValueError, match="mixes time and space"):
        write_cine(image, replace(geometry, direction=tuple(mixed.ravel())), tmp_path / "a.nii.gz")
    assert not (tmp_path / "a.nii.gz").exists()
    with pytest.raises(InputFileError, match="does not exist"):
        read_cine(tmp_path / "missing.nii.gz")
