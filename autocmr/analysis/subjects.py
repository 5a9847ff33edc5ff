"""Group predicted cases into subjects: a cine is one subject; separate ED and ES 3D files are paired.

How a 3D case finds its subject and phase, first rule that applies:

1. ``cases.csv`` metadata (``case_id`` = the case name, ``subject``, ``phase`` in ED/ES), as in autocmr raw
   datasets; looked for beside the input folder (its parent, as ``imagesTr/`` sits beside ``cases.csv``)
   or given explicitly;
2. the name: ``SUBJECT_ED`` / ``SUBJECT_ES`` (also ``-ed``, ``-es``, any case);
3. ACDC naming ``SUBJECT_frameNN`` with an ACDC ``Info.cfg`` beside the image (or in a ``SUBJECT/`` folder
   beside it) giving the ED and ES frame numbers;
4. otherwise the case is a subject of its own whose phase is unknown (volumes only, and a note).

A 4D cine (NIfTI or a multi-phase DICOM series) is always one subject; its ``cases.csv`` row may rename it.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from autocmr.dataset.converters.acdc import INFO_FILE, read_info_cfg
from autocmr.dataset.raw import read_case_table
from autocmr.errors import InputFileError
from autocmr.analysis.measures import FAST_PASS, FULL_ACCURACY, SCREENED
from autocmr.evaluation.clinical import ED, ES, FRAME_IN_ID, subject_and_phase, warn_unknown_phases

logger = logging.getLogger(__name__)

CASES_CSV = "cases.csv"


@dataclass(frozen=True)
class CaseRecord:
    """One predicted case as the analysis sees it.

    Args:
        name: the case name (mask ``NAME.nii.gz``).
        mask: the predicted mask file.
        image: the image to draw the contours on (first channel, or the NIfTI copy of a DICOM series).
        sources: the input file(s) (for DICOM the series' files).
        n_frames: frames in the mask (1 for 3D).
        uncertainty: per frame, the ensemble disagreement score (NaN when not computed).
        predicted: per frame, how it was predicted (:func:`frame_predictions`); empty: every frame at full
            accuracy (3D cases, ``--cine full``, or nothing recorded).
    """

    name: str
    mask: Path
    image: Path | None
    sources: tuple[Path, ...]
    n_frames: int = 1
    uncertainty: tuple[float, ...] = ()
    kind: str = "3d"
    predicted: tuple[str, ...] = ()
    blank_frames: tuple[int, ...] = ()  # a cine's frames without image content: never ED or ES

    @property
    def is_cine(self) -> bool:
        return self.n_frames > 1


def frame_predictions(cine: Mapping[str, Any] | None, n_frames: int) -> tuple[str, ...]:
    """How each frame of a cine was predicted, from its ``predictions.json`` record (``cases.NAME.cine``):
    full accuracy, fast pass, or fast pass with screened slices at full accuracy. Empty when the record does
    not say (every frame then counts as full accuracy)."""
    if not isinstance(cine, Mapping) or cine.get("mode") != "fast":
        return ()
    full = {int(t) for t in cine.get("full_accuracy_frames") or []}
    screened = {int(t) for t, slices in (cine.get("screened_slices") or {}).items() if slices}
    return tuple(FULL_ACCURACY if t in full else SCREENED if t in screened else FAST_PASS for t in range(n_frames))


@dataclass
class Subject:
    """The cases of one subject: a cine, or 3D cases by phase (``ED``/``ES``), plus how they were grouped."""

    name: str
    grouped_by: str
    cine: CaseRecord | None = None
    phases: dict[str, list[CaseRecord]] = field(default_factory=dict)
    frame_numbers: dict[str, int] = field(default_factory=dict)  # phase -> frame number, when a name gives it
    unphased: list[CaseRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def cases(self) -> list[CaseRecord]:
        found = [self.cine] if self.cine is not None else []
        return found + [c for p in (ED, ES) for c in self.phases.get(p, [])] + self.unphased

    @property
    def ambiguous_phases(self) -> list[str]:
        """Phases that several cases claim (two ED files of one subject): which one to measure is a person's call."""
        return [p for p in (ED, ES) if len(self.phases.get(p, [])) > 1]


def find_metadata(input_path: str | Path) -> Path | None:
    """``cases.csv`` in the input folder or beside it (its parent), if there is one."""
    folder = Path(input_path).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    for candidate in (folder / CASES_CSV, folder.parent / CASES_CSV):
        if candidate.is_file():
            return candidate
    return None


def read_metadata(path: str | Path) -> pd.DataFrame:
    """A ``cases.csv`` indexed by ``case_id`` (``subject`` and ``phase`` columns are used when present).

    Raises:
        InputFileError: the file cannot be read as CSV or has no ``case_id`` column.
    """
    try:
        table = read_case_table(path, dtype=str)  # spreadsheet exports: stray spaces, Subject
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read the case table ({exc})") from exc
    if "case_id" not in table.columns:
        raise InputFileError(path, f"needs a 'case_id' column, found {list(table.columns)}")
    table = table.drop_duplicates("case_id").set_index("case_id")
    warn_unknown_phases(table, path)
    return table


def group_subjects(cases: Sequence[CaseRecord], metadata: pd.DataFrame | None = None) -> list[Subject]:
    """Subjects of ``cases`` (see the module doc for the rules), sorted by name.

    Names stay unique: a second cine of one subject is ``SUBJECT@CASE``; ED/ES files of a subject that also
    has a cine are paired as ``SUBJECT@3d``; a file of unknown phase is a subject of its own, ``SUBJECT@CASE``
    when another file or subject has its name.
    """
    subjects: dict[str, Subject] = {}
    ordered = sorted(cases, key=lambda c: c.name)
    for case in (c for c in ordered if c.is_cine):
        name = _metadata_subject(case.name, metadata) or case.name
        key = name if name not in subjects else f"{name}@{case.name}"
        subjects[key] = Subject(key, "cine", cine=case)
    unphased: list[tuple[str, CaseRecord, str]] = []
    for case in (c for c in ordered if not c.is_cine):
        subject, phase, frame, how = _subject_of_3d(case, metadata)
        if phase not in (ED, ES):
            unphased.append((subject, case, how))
            continue
        key = f"{subject}@3d" if subject in subjects and subjects[subject].cine is not None else subject
        entry = subjects.setdefault(key, Subject(key, how))
        entry.phases.setdefault(phase, []).append(case)
        if frame is not None:
            entry.frame_numbers[phase] = frame
    named = Counter(subject for subject, _, _ in unphased)
    for subject, case, how in unphased:  # volumes only, each on its own: nothing says how they would pair
        key = subject if named[subject] == 1 and subject not in subjects else f"{subject}@{case.name}"
        subjects[key] = Subject(key, how, unphased=[case])
    for subject in subjects.values():
        _check_phases(subject)
    return [subjects[k] for k in sorted(subjects)]


def _metadata_subject(name: str, metadata: pd.DataFrame | None) -> str | None:
    if metadata is None or name not in metadata.index or "subject" not in metadata.columns:
        return None
    value = metadata.at[name, "subject"]
    return None if pd.isna(value) or not str(value).strip() else str(value).strip()


def _subject_of_3d(case: CaseRecord, metadata: pd.DataFrame | None) -> tuple[str, str | None, int | None, str]:
    subject, phase = subject_and_phase(case.name, metadata)
    if subject is not None and phase in (ED, ES):
        in_table = metadata is not None and case.name in metadata.index
        return subject, phase, None, CASES_CSV if in_table else "name (_ED/_ES)"
    match = FRAME_IN_ID.match(case.name)
    if match:
        frame = int(match.group("frame"))
        info_phase = _phase_from_info_cfg(case, match.group("subject"), frame)
        if info_phase is not None:
            return match.group("subject"), info_phase, frame, f"{INFO_FILE} (_frameNN)"
    return _metadata_subject(case.name, metadata) or case.name, None, None, "single case"


def _phase_from_info_cfg(case: CaseRecord, subject: str, frame: int) -> str | None:
    if not case.sources:
        return None
    folder = case.sources[0].parent
    for candidate in (folder / INFO_FILE, folder / subject / INFO_FILE):
        if candidate.is_file():
            try:
                info = read_info_cfg(candidate)
                ed, es = int(info["ED"]), int(info["ES"])
            except (KeyError, ValueError, OSError) as exc:
                logger.warning("%s: cannot read the ED/ES frames (%s)", candidate, exc)
                return None
            return ED if frame == ed else ES if frame == es else None
    return None


def _check_phases(subject: Subject) -> None:
    for phase in subject.ambiguous_phases:
        names = ", ".join(c.name for c in subject.phases[phase])
        subject.notes.append(f"several {phase} cases ({names}): measures needing {phase} not computed")
    if subject.cine is None and subject.phases:
        missing = [p for p in (ED, ES) if not subject.phases.get(p)]
        if missing:
            present = ES if missing[0] == ED else ED
            subject.notes.append(f"no {missing[0]} case: only the measures of {present} are given"
                                 if len(subject.phases[present]) == 1 else f"no {missing[0]} case")
    if subject.unphased and not subject.phases and subject.cine is None:
        subject.notes.append("phase unknown (no cases.csv row, no _ED/_ES or _frameNN + Info.cfg in the name): "
                             "volumes only")


def phase_pairs(cases: Sequence[tuple[str, Sequence[Path]]], metadata: pd.DataFrame | None = None) -> dict[str, str]:
    """ED <-> ES pairs among 3D cases given as (name, source files), by the rules of :func:`group_subjects`
    (so the volumes a model sees together are the ones measured together): a subject with exactly one ED and
    one ES case pairs them both ways. For models that take the other phase as input
    (:mod:`autocmr.preprocessing.other_phase`)."""
    records = [CaseRecord(name, Path(name), None, tuple(Path(p) for p in sources)) for name, sources in cases]
    pairs: dict[str, str] = {}
    for subject in group_subjects(records, metadata):
        ed, es = subject.phases.get(ED, []), subject.phases.get(ES, [])
        if len(ed) == 1 and len(es) == 1:
            pairs[ed[0].name], pairs[es[0].name] = es[0].name, ed[0].name
    return pairs


def phase_pairs_of_jobs(jobs: Sequence[Any], metadata_path: str | Path | None = None) -> dict[str, str]:
    """:func:`phase_pairs` of prediction jobs (:class:`autocmr.inference.inputs.PredictionJob`, 3D ones), with
    the ``cases.csv`` at ``metadata_path`` if given (read here, so only runs that pair read it)."""
    metadata = read_metadata(metadata_path) if metadata_path is not None else None
    return phase_pairs([(job.name, job.sources) for job in jobs if job.kind == "3d"], metadata)


__all__ = ["CASES_CSV", "CaseRecord", "Subject", "find_metadata", "frame_predictions", "group_subjects",
           "phase_pairs", "phase_pairs_of_jobs", "read_metadata"]
