"""``report.html``: one page for a batch, opened straight from the output folder (no server, no scripts,
no network): a table of every subject with its measures and QC flags, subjects to review first, each with a
thumbnail linking to its full PNG (relative links), and what every flag means."""
from __future__ import annotations

import html
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from autocmr.analysis.provenance import ModelProvenance
from autocmr.analysis.qc import QcThresholds, describe_flags
from autocmr.analysis.tables import MEASURE_COLUMNS, OK, SubjectReport, sort_for_review
from autocmr.evaluation.clinical import MEASURE_UNITS
from autocmr.io.atomic import write_text_atomic

SHOWN_MEASURES = ("LVEDV", "LVESV", "LVEF", "LVM", "RVEDV", "RVESV", "RVEF")
THUMBNAIL_WIDTH_PX = 300
# Thumbnails of the first rows load at once: they are on the first screen anyway, and a lazily loaded image
# can be missing from a print or a headless screenshot taken before the browser decided it was visible.
# Further down a batch of hundreds, lazy loading keeps the page quick to open.
EAGER_THUMBNAILS = 10

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
p.summary { margin-top: 0; color: #444; }
table { border-collapse: collapse; font-size: 0.86em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 7px; text-align: right; vertical-align: middle; }
th { background: #f1f3f5; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.review td { background: #fff4e5; }
tr.failed td { background: #fde8e8; }
span.flag { display: inline-block; background: #e8590c; color: #fff; border-radius: 3px; padding: 1px 5px;
            margin: 1px; font-size: 0.85em; }
span.ok { color: #2b8a3e; font-weight: 600; }
td.notes { max-width: 22em; font-size: 0.9em; color: #555; text-align: left; }
img.thumb { display: block; border: 1px solid #ccc; }
dl.flags dt { font-weight: 600; margin-top: 0.4em; }
dl.flags dd { margin-left: 1.5em; color: #444; }
p.model, ul.limits { color: #333; max-width: 75em; }
table.agreement { margin-top: 0.4em; }
"""


def write_report(reports: Sequence[SubjectReport], path: str | Path, *, title: str = "autocmr analysis",
                 thresholds: QcThresholds | None = None, model: ModelProvenance | None = None) -> Path:
    """Write the batch's HTML report (atomically); figure paths in ``reports`` are relative to its folder.
    The flags are explained with the QC ``thresholds`` the analysis used; ``model`` (which model made the
    masks, with its card's cross-validated accuracy and known limits) gets a section of its own."""
    meanings = describe_flags(thresholds)
    ordered = sort_for_review(reports)
    flagged = sum(r.review for r in ordered)
    failed = sum(r.status != OK for r in ordered)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ("<th class='text'>figure</th><th class='text'>subject</th><th class='text'>QC</th>"
            "<th>ED</th><th>ES</th>"
            + "".join(f"<th>{html.escape(MEASURE_COLUMNS[m].replace('_', ' '))}</th>" for m in SHOWN_MEASURES)
            + "<th>HR bpm</th><th>uncertainty</th><th class='text'>notes</th>")
    rows = "\n".join(_row(r, meanings, eager=i < EAGER_THUMBNAILS) for i, r in enumerate(ordered))
    legend = "\n".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" for name, text in meanings.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="summary">{len(ordered)} subject(s): <b>{flagged} to review</b> ({failed} failed), {len(ordered) - flagged}
without flags. Subjects to review come first. Created {created}. Click a figure for the full size.</p>
{_flag_counts(ordered, meanings)}
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
{_model_section(model)}
<h2>What the QC flags mean</h2>
<dl class="flags">
{legend}
</dl>
</body></html>
"""
    path = Path(path)
    write_text_atomic(path, page)
    return path


def _flag_counts(reports: Sequence[SubjectReport], meanings: dict[str, str]) -> str:
    """How many subjects raise each flag, most frequent first: what to look at first in a large batch."""
    counts = Counter(flag for r in reports if r.status == OK for flag in r.qc.flags)
    if not counts:
        return ""
    items = ", ".join(f"<span class='flag' title='{html.escape(meanings.get(flag, flag), quote=True)}'>"
                      f"{html.escape(flag)}</span> {n}" for flag, n in counts.most_common())
    return f"<p class='summary'>Flags raised (subjects): {items}.</p>"


def _model_section(model: ModelProvenance | None) -> str:
    """Which model made the masks, how accurate its measures were in its cross-validation, its limits."""
    if model is None:
        return ""
    settings = "; ".join(f"{html.escape(what)}: {html.escape(value)}" for what, value in model.settings)
    parts = ["<h2>Model and the accuracy to expect</h2>",
             f"<p class='model'><b>{html.escape(model.name)}</b> ({html.escape(model.folder)}). {settings}.</p>"]
    shown = [m for m in SHOWN_MEASURES if m in model.agreement]
    if shown:
        rows = "".join(f"<tr><td class='text'>{html.escape(m)} ({html.escape(MEASURE_UNITS[m])})</td>"
                       f"<td>{a.bias:+.1f}</td><td>{_limits(a.loa_lower, a.loa_upper)}</td>"
                       f"<td>{a.mean_abs_diff:.1f}</td></tr>" for m in shown for a in (model.agreement[m],))
        parts += ["<p class='model'>Against manual references in the model's cross-validation"
                  f"{' (' + html.escape(model.agreement_source) + ')' if model.agreement_source else ''}: "
                  "prediction minus reference; for 95 % of those subjects the difference lay within the limits "
                  "of agreement.</p>",
                  "<table class='agreement'><thead><tr><th class='text'>measure</th><th>bias</th>"
                  "<th>95 % limits of agreement</th><th>mean absolute difference</th></tr></thead>"
                  f"<tbody>{rows}</tbody></table>"]
    else:
        parts.append("<p class='model'>This model carries no cross-validated accuracy (no model card with "
                     "clinical figures): check its measures on a few subjects of your own first.</p>")
    if model.limits:
        parts.append("<p class='model'>Known limits:</p><ul class='limits'>"
                     + "".join(f"<li>{html.escape(item)}</li>" for item in model.limits) + "</ul>")
    return "\n".join(parts)


def _limits(lower: float | None, upper: float | None) -> str:
    return "&ndash;" if lower is None or upper is None else f"{lower:+.1f} to {upper:+.1f}"


def _row(r: SubjectReport, meanings: dict[str, str], eager: bool) -> str:
    css = "failed" if r.status != OK else "review" if r.review else ""
    if r.figure:
        src = html.escape(r.figure, quote=True)
        figure = (f"<a href='{src}'><img class='thumb' src='{src}' width='{THUMBNAIL_WIDTH_PX}' "
                  f"loading='{'eager' if eager else 'lazy'}' "
                  f"alt='{html.escape(r.subject, quote=True)}'></a>")
    else:
        figure = "no figure"
    if r.status != OK:
        qc = "<span class='flag'>failed</span>"
    elif r.qc.flags:
        qc = "".join(f"<span class='flag' title='{html.escape(meanings[f], quote=True)}'>{html.escape(f)}</span>"
                     for f in r.qc.flags)
    else:
        qc = "<span class='ok'>ok</span>"
    values = r.measures.measures if r.measures is not None else {}
    cells = "".join(f"<td>{_number(values.get(m, math.nan))}</td>" for m in SHOWN_MEASURES)
    (ed_case, ed_frame), (es_case, es_frame) = r.frame_of("ED"), r.frame_of("ES")
    hr = _number(r.heart_rate_bpm if r.heart_rate_bpm is not None else math.nan, 0)
    return (f"<tr class='{css}'><td class='text'>{figure}</td><td class='text'>{html.escape(r.subject)}</td>"
            f"<td class='text'>{qc}</td><td>{_phase(ed_case, ed_frame)}</td><td>{_phase(es_case, es_frame)}</td>"
            f"{cells}<td>{hr}</td><td>{_number(r.uncertainty, 3)}</td>"
            f"<td class='notes'>{html.escape(' | '.join(r.notes))}</td></tr>")


def _phase(case: str, frame: object) -> str:
    if frame is not None:
        return f"frame {frame}"
    return html.escape(case) if case else "&ndash;"


def _number(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "&ndash;"


__all__ = ["write_report"]
