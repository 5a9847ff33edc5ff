"""autocmr.io.image: images round-trip with their exact geometry; bad files name themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autocmr.errors import InputFileError
from autocmr.io.image import Geometry, read_header, read_image, to_sitk, write_image

GEOMETRY = Geometry(size=(6, 5, 4), spacing=(1.25, 1.5, 8.0), origin=(10.0, -3.5, 2.0),
                    direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))


def test_shape_and_spacing_are_reported_in_numpy_order() -> None:
    assert GEOMETRY.shape == (4, 5, 6)
    assert GEOMETRY.spacing_zyx == (8.0, 1.5, 1.25)
    assert GEOMETRY.direction_matrix()[2, 2] == -1.0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
def test_write_then_read_keeps_values_and_geometry(tmp_path: Path, suffix: str) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / f"case{suffix}"
    write_image(array, GEOMETRY, path)
    read, geometry = read_image(path)
    np.testing.assert_array_equal(read, array)
    assert geometry.differences(GEOMETRY) == []
    assert read_header(path).differences(GEOMETRY) == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_read_image_casts_when_asked(tmp_path: Path) -> None:
    write_image(np.ones((4, 5, 6), np.uint8), GEOMETRY, tmp_path / "m.nii.gz")
    assert read_image(tmp_path / "m.nii.gz", dtype=np.float32)[0].dtype == np.float32


def test_differences_names_what_differs_and_tolerates_rounding() -> None:
    nudged = Geometry(GEOMETRY.size, (1.25 + 1e-5, 1.5, 8.0), GEOMETRY.origin, GEOMETRY.direction)
    assert GEOMETRY.differences(nudged) == []
    moved = Geometry(GEOMETRY.size, GEOMETRY.spacing, (10.0, -3.5, 7.0), GEOMETRY.direction)
    assert [d.split()[0] for d in GEOMETRY.differences(moved)] == ["origin"]
    other_size = Geometry((6, 5, 3), GEOMETRY.spacing, GEOMETRY.origin, GEOMETRY.direction)
    assert GEOMETRY.differences(other_size) == ["size (6, 5, 4) vs (6, 5, 3)"]


def test_spatial_drops_the_time_axis_of_a_4d_geometry() -> None:
    direction_4d = np.eye(4)
    direction_4d[:3, :3] = GEOMETRY.direction_matrix()
    cine = Geometry(GEOMETRY.size + (30,), GEOMETRY.spacing + (1.0,), GEOMETRY.origin + (0.0,),
                    tuple(direction_4d.ravel()))
    assert cine.spatial() == GEOMETRY
    assert GEOMETRY.spatial() is GEOMETRY


def test_dict_round_trip() -> None:
    assert Geometry.from_dict(GEOMETRY.to_dict()) == GEOMETRY


def test_to_sitk_rejects_an_array_of_another_shape() -> None:
    with pytest.raises(ValueError, match="does not match geometry shape"):
        to_sitk(np.zeros((4, 5, 7)), GEOMETRY)


def test_missing_and_corrupt_files_raise_input_file_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist") as missing:
        read_image(tmp_path / "absent.nii.gz")
    assert missing.value.path == tmp_path / "absent.nii.gz"
    corrupt = tmp_path / "corrupt.mha"
    corrupt.write_bytes(b"this is not an image")
    with pytest.raises(InputFileError) as bad:
        read_image(corrupt)
    assert bad.value.path == corrupt and "cannot read" in bad.value.reason


def _mha(tmp_path: Path, name: str, spacing_line: bytes | None = None, keep: float = 1.0) -> Path:
    """An uncompressed MetaImage written by ITK, its ElementSpacing line replaced or its end cut off."""
    path = tmp_path / name
    write_image(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), GEOMETRY, path, compress=False)
    data = path.read_bytes()
    if spacing_line is not None:
        start = data.index(b"ElementSpacing = ")
        data = data[:start] + spacing_line + data[data.index(b"\n", start):]
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_a_truncated_image_is_called_truncated_not_missing(tmp_path: Path) -> None:
    path = _mha(tmp_path, "cut.mha", keep=0.6)
    assert read_header(path).shape == (4, 5, 6)  # the header is intact
    with pytest.raises(InputFileError, match="truncated or corrupt") as bad:
        read_image(path)
    assert bad.value.path == path and "No such file" not in bad.value.reason and "6x5x4 voxels" in bad.value.reason


@pytest.mark.parametrize("spacing", [b"0 1.5 8", b"nan 1.5 8", b"1.25 1.5 0"])
def test_an_image_without_a_voxel_size_is_refused_by_header_and_full_read(tmp_path: Path, spacing: bytes) -> None:
    path = _mha(tmp_path, "flat.mha", b"ElementSpacing = " + spacing)
    axis = "z" if spacing.endswith(b" 0") else "x"
    for reader in (read_header, read_image):
        with pytest.raises(InputFileError, match=f"voxel size along {axis}") as bad:
            reader(path)
        assert bad.value.path == path


def test_a_negative_spacing_reads_the_same_from_the_header_and_the_voxels(tmp_path: Path) -> None:
    path = _mha(tmp_path, "neg.mha", b"ElementSpacing = -1.25 1.5 8")
    header, (_, full) = read_header(path), read_image(path)
    assert header.differences(full) == []
    assert header.spacing == (1.25, 1.5, 8.0)


@pytest.mark.parametrize("matrix", [b"1 0.05 0 0 1 0 0 0 1", b"1 0 0 1 0 0 0 0 1", b"0 0 0 0 0 0 0 0 0"])
def test_a_direction_that_is_not_a_rotation_is_refused_by_header_and_full_read(tmp_path: Path,
                                                                              matrix: bytes) -> None:
    """Sheared (a mask would be written on another, orthogonal grid) or singular (ITK's message is "Bad
    direction", not a truncated file): refused naming the file, by the quick header read of discovery too."""
    path = tmp_path / "bad.mha"
    write_image(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), GEOMETRY, path, compress=False)
    data = path.read_bytes()
    start = data.index(b"TransformMatrix = ")
    path.write_bytes(data[:start] + b"TransformMatrix = " + matrix + data[data.index(b"\n", start):])
    for reader in (read_header, read_image):
        with pytest.raises(InputFileError, match="is not a rotation") as bad:
            reader(path)
        assert bad.value.path == path and "truncated" not in bad.value.reason


