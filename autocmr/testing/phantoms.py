"""Short-axis cine-like phantoms: LV cavity, myocardial ring and RV crescent inside a thorax.

Anatomy is defined in millimetres and rendered analytically at voxel centres, so labels are exact for any
spacing. Images get partial-volume blur, a smooth bias field and Rician noise, like magnitude MR. Each
subject has an ED and an ES phase (the LV and RV contract, the wall thickens), and a whole cine (4D) can be
rendered too. Labels follow the autocmr convention (1 LV, 2 MYO, 3 RV).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from autocmr.dataset.labels import AUTOCMR_LABELS, LV, MYO, RV
from autocmr.dataset.naming import make_dataset_name
from autocmr.dataset.raw import DatasetJson, write_cases_csv
from autocmr.io.image import Geometry, write_image

# Relative signal of tissues in bSSFP cine (blood bright, myocardium dark); scaled per case later.
SIGNAL = {"air": 0.03, "lung": 0.08, "tissue": 0.40, "liver": 0.30, "myo": 0.28, "blood": 0.95}


@dataclass(frozen=True)
class Anatomy:
    """One subject's heart, in mm. Phase 0 is end-diastole, 1 end-systole."""

    lv_radius: float  # LV cavity radius at the base, ED
    wall: float  # myocardial thickness, ED
    long_axis: float  # base-to-apex length of the LV cavity
    ef: float  # LV ejection fraction (fraction, 0-1)
    rv_radius: float  # RV semi-axis, ED
    rv_angle: float  # direction of the RV from the LV centre (radians, in-plane)
    centre: tuple[float, float]  # LV centre offset from the image centre (y, x) in mm
    body: tuple[float, float]  # thorax semi-axes (y, x) in mm


@dataclass(frozen=True)
class PhantomCase:
    image: np.ndarray  # float32, numpy order (z, y, x)
    label: np.ndarray  # uint8, same shape
    geometry: Geometry


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        lv_radius=float(rng.uniform(22, 30)), wall=float(rng.uniform(7, 10)),
        long_axis=float(rng.uniform(70, 90)), ef=float(rng.uniform(0.45, 0.68)),
        rv_radius=float(rng.uniform(26, 34)), rv_angle=float(rng.uniform(0.75, 1.25) * np.pi),
        centre=(float(rng.uniform(-12, 12)), float(rng.uniform(-12, 12))),
        body=(float(rng.uniform(110, 130)), float(rng.uniform(140, 165))),
    )


def sample_geometry(rng: np.random.Generator, *, fov_mm: float = 240.0, in_plane: tuple[float, float] = (1.3, 1.9),
                    slice_mm: tuple[float, float] = (6.0, 10.0), oblique: bool = False) -> Geometry:
    """A random cine stack covering the LV: in-plane spacing, slice thickness, size, origin, direction."""
    dxy = float(rng.uniform(*in_plane))
    dz = float(rng.choice(np.arange(slice_mm[0], slice_mm[1] + 1e-6, 1.0)))
    nx = int(round(fov_mm * rng.uniform(0.9, 1.1) / dxy))
    ny = int(round(fov_mm * rng.uniform(0.8, 1.0) / dxy))
    nz = int(np.ceil(100.0 / dz))  # cover base to beyond the apex
    direction = np.eye(3)
    if oblique:
        direction = _random_rotation(rng, max_angle=np.deg2rad(40))
    origin = tuple(float(v) for v in rng.uniform(-150, 150, size=3))
    return Geometry((nx, ny, nz), (dxy, dxy, dz), origin, tuple(direction.ravel().tolist()))


