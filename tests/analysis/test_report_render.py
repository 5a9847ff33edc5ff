"""report.html opens from the output folder in a real browser (headless Chromium) with its figures shown.

Skips when no Chromium is installed (Debian: ``apt-get install chromium``)."""
import shutil
import subprocess

import numpy as np
import pytest

from autocmr.analysis.pipeline import analyse_cases
from autocmr.analysis.subjects import CaseRecord
from autocmr.inference.inputs import CaseFailure
from autocmr.io.image import write_image
from autocmr.testing.phantoms import make_phantom_subject

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,900",
                  "--virtual-time-budget=10000")  # wait for the lazily loaded thumbnails, also on a busy machine


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium browser installed (Debian: apt-get install chromium)")


def _screenshot(browser: str, page, shot, profile) -> np.ndarray:
    from matplotlib.image import imread

    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                             page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), result.stderr[-2000:]
    return (imread(shot)[..., :3] * 255).astype(np.int16)


def _drawn_bands(shot: np.ndarray, blank: np.ndarray, min_pixels: int = 4000) -> list[int]:
    """Pixel counts of the horizontal bands where two screenshots of the same layout differ: one band per
    thumbnail drawn in ``shot`` and blank in ``blank`` (bands with fewer than ``min_pixels`` are dropped)."""
    differs = np.abs(shot - blank).max(axis=-1) > 40
    per_row = differs.sum(axis=1)
    bands, current = [], 0
    for count in per_row:
        if count:
            current += int(count)
        elif current:
            bands.append(current)
            current = 0
    bands.append(current)
    return [b for b in bands if b >= min_pixels]


def test_report_renders_in_headless_chromium_with_its_figures(tmp_path):
    browser = _chromium()
    cases = []
    for seed, subject in ((1, "alpha"), (2, "beta")):
        for phase, case in make_phantom_subject(seed, fov_mm=160.0).items():
            label = case.label if subject == "alpha" else np.where(case.label == 3, 0, case.label)  # beta: no RV
            write_image(case.image, case.geometry, tmp_path / f"{subject}_{phase}_img.nii.gz")
            write_image(label, case.geometry, tmp_path / f"{subject}_{phase}.nii.gz")
            cases.append(CaseRecord(f"{subject}_{phase}", tmp_path / f"{subject}_{phase}.nii.gz",
                                    tmp_path / f"{subject}_{phase}_img.nii.gz", ()))
    analyse_cases(cases, tmp_path, failures=[CaseFailure("gamma", "gamma.nii.gz", "not an image")])
    page = tmp_path / "report.html"
    rgb = _screenshot(browser, page, tmp_path / "shot.png", tmp_path / "profile")
    assert rgb.shape[0] >= 800 and rgb.shape[1] >= 1300
    failed_row = np.all(np.abs(rgb - np.array([253, 232, 232])) <= 3, axis=-1).sum()
    flagged_row = np.all(np.abs(rgb - np.array([255, 244, 229])) <= 3, axis=-1).sum()
    assert failed_row > 5000 and flagged_row > 5000  # both highlighted rows are drawn
    from matplotlib.image import imread, imsave

    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert len(figures) == 2  # one per analysed subject, none for the failed one
    originals = [imread(f) for f in figures]
    for figure, image in zip(figures, originals):  # same page and layout, blank figures
        imsave(figure, np.ones_like(image))
    blank = _screenshot(browser, page, tmp_path / "shot2.png", tmp_path / "profile2")
    bands = _drawn_bands(rgb, blank)
    if len(bands) < 2:  # a browser on a loaded machine may shoot before decoding an image: one more try
        for figure, image in zip(figures, originals):
            imsave(figure, image)
        bands = _drawn_bands(_screenshot(browser, page, tmp_path / "shot3.png", tmp_path / "profile3"), blank)
    assert len(bands) == 2, bands  # both subjects' thumbnails were drawn, each in its own row
