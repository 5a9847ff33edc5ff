"""Error breakdown by slice position: where in the heart the predicted volumes go wrong.

From the per-slice volumes of :mod:`autocmr.evaluation.slice_position`:

1. **Base and apex** are decided per subject (the ED and ES frames of one patient share their stack): the
   sum of its cases' anatomy scores when that is clear (``|sum| >= ANATOMY_MARGIN``), else the header's
   geometry hint, else the first slice is taken as basal and the case says so (``base_end_source``
   ``assumed``). ``base_end="first"``/``"last"`` overrides all of it.
2. **Positions**: distance ``d`` of a slice from the basal end of the reference LV extent of ``n`` slices;
   ``d < 0`` above the base, ``d >= n`` below the apex, else basal / mid / apical by the slice centre
   ``(d + 0.5) / n`` in thirds.
3. **Per case x class x position** (``slice_positions.csv``): reference and predicted volume (mL), volume
   error (pred - ref), Dice over the position's slices (undefined when both are empty there), slices where
   the prediction adds the class (present in the prediction only) or misses it, and their volumes. The
   volume errors of a case's positions add up exactly to its total volume error.
4. **Summary** per phase x class x position (and per value of each other ``--by`` column): mean, SD and
   mean absolute volume error, mean Dice, slices added and missed; and the contribution of each position to
   the bias of LVEDV, LVESV, LVM, RVEDV and RVESV.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.errors import ConfigurationError
from autocmr.evaluation.agreement import describe
from autocmr.evaluation.clinical import ED, ES, MYOCARDIAL_DENSITY_G_PER_ML, ed_es_from_curve
from autocmr.evaluation.slice_position import FIRST, LAST, SliceProfile

logger = logging.getLogger(__name__)

SLICE_POSITION = "slice_position"  # the --by value that asks for this breakdown
POSITIONS = ("above_base", "basal", "mid", "apical", "below_apex")
BASE_END_OPTIONS = ("auto", FIRST, LAST)
# A subject's summed anatomy score below this is ambiguous (ACDC patients: 0.08 and more).
ANATOMY_MARGIN = 0.02
UNKNOWN = "unknown"
OTHER_FRAME = "other"  # a cine's annotated frame that is neither its ED nor its ES
# Clinical measure -> (phase, class, factor to its unit): each is a sum of slice volumes, so its bias splits
# exactly over positions.
MEASURE_PARTS = {"LVEDV": (ED, "LV", 1.0), "LVESV": (ES, "LV", 1.0), "LVM": (ED, "MYO", MYOCARDIAL_DENSITY_G_PER_ML),
                 "RVEDV": (ED, "RV", 1.0), "RVESV": (ES, "RV", 1.0)}
CASE_COLUMNS = ["case_id", "source_case", "frame", "subject", "phase", "class", "position", "n_slices",
                "vol_ref_ml", "vol_pred_ml", "vol_error_ml", "dice", "slices_added", "slices_missed",
                "vol_added_ml", "vol_missed_ml", "base_end", "base_end_source"]


def decide_base_ends(profiles: Sequence[SliceProfile], subjects: Mapping[str, str],
                     base_end: str = "auto") -> dict[str, tuple[str, str]]:
    """case id -> (basal end ``first``/``last``, how it was decided: option, anatomy, geometry, assumed).

    ``subjects`` maps a case id to the subject whose cases decide together (missing: the case alone).
    """
    if base_end not in BASE_END_OPTIONS:
        raise ConfigurationError(f"base_end must be one of {BASE_END_OPTIONS}, got {base_end!r}")
    groups: dict[str, list[SliceProfile]] = {}
    for p in profiles:
        groups.setdefault(subjects.get(p.case_id) or p.case_id, []).append(p)
    out: dict[str, tuple[str, str]] = {}
    for subject, members in groups.items():
        decision = (base_end, "option") if base_end != "auto" else _decide(members)
        if decision[1] == "assumed":
            logger.warning("subject %s: base and apex undetermined (no clear anatomy, no oblique header); the "
                           "first slice is taken as basal", subject)
        out.update({p.case_id: decision for p in members})
    return out


def _decide(members: Sequence[SliceProfile]) -> tuple[str, str]:
    score = sum(p.anatomy_score for p in members if p.anatomy_score is not None)
    if abs(score) >= ANATOMY_MARGIN:
        return (FIRST if score > 0 else LAST), "anatomy"
    hints = [p.geometry_hint for p in members if p.geometry_hint]
    if hints and len(set(hints)) == 1:
        return hints[0], "geometry"
    return FIRST, "assumed"


def position_of(slice_index: np.ndarray, extent: tuple[int, int], base_end: str) -> np.ndarray:
    """Position name of each slice index for a reference LV extent (first, last) and the basal end."""
    first, last = extent
    n = last - first + 1
    d = slice_index - first if base_end == FIRST else last - slice_index
    third = np.clip(np.floor((d + 0.5) / n * 3).astype(int), 0, 2)
    names = np.array(POSITIONS[1:4])[third].astype(object)
    names[d < 0] = POSITIONS[0]
    names[d >= n] = POSITIONS[-1]
    return names


def position_table(profiles: Iterable[SliceProfile], decisions: Mapping[str, tuple[str, str]],
                   info: pd.DataFrame) -> pd.DataFrame:
    """One row per case x class x position (see the module docstring); ``info`` indexed by source case."""
    frames = []
    for p in profiles:
        if not p.rows or p.extent is None:
            continue
        rows = pd.DataFrame(p.rows)
        end, source = decisions[p.case_id]
        rows["position"] = position_of(rows["slice"].to_numpy(), p.extent, end)
        rows["in_ref"], rows["in_pred"] = rows["vol_ref_ml"] > 0, rows["vol_pred_ml"] > 0
        rows["added"], rows["missed"] = rows["in_pred"] & ~rows["in_ref"], rows["in_ref"] & ~rows["in_pred"]
        rows["vol_added_ml"] = rows["vol_pred_ml"].where(rows["added"], 0.0)
        rows["vol_missed_ml"] = rows["vol_ref_ml"].where(rows["missed"], 0.0)
        grouped = rows.groupby(["class", "position"], sort=False).agg(
            n_slices=("slice", "size"), vol_ref_ml=("vol_ref_ml", "sum"), vol_pred_ml=("vol_pred_ml", "sum"),
            vol_inter_ml=("vol_inter_ml", "sum"), slices_added=("added", "sum"), slices_missed=("missed", "sum"),
            vol_added_ml=("vol_added_ml", "sum"), vol_missed_ml=("vol_missed_ml", "sum")).reset_index()
        grouped = grouped.assign(case_id=p.case_id, source_case=p.source_case, frame=p.frame, base_end=end,
                                 base_end_source=source)
        frames.append(grouped)
    if not frames:
        return pd.DataFrame(columns=CASE_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table["vol_error_ml"] = table["vol_pred_ml"] - table["vol_ref_ml"]
    total = table["vol_ref_ml"] + table["vol_pred_ml"]
    table["dice"] = (2 * table["vol_inter_ml"] / total.where(total > 0)).astype(float)
    table["frame"] = table["frame"].astype("Int64")
    meta = info.drop(columns=[c for c in info.columns if c in CASE_COLUMNS and c not in ("subject", "phase")],
                     errors="ignore")
    table = table.join(meta, on="source_case", rsuffix="_meta")
    _cine_frame_phases(table)
    for column in ("subject", "phase"):
        values = table[column] if column in table.columns else pd.Series(pd.NA, index=table.index)
        table[column] = values.astype(object).where(values.notna(), UNKNOWN).astype(str)
    table["position"] = pd.Categorical(table["position"], categories=POSITIONS, ordered=True)
    table = table.sort_values(["case_id", "class", "position"], kind="stable").reset_index(drop=True)
    extra = [c for c in table.columns if c not in CASE_COLUMNS and c != "vol_inter_ml"]
    return table[CASE_COLUMNS + extra]


def _cine_frame_phases(table: pd.DataFrame) -> None:
    """The phase of each frame of a 4D case, which no case table can give: its ED and ES are the frames of the
    largest and smallest reference LV volume among its annotated frames (the rule of the clinical table), the
    others ``other``. Without LV rows a cine's frames keep their case's phase."""
    cine = table["frame"].notna()
    lv = table[cine & (table["class"] == "LV")]
    if lv.empty:
        return
    if "phase" not in table.columns:
        table["phase"] = pd.NA
    table["phase"] = table["phase"].astype(object)
    curves = lv.groupby(["source_case", "frame"], sort=True)["vol_ref_ml"].sum()
    for source, curve in curves.groupby(level=0, sort=False):
        frames = curve.index.get_level_values(1).tolist()
        ed, es = ed_es_from_curve(curve.to_numpy(dtype=float))
        phase = {frame: (ED if k == ed else ES if k == es else OTHER_FRAME) for k, frame in enumerate(frames)}
        rows = cine & (table["source_case"] == source)
        table.loc[rows, "phase"] = [phase.get(f, UNKNOWN) for f in table.loc[rows, "frame"]]


def _describe_group(rows: pd.DataFrame) -> dict[str, Any]:
    err = rows["vol_error_ml"].to_numpy(float)
    stats = describe(err)
    return {"n_cases": int(rows["case_id"].nunique()), "vol_error_ml_mean": stats["mean"],
            "vol_error_ml_sd": stats["sd"], "vol_error_ml_mean_abs": float(np.abs(err).mean()) if err.size else None,
            "vol_ref_ml_mean": float(rows["vol_ref_ml"].mean()), "dice_mean": describe(rows["dice"])["mean"],
            "dice_n_defined": describe(rows["dice"])["n_defined"],
            "slices_added": int(rows["slices_added"].sum()), "slices_missed": int(rows["slices_missed"].sum()),
            "vol_added_ml_mean": float(rows["vol_added_ml"].mean()),
            "vol_missed_ml_mean": float(rows["vol_missed_ml"].mean())}


def position_summary(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Long table: one row per (by, value, phase, class, position) with :func:`_describe_group` statistics.

    ``by`` = ``all`` (every case) first, then each metadata column given.
    """
    rows = []
    for column in ["all", *[c for c in by if c != SLICE_POSITION]]:
        values = (pd.Series("all", index=table.index) if column == "all"
                  else table[column].astype(object).where(table[column].notna(), UNKNOWN).astype(str))
        keys = [values.rename("value"), table["phase"], table["class"], table["position"]]
        for (value, phase, name, position), group in table.groupby(keys, sort=True, observed=True):
            rows.append({"by": column, "value": value, "phase": phase, "class": name, "position": position,
                         **_describe_group(group)})
    return pd.DataFrame(rows)