def _random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def render_labels(anatomy: Anatomy, geometry: Geometry, phase: float) -> np.ndarray:
    """Exact label map at the voxel centres of ``geometry`` for a phase in [0 (ED), 1 (ES)]."""
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing_zyx
    # Volume scales by (1 - ef) at ES; a radius by its square root (area) since the base is fixed.
    squeeze = 1.0 - phase * (1.0 - np.sqrt(1.0 - anatomy.ef))
    r_cav = anatomy.lv_radius * squeeze
    wall = anatomy.wall * (1.0 + 0.45 * phase)
    rv_scale = 1.0 - phase * 0.3
    yy = (np.arange(ny) - (ny - 1) / 2) * dy - anatomy.centre[0]
    xx = (np.arange(nx) - (nx - 1) / 2) * dx - anatomy.centre[1]
    y, x = np.meshgrid(yy, xx, indexing="ij")
    r = np.hypot(y, x)
    label = np.zeros((nz, ny, nx), np.uint8)
    base_mm = 8.0  # first slice sits above the base (atria region, no LV)
    for k in range(nz):
        depth = k * dz - base_mm  # mm below the base
        if depth < 0:
            continue
        frac = depth / anatomy.long_axis
        cav = r_cav * np.sqrt(max(0.0, 1.0 - frac**2))
        epi = (r_cav + wall) * np.sqrt(max(0.0, 1.0 - (depth / (anatomy.long_axis + wall)) ** 2))
        sl = label[k]
        sl[r < epi] = MYO
        sl[r < cav] = LV
        if frac < 0.7:  # the RV does not reach the apex
            a = anatomy.rv_radius * rv_scale * (1.0 - 0.6 * frac)
            cy, cx = (r_cav + wall) * 0.55 * np.sin(anatomy.rv_angle), (r_cav + wall) * 0.55 * np.cos(anatomy.rv_angle)
            rot = anatomy.rv_angle
            u = (x - cx) * np.cos(rot) + (y - cy) * np.sin(rot)
            v = -(x - cx) * np.sin(rot) + (y - cy) * np.cos(rot)
            inside = (u / (a * 1.25)) ** 2 + (v / (a * 1.05)) ** 2 < 1.0
            septum = r < epi + 3.0
            sl[inside & ~septum & (sl == 0)] = RV
    return label


def render_image(anatomy: Anatomy, geometry: Geometry, label: np.ndarray, rng: np.random.Generator,
                 *, noise: float = 0.04, bias: float = 0.3) -> np.ndarray:
    """MR-like magnitude image around ``label``: tissues, blur, bias field, Rician noise."""
    nz, ny, nx = label.shape
    dz, dy, dx = geometry.spacing_zyx
    yy = (np.arange(ny) - (ny - 1) / 2) * dy
    xx = (np.arange(nx) - (nx - 1) / 2) * dx
    y, x = np.meshgrid(yy, xx, indexing="ij")
    body = (y / anatomy.body[0]) ** 2 + (x / anatomy.body[1]) ** 2 < 1.0
    lung_l = ((y + 10) / 70) ** 2 + ((x - 75) / 45) ** 2 < 1.0
    lung_r = ((y + 10) / 70) ** 2 + ((x + 85) / 45) ** 2 < 1.0
    liver = ((y - 70) / 45) ** 2 + ((x + 60) / 70) ** 2 < 1.0
    base = np.full((ny, nx), SIGNAL["air"], np.float32)
    base[body] = SIGNAL["tissue"]
    base[liver & body] = SIGNAL["liver"]
    base[(lung_l | lung_r) & body] = SIGNAL["lung"]
    image = np.repeat(base[None], nz, axis=0)
    texture = ndimage.gaussian_filter(rng.normal(size=image.shape).astype(np.float32), (0, 3, 3))
    image *= 1.0 + 0.6 * texture / (np.abs(texture).max() + 1e-6) * 0.25
    image[label == MYO] = SIGNAL["myo"]
    image[(label == LV) | (label == RV)] = SIGNAL["blood"] * rng.uniform(0.9, 1.0)
    image = ndimage.gaussian_filter(image, (0.0, 0.7, 0.7))  # partial volume
    gy, gx = rng.uniform(-1, 1, 2)
    field = 1.0 + bias * (gy * y / yy.max() + gx * x / xx.max()) / 2 + bias * 0.3 * (x / xx.max()) ** 2
    image *= np.clip(field, 0.3, None)[None].astype(np.float32)
    n1, n2 = rng.normal(scale=noise, size=(2,) + image.shape).astype(np.float32)
    image = np.sqrt((image + n1) ** 2 + n2**2)
    return (image * rng.uniform(200, 900)).astype(np.float32)


def make_phantom_case(rng: np.random.Generator | int, *, phase: float = 0.0, anatomy: Anatomy | None = None,
                      geometry: Geometry | None = None, oblique: bool = False, fov_mm: float = 240.0) -> PhantomCase:
    rng = np.random.default_rng(rng)
    anatomy = anatomy or sample_anatomy(rng)
    geometry = geometry or sample_geometry(rng, oblique=oblique, fov_mm=fov_mm)
    label = render_labels(anatomy, geometry, phase)
    return PhantomCase(render_image(anatomy, geometry, label, rng), label, geometry)


