"""The subject figure: every structure's contour is visible in the PNG (none hidden under another's)."""
from __future__ import annotations

import numpy as np

from autocmr.analysis.figures import CONTOUR_COLOURS, subject_figure
from autocmr.dataset.labels import LV, MYO, RV


def _pixels_of(png: np.ndarray, colour: str, tolerance: float = 0.12) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(png[..., :3] - rgb).max(axis=-1) < tolerance).sum())


def test_the_endocardium_epicardium_and_rv_contours_all_show(tmp_path):
    from matplotlib.image import imread

    z, y, x = np.ogrid[:6, :96, :96]
    r = np.hypot(y - 48, x - 48)
    label = np.zeros((6, 96, 96), np.uint8)
    label[(r >= 12) & (r < 18) & (z >= 0)] = MYO  # a ring of myocardium around the cavity on every slice
    label[(r < 12) & (z >= 0)] = LV
    label[(np.hypot(y - 48, x - 22) < 9) & (z >= 0)] = RV
    image = np.random.default_rng(0).normal(100, 10, label.shape).astype(np.float32)
    curve = {"LV": [100.0, 40.0], "RV": [20.0, 8.0], "MYO": [120.0, 120.0]}
    path = subject_figure(tmp_path / "s.png", "s", [("ED", image, label), ("ES", None, label)], (8.0, 1.5, 1.5),
                          curve, [0, 1], {"ED": 0, "ES": 1})
    png = imread(path)
    h, w = png.shape[:2]
    panels = png[int(0.14 * h):int(0.91 * h), :int(0.64 * w)]  # the six slices: no curve, no legend
    counts = {value: _pixels_of(panels, colour) for value, (_, colour) in CONTOUR_COLOURS.items()}
    # each outline drawn on six panels: hundreds of pixels (the cavity's was 0 when the myocardium's inner
    # edge was drawn over it)
    assert all(n > 300 for n in counts.values()), counts


def test_ed_and_es_from_separate_stacks_are_each_drawn_at_their_own_voxel_size(tmp_path, monkeypatch):
    """ED at 1.25 mm and ES at 1.0 mm pixels (separate files): each row uses its own spacing for its crop and
    its mm extent (the ES heart was drawn 25 % too large with ED's)."""
    from autocmr.analysis import figures

    drawn = []
    real = figures._draw_slice
    monkeypatch.setattr(figures, "_draw_slice", lambda ax, image, label, spacing, crop:
                        (drawn.append(tuple(spacing)), real(ax, image, label, spacing, crop)))
    ed, es = np.zeros((4, 60, 60), np.uint8), np.zeros((4, 75, 75), np.uint8)
    ed[:, 20:40, 20:40], es[:, 25:50, 25:50] = LV, LV  # one 25 mm cavity in both
    curve = {"LV": [25.0, 25.0], "RV": [0.0, 0.0], "MYO": [0.0, 0.0]}
    subject_figure(tmp_path / "s.png", "s", [("ED", None, ed), ("ES", None, es)], (8.0, 1.25, 1.25), curve, [0, 1],
                   {"ED": 0, "ES": 1}, spacings=[(8.0, 1.25, 1.25), (8.0, 1.0, 1.0)])
    assert drawn == [(8.0, 1.25, 1.25)] * 3 + [(8.0, 1.0, 1.0)] * 3
