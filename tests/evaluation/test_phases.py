"""ED/ES from volume curves: the LV decides, the RV checks, nothing assumes ED is frame 0."""
import numpy as np
import pytest

from autocmr.evaluation.phases import cyclic_distance, find_ed_es


def _cycle(n: int, ed: int, es: int, edv: float = 150.0, esv: float = 60.0) -> np.ndarray:
    """A smooth volume curve with its maximum at ``ed`` and minimum at ``es`` (cyclic)."""
    t = np.arange(n)
    phase = np.where((t - ed) % n <= (es - ed) % n, ((t - ed) % n) / ((es - ed) % n), 0.0)
    back = np.where((t - ed) % n > (es - ed) % n, 1 - ((t - es) % n) / ((ed - es) % n), 0.0)
    shape = np.where((t - ed) % n <= (es - ed) % n, phase, back)
    return esv + (edv - esv) * (0.5 + 0.5 * np.cos(np.pi * shape))


def test_ed_es_follow_the_lv_curve_wherever_the_cycle_starts():
    for n, ed, es in ((20, 0, 7), (25, 6, 15), (12, 9, 2)):
        lv = _cycle(n, ed, es)
        found = find_ed_es(lv, _cycle(n, ed, es, 140, 70))
        assert (found.ed, found.es) == (ed, es)
        assert found.notes == ()
        ed_, es_, notes = find_ed_es(lv)  # unpacks as a tuple, RV optional
        assert (ed_, es_, notes) == (ed, es, ())


def test_rv_disagreement_and_flat_curves_are_noted_but_the_lv_decides():
    lv = _cycle(20, 0, 8)
    rv = _cycle(20, 10, 18)  # extremes 10 frames away from the LV's
    ed, es, notes = find_ed_es(lv, rv)
    assert (ed, es) == (0, 8)
    assert len(notes) == 2 and all("check the phases" in n for n in notes)
    _, _, flat = find_ed_es(np.full(10, 100.0) + np.arange(10) * 0.1)
    assert any("not well defined" in n for n in flat)


def test_missing_lv_falls_back_to_rv_and_bad_curves_raise():
    rv = _cycle(16, 3, 10)
    ed, es, notes = find_ed_es(np.zeros(16), rv)
    assert (ed, es) == (3, 10) and "RV" in notes[0]
    with pytest.raises(ValueError, match="neither"):
        find_ed_es(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        find_ed_es([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        find_ed_es([3.0])
    with pytest.raises(ValueError, match="differ in length"):
        find_ed_es([1.0, 2.0, 3.0], [1.0, 2.0])


def test_cyclic_distance_wraps_around():
    assert cyclic_distance(0, 19, 20) == 1
    assert cyclic_distance(3, 13, 20) == 10


def test_frames_without_image_content_are_not_ed_or_es():
    """A zero-padded frame's empty mask is the smallest volume: left out, it is not taken for ES."""
    from autocmr.evaluation.phases import find_ed_es

    lv, rv = [120.0, 100.0, 60.0, 80.0, 0.0], [150.0, 120.0, 70.0, 100.0, 0.0]
    assert find_ed_es(lv, rv)[:2] == (0, 4)
    ed, es, notes = find_ed_es(lv, rv, excluded=[4])
    assert (ed, es) == (0, 2) and "frame(s) [4] have no image content" in notes[0]
    assert not any("apart" in n for n in notes)  # the RV's extremes are looked for among the same frames
    with pytest.raises(ValueError, match="only 1 of 5 frames"):
        find_ed_es(lv, rv, excluded=[1, 2, 3, 4])
