"""The volume a class takes from and gives to each other label adds up to its volume error."""
from __future__ import annotations

import numpy as np
import pandas as pd

from autocmr.evaluation.evaluate import evaluate_cases
from autocmr.evaluation.exchanges import exchange_table, exchange_volumes

LABELS = {"LV": 1, "MYO": 2, "RV": 3}


def _ring_phantom() -> np.ndarray:
    """3 slices of 40x40: LV disc (r 8) in a myocardial ring (to r 12), RV disc beside it."""
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 16)
    sl = np.zeros((40, 40), np.uint8)
    sl[r < 12] = 2
    sl[r < 8] = 1
    sl[(np.hypot(yy - 20, xx - 32) < 6) & (sl == 0)] = 3
    return np.stack([sl] * 3)


def test_myocardium_drawn_into_the_cavity_is_a_gain_from_lv():
    ref = _ring_phantom()
    pred = ref.copy()
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 16)
    pred[:, (r >= 7) & (r < 8)] = 2  # endocardial border one voxel inside the reference's
    pred[1][(ref[1] == 2) & (xx > 26)] = 3  # some MYO called RV on the middle slice
    ex = exchange_volumes(ref, pred, LABELS, voxel_ml=0.5)
    moved = float(((r >= 7) & (r < 8)).sum()) * 3 * 0.5
    assert np.isclose(ex["MYO"]["gain_from_LV_ml"], moved) and np.isclose(ex["LV"]["loss_to_MYO_ml"], moved)
    assert ex["MYO"]["gain_from_background_ml"] == 0 and ex["MYO"]["loss_to_RV_ml"] > 0
    for name, value in LABELS.items():  # gains minus losses = volume error, class by class
        net = sum(v for k, v in ex[name].items() if k.startswith("gain")) - \
            sum(v for k, v in ex[name].items() if k.startswith("loss"))
        assert np.isclose(net, ((pred == value).sum() - (ref == value).sum()) * 0.5)


def test_unknown_label_values_count_as_background():
    ref = np.array([[[0, 1, 2, 7]]])
    pred = np.array([[[1, 1, 7, 2]]])
    ex = exchange_volumes(ref, pred, {"LV": 1, "MYO": 2}, voxel_ml=1.0)
    assert ex["LV"]["gain_from_background_ml"] == 1 and ex["MYO"]["loss_to_background_ml"] == 1
    assert ex["MYO"]["gain_from_background_ml"] == 1  # reference 7 -> background


def test_evaluation_writes_the_exchange_table_by_phase(tmp_path):
    ref = _ring_phantom()
    pred = ref.copy()
    pred[ref == 1] = np.where(np.arange((ref == 1).sum()) % 10 == 0, 2, 1)  # every 10th cavity voxel -> MYO
    cases = [(f"p1_{ph}", ref, pred if ph == "ED" else ref, (8.0, 1.5, 1.5)) for ph in ("ED", "ES")]
    meta = pd.DataFrame({"case_id": ["p1_ED", "p1_ES"], "subject": ["p1", "p1"], "phase": ["ED", "ES"]})
    result = evaluate_cases(cases, labels=LABELS, metadata=meta, output_dir=tmp_path, make_plots=False)
    table = pd.read_csv(tmp_path / "exchanges.csv")
    myo_lv = table[(table["class"] == "MYO") & (table["other"] == "LV")].set_index("phase")["net_ml"]
    expected = np.ceil((ref == 1).sum() / 10) * 8 * 1.5 * 1.5 / 1000
    assert np.isclose(myo_lv["ED"], expected) and myo_lv["ES"] == 0
    assert np.allclose(exchange_table(result.cases)["net_ml"], table["net_ml"])  # the file is the in-memory table
    assert "Volume error by neighbouring label" in result.report()