def make_phantom_subject(rng: np.random.Generator | int, **kwargs) -> dict[str, PhantomCase]:
    """ED and ES of one subject: same anatomy and geometry, different phase."""
    rng = np.random.default_rng(rng)
    anatomy = sample_anatomy(rng)
    geometry = sample_geometry(rng, oblique=kwargs.pop("oblique", False), fov_mm=kwargs.pop("fov_mm", 240.0))
    return {name: make_phantom_case(rng, phase=p, anatomy=anatomy, geometry=geometry, **kwargs)
            for name, p in (("ED", 0.0), ("ES", 1.0))}


def make_phantom_cine(rng: np.random.Generator | int, *, n_frames: int = 12, fov_mm: float = 200.0,
                      oblique: bool = False) -> tuple[np.ndarray, np.ndarray, Geometry, int, int]:
    """A 4D cine (t, z, y, x) with labels, its 4D geometry, and the ED and ES frame indices."""
    if n_frames < 2:
        raise ValueError(f"a cine needs at least 2 frames, got {n_frames}")
    rng = np.random.default_rng(rng)
    anatomy = sample_anatomy(rng)
    g3 = sample_geometry(rng, oblique=oblique, fov_mm=fov_mm)
    es = max(1, n_frames // 3)
    phases = [0.5 - 0.5 * np.cos(np.pi * t / es) if t <= es else
              0.5 + 0.5 * np.cos(np.pi * (t - es) / (n_frames - es)) for t in range(n_frames)]
    frames = [make_phantom_case(rng, phase=float(p), anatomy=anatomy, geometry=g3) for p in phases]
    d3 = g3.direction_matrix()
    d4 = np.eye(4)
    d4[:3, :3] = d3
    g4 = Geometry(g3.size + (n_frames,), g3.spacing + (40.0,), g3.origin + (0.0,), tuple(d4.ravel().tolist()))
    return (np.stack([f.image for f in frames]), np.stack([f.label for f in frames]), g4, 0, es)


def write_phantom_dataset(raw_root: str | Path, *, n_subjects: int = 10, seed: int = 0, dataset_id: int = 999,
                          short_name: str = "Phantom", fov_mm: float = 200.0, oblique: bool = False,
                          reorient: bool = False) -> Path:
    """Write an nnU-Net-format raw dataset of ED/ES phantom pairs plus ``cases.csv``; returns its folder.

    ``reorient`` stores each subject with a random axis permutation/flip (same physical image), as
    scanners and converters do.
    """
    from autocmr.io.orientation import store_permuted

    rng = np.random.default_rng(seed)
    folder = Path(raw_root) / make_dataset_name(dataset_id, short_name)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        subject = f"subject{s:03d}"
        cases = make_phantom_subject(rng, oblique=oblique, fov_mm=fov_mm)
        axes, flips = (tuple(rng.permutation(3)), tuple(rng.random(3) < 0.5)) if reorient else ((0, 1, 2), (False,) * 3)
        for phase, case in cases.items():
            case_id = f"{subject}_{phase}"
            img, geo = store_permuted(case.image, case.geometry, axes, flips)
            lab, _ = store_permuted(case.label, case.geometry, axes, flips)
            write_image(img, geo, folder / "imagesTr" / f"{case_id}_0000.nii.gz")
            write_image(lab, geo, folder / "labelsTr" / f"{case_id}.nii.gz")
            rows.append({"case_id": case_id, "subject": subject, "phase": phase,
                         "group": "phantom", "vendor": "synthetic"})
    DatasetJson({"0": "cineMRI"}, dict(AUTOCMR_LABELS), len(rows), ".nii.gz", short_name,
                "autocmr phantom short-axis cine (ED/ES)").save(folder / "dataset.json")
    write_cases_csv(folder, rows)
    return folder


__all__ = ["Anatomy", "PhantomCase", "make_phantom_case", "make_phantom_cine", "make_phantom_subject",
           "render_image", "render_labels", "sample_anatomy", "sample_geometry", "write_phantom_dataset"]