def test_directions_written_with_three_decimals_are_accepted(tmp_path: Path) -> None:
    from scipy.spatial.transform import Rotation

    rounded = np.round(Rotation.from_euler("xyz", [25, -40, 15], degrees=True).as_matrix(), 3)
    geometry = Geometry((6, 5, 4), (1.25, 1.5, 8.0), (10.0, -20.0, 30.0), tuple(rounded.ravel()))
    write_image(np.zeros((4, 5, 6), np.int16), geometry, tmp_path / "r.mha")
    assert read_header(tmp_path / "r.mha").differences(geometry) == []


@pytest.mark.parametrize("suffix, key", [(".mha", "ElementSpacing"), (".nrrd", "space directions")])
def test_an_mha_or_nrrd_header_without_a_voxel_size_is_refused(tmp_path, suffix, key):
    """ITK takes 1 mm where the header gives no voxel size: volumes and resampling would be wrong silently."""
    import SimpleITK as sitk

    from autocmr.errors import InputFileError
    from autocmr.io.image import read_header, read_image

    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing((1.5, 1.5, 8.0))
    good = tmp_path / f"good{suffix}"
    sitk.WriteImage(image, str(good), useCompression=False)
    assert read_header(good).spacing == pytest.approx((1.5, 1.5, 8.0))
    raw = good.read_bytes()
    cut = raw.index(b"\n\n") if suffix == ".nrrd" else raw.index(b"ElementDataFile")
    lines = raw[:cut].split(b"\n")
    header = b"\n".join(line for line in lines if not line.startswith(key.encode()))
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(header + raw[cut:])
    assert sitk.ReadImage(str(bad)).GetSpacing() == (1.0, 1.0, 1.0)  # what ITK alone does
    for read in (read_header, read_image):
        with pytest.raises(InputFileError, match="no voxel size"):
            read(bad)