def measure_contributions(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean contribution (pred - ref, over cases) of each position to each measure's bias, e.g. LVM in g.

    Summed over positions, they give the measure's bias over the cases that have a positional breakdown.
    """
    out: dict[str, dict[str, float | None]] = {}
    for measure, (phase, name, factor) in MEASURE_PARTS.items():
        rows = table[(table["phase"] == phase) & (table["class"] == name)]
        if rows.empty:
            continue
        n_cases = rows["case_id"].nunique()
        sums = rows.groupby("position", observed=False)["vol_error_ml"].sum()
        out[measure] = {str(pos): float(sums.get(pos, 0.0)) * factor / n_cases for pos in POSITIONS}
    return out


def summary_dict(table: pd.DataFrame, summary_rows: pd.DataFrame, profiles: Sequence[SliceProfile],
                 decisions: Mapping[str, tuple[str, str]], base_end: str) -> dict[str, Any]:
    """The ``slice_position`` entry of summary.json."""
    nested: dict[str, Any] = {}
    for r in (summary_rows[summary_rows["by"] == "all"].to_dict("records") if not summary_rows.empty else []):
        stats = {k: v for k, v in r.items() if k not in ("by", "value", "phase", "class", "position")}
        nested.setdefault(r["phase"], {}).setdefault(r["class"], {})[r["position"]] = stats
    sources: dict[str, int] = {}
    for _, source in decisions.values():
        sources[source] = sources.get(source, 0) + 1
    notes = {p.case_id: p.note for p in profiles if p.note}
    return {"positions": list(POSITIONS), "base_end_option": base_end, "base_end_decided_by": sources,
            "n_cases_with_breakdown": int(table["case_id"].nunique()) if not table.empty else 0,
            "cases_without_breakdown": notes, "all": nested,
            "measure_bias_by_position": measure_contributions(table) if not table.empty else {}}


def format_position_summary(entry: Mapping[str, Any]) -> str:
    """Terminal text: each measure's bias split over the positions, and the cases left out."""
    lines = [f"\nBias by slice position (pred - ref, mean over cases; {entry['n_cases_with_breakdown']} cases; "
             f"base/apex decided by {entry['base_end_decided_by']}):"]
    contributions = entry.get("measure_bias_by_position", {})
    if contributions:
        lines.append(f"{'measure':<8}" + "".join(f"{p:>12}" for p in POSITIONS) + f"{'total':>10}")
        for measure, parts in contributions.items():
            values = [parts.get(p) for p in POSITIONS]
            total = sum(v for v in values if v is not None)
            lines.append(f"{measure:<8}" + "".join(f"{'n/a' if v is None else format(v, '+.1f'):>12}" for v in values)
                         + f"{total:>+10.1f}")
    else:
        lines.append("  (no subject with a positional breakdown at both ED and ES (phases from the case table or "
                     "names; cases left out are listed below): see slice_position_summary.csv for the per-class "
                     "table)")
    notes = entry.get("cases_without_breakdown", {})
    if notes:
        lines.append(f"No positional breakdown for {len(notes)} case(s):")
        lines += [f"  {case}: {note}" for case, note in list(notes.items())[:10]]
    return "\n".join(lines)


__all__ = ["BASE_END_OPTIONS", "POSITIONS", "SLICE_POSITION", "decide_base_ends", "format_position_summary",
           "measure_contributions", "position_of", "position_summary", "position_table", "summary_dict"]
