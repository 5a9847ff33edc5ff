"""Where a class's volume error comes from: the volume it takes from, and gives to, each other label.

A predicted class can be too large for different reasons that call for different fixes: myocardium drawn
into the cavity (the endocardial border, trabeculations and papillary muscles), over the epicardial fat
(background), or into the RV. For every foreground class ``c`` and every other label ``o`` (background
included), per case:

- ``gain_from_<o>_ml``: voxels predicted ``c`` where the reference says ``o``;
- ``loss_to_<o>_ml``: reference ``c`` voxels predicted as ``o``.

``gain - loss`` summed over ``o`` is exactly the case's volume error of ``c`` (tested), so the table splits a
bias (e.g. LV mass) over the borders it sits on. ``exchanges.csv`` and ``summary.json`` (``exchanges``)
give the means per class, other label and phase.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

BACKGROUND = "background"


def exchange_volumes(reference: np.ndarray, prediction: np.ndarray, labels: Mapping[str, int],
                     voxel_ml: float) -> dict[str, dict[str, float]]:
    """class name -> {``gain_from_<o>_ml``, ``loss_to_<o>_ml``} for every other label ``o`` (see module doc).

    ``labels``: foreground class name -> value; label values outside it and 0 count as background.
    """
    names = {0: BACKGROUND, **{int(v): k for k, v in labels.items() if int(v) != 0}}
    values = sorted(names)
    index = np.zeros(max(values) + 1, dtype=np.int64)  # label value -> row of the confusion matrix
    for i, v in enumerate(values):
        index[v] = i
    ref = np.where(np.isin(reference, values), reference, 0).astype(np.int64, copy=False)
    pred = np.where(np.isin(prediction, values), prediction, 0).astype(np.int64, copy=False)
    k = len(values)
    confusion = np.bincount((index[ref] * k + index[pred]).ravel(), minlength=k * k).reshape(k, k) * voxel_ml
    out: dict[str, dict[str, float]] = {}
    for i, v in enumerate(values):
        if v == 0:
            continue
        row: dict[str, float] = {}
        for j, o in enumerate(values):
            if j != i:
                row[f"gain_from_{names[o]}_ml"] = float(confusion[j, i])
                row[f"loss_to_{names[o]}_ml"] = float(confusion[i, j])
        out[names[v]] = row
    return out


def exchange_table(cases: pd.DataFrame, group: str | None = "phase") -> pd.DataFrame:
    """Mean gain, loss and net (gain - loss) per class x other label (x ``group`` when the cases have it)."""
    gains = [c for c in cases.columns if c.startswith("gain_from_") and c.endswith("_ml")]
    if not gains or cases.empty:
        return pd.DataFrame()
    keys = ["class"] + ([group] if group and group in cases.columns and cases[group].notna().any() else [])
    rows: list[dict[str, Any]] = []
    for key, part in cases.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for column in gains:
            other = column[len("gain_from_"):-len("_ml")]
            loss = f"loss_to_{other}_ml"
            both = part[[column, loss]].dropna()  # rows of other classes have no such columns (NaN)
            if both.empty:
                continue
            rows.append({**dict(zip(keys, key)), "other": other, "n": int(len(both)),
                         "gain_ml": float(both[column].mean()), "loss_ml": float(both[loss].mean()),
                         "net_ml": float((both[column] - both[loss]).mean())})
    return pd.DataFrame(rows)


def format_exchanges(table: pd.DataFrame) -> str:
    """Terminal text: per class (and phase) the net volume exchanged with each other label, mean mL per case."""
    if table.empty:
        return ""
    lines = ["Volume error by neighbouring label (mean mL per case; net = predicted from it - lost to it):"]
    keys = [c for c in ("class", "phase") if c in table.columns]
    for key, part in table.groupby(keys, sort=False, dropna=False):  # a case of unknown phase is shown too
        key = tuple("unknown" if k is None or k != k else k for k in (key if isinstance(key, tuple) else (key,)))
        nets = ", ".join(f"{r.other} {r.net_ml:+.2f} (+{r.gain_ml:.2f}/-{r.loss_ml:.2f})" for r in part.itertuples())
        lines.append(f"  {' '.join(str(k) for k in key):<10} total {part['net_ml'].sum():+.2f}: {nets}")
    return "\n".join(lines)
