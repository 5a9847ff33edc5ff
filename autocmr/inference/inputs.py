"""Find the prediction jobs in an input folder (or a single file) for ``autocmr_predict``.

What counts as a job:

* a 3D image (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``) at the top level of the folder, named either the
  nnU-Net way (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... one file per channel, grouped by ``CASE``) or
  plainly (``CASE.nii.gz``, one channel). A ``_NNNN`` suffix without a ``_0000`` sibling is part of a
  plain name. A 4D file with a single frame counts as 3D;
* a 4D cine file (more than one frame): every frame is segmented, the mask is 4D with the input's header;
* a DICOM series anywhere under the folder (the folder itself or any sub-folder): one job per series,
  named after its folder plus the series number and description (plus a short hash of the series UID when
  two series, e.g. of two patients scanned with one protocol, would get the same name). A ``DICOMDIR``
  given as the input stands for the folder it indexes.

DICOM objects that are no images to segment (a DICOMDIR, structured reports, presentation states, DICOM
segmentations, secondary captures, colour images) and series whose images lie in planes far apart (localizers,
surveys: :data:`MAX_REANGLED_TILT_DEG`) are skipped with a note in the log, never reported as failures: every
study export holds some. A series whose planes are nearly parallel (a stack with a re-angled slice) is a
problem: it was meant to be segmented and cannot be read as one volume.

Top-level files that are neither are reported as problems ("not an image"), and so is every file that looks
like DICOM but cannot be read (a truncated or corrupt instance), wherever it lies. Text side files at the top
level (ACDC's ``Info.cfg``, a ``cases.csv``, notes: :data:`SIDE_FILE_SUFFIXES`) are skipped with a note in the
log, and so are reference segmentations beside their images (ACDC's ``_gt`` files:
:data:`REFERENCE_LABEL_SUFFIXES`); a label map under another name is refused when read ("looks like a label
map", :mod:`autocmr.io.validity`). Files in sub-folders that are not DICOM are ignored, because DICOM
exports carry side files (DICOMDIR, contours, reports). Hidden files, which include autocmr's own temporary
files (``.tmp_*``), are never looked at.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from autocmr.dataset.naming import split_channel_suffix
from autocmr.errors import ConfigurationError, InputFileError
from autocmr.io.cine import is_cine
from autocmr.io.dicom import DicomSeriesInfo, find_dicom_series
from autocmr.io.dicom_scan import SkippedObject, scan_folder, series_info
from autocmr.io.dicom_stacks import group_into_volumes
from autocmr.io.completeness import check_complete
from autocmr.io.image import IMAGE_SUFFIXES, read_header

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = ".nii.gz"  # masks are always written as NIfTI, whatever the input format
IMAGES_FROM_DICOM = "images_from_dicom"  # sub-folder of the output holding DICOM series converted to NIfTI
PROBABILITIES_SUFFIX = "_probabilities.npz"
JOB_KINDS = ("3d", "cine", "dicom")
# A series whose planes all lie within this of each other is a stack with a slice planned apart, reported as
# a failed case; planes further apart (a localizer's are orthogonal) are a localizer or survey, passed over.
MAX_REANGLED_TILT_DEG = 30.0
_UNSAFE = re.compile(r"[^\w.-]+")  # \w: letters and digits of any script (a folder named 张三 stays 张三)
MAX_DESCRIPTION_CHARS = 40  # series descriptions can be long; keep output names readable
# Text that travels with images (metadata, notes, a CD export's viewer and index pages) is no image and no
# reason for the run to fail.
SIDE_FILE_SUFFIXES = (".cfg", ".csv", ".json", ".md", ".tsv", ".txt", ".htm", ".html", ".inf", ".ini", ".xml",
                      ".pdf")
SIDE_FILE_NAMES = ("readme", "lockfile", "version")  # files without a suffix on exported CDs
# Reference segmentations kept beside their images (ACDC's ``patient001_frame01_gt.nii.gz``): a file named as
# another image of the folder plus one of these is that image's labels, not an image to segment.
REFERENCE_LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_labels", "_mask", "_manual")


@dataclass(frozen=True)
class PredictionJob:
    """One image to segment: ``sources`` are the channel files (3d, cine) or the DICOM files (dicom)."""

    name: str
    kind: str  # one of JOB_KINDS
    sources: tuple[Path, ...]
    output: Path
    series_uid: str | None = None  # DICOM only
    multiframe: bool = False  # DICOM from enhanced multi-frame files (no DICOM-SEG for those yet)
    # 3D only: the channel files of the subject's other cardiac phase (ES for an ED volume and vice versa), for
    # models that take it as input (autocmr.preprocessing.other_phase); empty when it is not known
    partner_sources: tuple[Path, ...] = ()

    @property
    def source(self) -> Path:
        """The file (or, for DICOM, the folder) to name in messages."""
        if self.kind == "dicom":
            return Path(os.path.commonpath([p.parent for p in self.sources]))
        return self.sources[0]

    @property
    def image_copy(self) -> Path | None:
        """Where a DICOM series is written as NIfTI, so that users can overlay the mask on it."""
        return self.output.parent / IMAGES_FROM_DICOM / f"{self.name}{OUTPUT_SUFFIX}" if self.kind == "dicom" else None

    @property
    def probabilities_path(self) -> Path:
        return self.output.parent / f"{self.name}{PROBABILITIES_SUFFIX}"


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be predicted: its name, the file at fault and why."""

    name: str
    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "file": self.file, "reason": self.reason}


_Found = tuple[list[PredictionJob], list[CaseFailure]]


@dataclass(frozen=True)
class Discovery:
    jobs: tuple[PredictionJob, ...]  # sorted by name
    problems: tuple[CaseFailure, ...]  # inputs that cannot become jobs


def with_phase_partners(jobs: Sequence[PredictionJob], partners: dict[str, str]) -> list[PredictionJob]:
    """``jobs`` with ``partner_sources`` set from ``partners`` (a job name -> its other phase's job name); only
    3D jobs whose partner is a 3D job of the list are paired."""
    by_name = {job.name: job for job in jobs if job.kind == "3d"}
    return [replace(job, partner_sources=by_name[partners[job.name]].sources)
            if job.kind == "3d" and partners.get(job.name) in by_name else job for job in jobs]


def check_input_exists(input_path: str | Path) -> None:
    """Refuse a missing input before a model is loaded or a process started for it."""
    if not str(input_path).strip():  # an unset shell variable (-i "$IN"): never the current folder by accident
        raise InputFileError(input_path, "the input is an empty name (an unset variable?): give a folder or a file")
    if not Path(input_path).expanduser().exists():
        raise InputFileError(input_path, "input not found (a folder of images or DICOM series, or one image file)")


def discover_jobs(input_path: str | Path, output_dir: str | Path, *, num_channels: int | None = None) -> Discovery:
    """Jobs in ``input_path`` (a folder or one file) writing into ``output_dir``.

    Args:
        input_path: folder of images / DICOM, or a single image or DICOM file.
        output_dir: where masks go (``NAME.nii.gz``); inside the input folder is fine (it is skipped), the
            input folder itself is not.
        num_channels: channels the model expects; cases with another count become problems. ``None``
            skips that check.

    Raises:
        InputFileError: ``input_path`` does not exist.
        ConfigurationError: ``output_dir`` is the input folder.
    """
    source, out = Path(input_path).expanduser(), Path(output_dir).expanduser()
    if not source.exists():
        raise InputFileError(source, "input does not exist")
    if source.is_file() and source.name.upper() == "DICOMDIR":  # the index of an export: the export is meant
        logger.info("%s is the index of a DICOM export: reading the folder it indexes, %s", source, source.parent)
        source = source.parent
    if source.is_dir() and source.resolve() == out.resolve():
        raise ConfigurationError(f"output folder {out} is the input folder; choose another output folder")
    if source.is_dir():
        jobs, problems = _discover_folder(source, out, num_channels)
    else:
        jobs, problems = _discover_file(source, out, num_channels)
    jobs, clashes = _unique_names(jobs)
    jobs, overwrites = _outputs_apart_from_inputs(jobs)
    clashes += overwrites
    return Discovery(tuple(sorted(jobs, key=lambda j: j.name)),
                     tuple(sorted(problems + clashes, key=lambda p: (p.name, p.file))))


def _discover_folder(folder: Path, out: Path, num_channels: int | None) -> _Found:
    top = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in top if _image_suffix(p)]
    references = set(reference_label_files(images))
    if references:
        logger.info("reference segmentations skipped (named as an image beside them plus %s): %s",
                    "/".join(REFERENCE_LABEL_SUFFIXES), ", ".join(sorted(p.name for p in references)))
        images = [p for p in images if p not in references]
    jobs, problems = _image_jobs(images, out, num_channels)
    scan = scan_folder(folder)
    series = [series_info(uid, members) for uid, members in group_into_volumes(scan.headers).items()]
    dicom_jobs, dicom_problems, dicom_files = _dicom_jobs(series, folder, out, num_channels)
    jobs += dicom_jobs
    problems += dicom_problems + _unreadable_dicom(scan.unreadable, folder, out)
    _log_skipped([s for s in scan.skipped if not _in_own_output(s.path, folder, out)], folder)
    # every DICOM file found is accounted for, also a repeated slice left out of a joined stack (its warning
    # says so) and a DICOM object that is no image (a DICOMDIR, a report): it is not 'not an image'
    dicom_files |= ({u.path.resolve() for u in scan.unreadable} | {h.path.resolve() for h in scan.headers}
                    | {s.path.resolve() for s in scan.skipped})
    others = [p for p in top if not _image_suffix(p) and p.resolve() not in dicom_files]
    side = [p for p in others if p.suffix.lower() in SIDE_FILE_SUFFIXES or p.name.lower() in SIDE_FILE_NAMES]
    if side:
        logger.info("side files skipped (not images): %s", ", ".join(p.name for p in side))
    problems += [CaseFailure(p.name, str(p), "not an image (expected " + ", ".join(IMAGE_SUFFIXES) + " or DICOM)")
                 for p in others if p not in side]
    problems += [CaseFailure(p.name, str(p), f"a broken link: {p.name} points to {os.readlink(p)}, which does not "
                                             "exist") for p in _broken_links(folder)]
    _warn_nested_images(folder, out)
    return jobs, problems


def _broken_links(folder: Path) -> list[Path]:
    """Symbolic links in ``folder`` whose target is gone: a case the user meant to give, reported as failed
    (``is_file`` is False for them, so the discovery above would pass them over without a word)."""
    return sorted(p for p in folder.iterdir() if p.is_symlink() and not p.exists() and not p.name.startswith("."))


def _log_skipped(skipped: Sequence[SkippedObject], folder: Path) -> None:
    """One log line per kind of DICOM object that is no image to segment (a study export holds many)."""
    by_kind: dict[str, list[Path]] = {}
    for item in skipped:
        by_kind.setdefault(item.what, []).append(item.path)
    for what, paths in sorted(by_kind.items()):
        logger.info("not segmented, %s: %d DICOM file(s), e.g. %s", what, len(paths), _relative(paths[0], folder))


def _relative(path: Path, folder: Path) -> Path:
    try:
        return path.relative_to(folder)
    except ValueError:
        return path


def reference_label_files(images: Sequence[Path]) -> list[Path]:
    """The files among ``images`` named as another of them plus a :data:`REFERENCE_LABEL_SUFFIXES` suffix
    (case-insensitive): ``X_gt.nii.gz`` beside ``X.nii.gz`` (or beside ``X_0000.nii.gz``, nnU-Net's naming)."""
    names = {_stem(p) for p in images}
    names |= {parsed[0] for n in list(names) if (parsed := split_channel_suffix(n)) is not None}
    labels = []
    for path in images:
        stem = _stem(path)
        for suffix in REFERENCE_LABEL_SUFFIXES:
            if stem.lower().endswith(suffix) and stem[: -len(suffix)] in names:
                labels.append(path)
                break
    return labels


def _unreadable_dicom(unreadable: Sequence[InputFileError], folder: Path, out: Path) -> list[CaseFailure]:
    """Each DICOM-looking file that cannot be read is a failure of its own (its series, if any, goes on
    without it and fails or warns when the missing image breaks its grid)."""
    problems = []
    for item in unreadable:
        if _in_own_output(item.path, folder, out):
            continue
        name = sanitise_name(str(item.path.relative_to(folder).with_suffix("")))
        problems.append(CaseFailure(name, str(item.path), f"unreadable DICOM file, skipped: {item.reason}"))
    return problems


def _discover_file(path: Path, out: Path, num_channels: int | None) -> _Found:
    if _image_suffix(path):
        parsed = split_channel_suffix(_stem(path))
        if parsed is None:
            return _image_jobs([path], out, num_channels)
        case = parsed[0]
        siblings = [p for p in sorted(path.parent.iterdir()) if p.is_file() and _image_suffix(p)
                    and (s := split_channel_suffix(_stem(p))) is not None and s[0] == case]
        jobs, problems = _image_jobs(siblings, out, num_channels)
        keep = [j for j in jobs if path in j.sources]
        return keep, [p for p in problems if p.file == str(path) or p.name == case]
    series = [s for s in find_dicom_series(path.parent) if path.resolve() in {f.resolve() for f in s.files}]
    if not series:
        return [], [CaseFailure(path.name, str(path), "not an image (expected " + ", ".join(IMAGE_SUFFIXES)
                                + " or DICOM)")]
    jobs, problems, _ = _dicom_jobs(series, path.parent, out, num_channels)
    return jobs, problems


def _image_suffix(path: Path) -> str | None:
    lower = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)


def _stem(path: Path) -> str:
    return path.name[: -len(_image_suffix(path) or "")]


def _image_jobs(images: Sequence[Path], out: Path, num_channels: int | None) -> _Found:
    """Group files into cases (nnU-Net channel naming or plain names) and classify them 3D / cine."""
    by_case: dict[str, dict[int, Path]] = {}
    repeated: list[CaseFailure] = []
    for path in images:
        if parsed := split_channel_suffix(_stem(path)):
            channels = by_case.setdefault(parsed[0], {})
            if parsed[1] in channels:  # CASE_0000.nii beside CASE_0000.nii.gz: which one is meant?
                repeated.append(CaseFailure(parsed[0], str(path), f"same case and channel as "
                                                                  f"{channels[parsed[1]].name}; skipped, remove one"))
                continue
            channels[parsed[1]] = path
    images = [p for p in images if str(p) not in {f.file for f in repeated}]
    groups: list[tuple[str, dict[int, Path]]] = []
    grouped: set[str] = set()
    for path in images:
        parsed = split_channel_suffix(_stem(path))
        if parsed and 0 in by_case[parsed[0]]:
            if parsed[0] not in grouped:
                grouped.add(parsed[0])
                groups.append((parsed[0], by_case[parsed[0]]))
        else:  # plain name, or a _NNNN suffix that is not a channel number (no _0000 beside it)
            groups.append((_stem(path), {0: path}))
    jobs, problems = [], list(repeated)
    for name, channels in groups:
        job_or_problem = _image_job(name, channels, out, num_channels)
        (jobs if isinstance(job_or_problem, PredictionJob) else problems).append(job_or_problem)
    return jobs, problems


def _image_job(name: str, channels: dict[int, Path], out: Path,
               num_channels: int | None) -> PredictionJob | CaseFailure:
    indices = sorted(channels)
    files = [channels[i] for i in indices]
    if indices != list(range(len(files))):
        found = ", ".join(f"_{i:04d}" for i in indices)
        return CaseFailure(name, str(files[0]), f"channel files are not numbered _0000, _0001, ... without gaps "
                                                f"(found {found})")
    if num_channels is not None and len(files) != num_channels:
        listed = ", ".join(f.name for f in files)
        return CaseFailure(name, str(files[0]), f"has {len(files)} channel(s) ({listed}) but the model expects "
                                                f"{num_channels}")
    try:
        geometry = read_header(files[0])
    except InputFileError as exc:
        return CaseFailure(name, str(files[0]), f"not an image ({exc.reason})")
    except Exception as exc:  # noqa: BLE001 - a reader's unforeseen error fails this case, not the whole folder
        return CaseFailure(name, str(files[0]), f"cannot read its header ({type(exc).__name__}: {exc})")
    if geometry.dim not in (3, 4):
        hint = "; store a single slice as a 3D image of one slice (shape x, y, 1)" if geometry.dim == 2 else ""
        return CaseFailure(name, str(files[0]), f"is a {geometry.dim}D image; expected 3D or 4D (cine){hint}")
    kind = "cine" if is_cine(geometry) else "3d"
    if kind == "cine" and len(files) > 1:
        return CaseFailure(name, str(files[0]), "4D cine with several channel files is not supported")
    return PredictionJob(name, kind, tuple(files), out / f"{name}{OUTPUT_SUFFIX}")


def _dicom_jobs(series: Iterable[DicomSeriesInfo], root: Path, out: Path,
                num_channels: int | None) -> tuple[list[PredictionJob], list[CaseFailure], set[Path]]:
    """One job per series; also returns every file that belongs to a series (resolved paths)."""
    jobs, problems, members = [], [], set()
    for info in series:
        files = tuple(sorted(info.files))
        folder = Path(os.path.commonpath([f.parent for f in files]))
        if _in_own_output(folder, root, out):
            continue  # never read our own output folder as input
        members.update(f.resolve() for f in files)
        name = _dicom_name(info, folder, root)
        if info.n_planes > 1 and info.plane_tilt_deg > MAX_REANGLED_TILT_DEG:  # every cardiac study has one
            logger.info("not segmented, %s: images in %d planes (a localizer or survey), %s", name, info.n_planes,
                        _relative(folder, root))
            continue
        if info.n_planes > 1:  # a stack the user means to segment, which cannot be read as one volume
            problems.append(CaseFailure(name, str(folder), f"the series holds images in {info.n_planes} "
                                                           "orientations (their planes up to "
                                                           f"{info.plane_tilt_deg:.0f} degrees apart: a stack with "
                                                           "a re-angled slice?), which make no one volume: not "
                                                           "segmented; give the images of one plane as a series "
                                                           "of their own"))
            continue
        if num_channels is not None and num_channels != 1:
            problems.append(CaseFailure(name, str(folder), f"DICOM series give one channel but the model expects "
                                                           f"{num_channels}"))
            continue
        jobs.append(PredictionJob(name, "dicom", files, out / f"{name}{OUTPUT_SUFFIX}", info.series_instance_uid,
                                  info.multiframe))
    return jobs, problems, members


def _dicom_name(info: DicomSeriesInfo, folder: Path, root: Path) -> str:
    relative = folder.resolve().relative_to(root.resolve()) if folder.resolve() != root.resolve() else None
    parts = list(relative.parts) if relative is not None else [root.resolve().name]
    if info.series_number is not None:
        parts.append(f"s{info.series_number}")
    if info.description.strip():
        parts.append(info.description.strip()[:MAX_DESCRIPTION_CHARS])
    return sanitise_name("_".join(parts))


def sanitise_name(text: str) -> str:
    """A file-name-safe version of ``text``: letters and digits (of any script), ``.``, ``_`` and ``-`` only."""
    name = _UNSAFE.sub("_", text).strip("._-")
    return re.sub(r"_+", "_", name) or "series"


def _unique_names(jobs: list[PredictionJob]) -> _Found:
    """Two inputs that would write the same mask: DICOM series of one folder (two patients scanned with the
    same protocol, exported together) get a short hash of their series UID added to the name; otherwise keep
    the first (sorted by source) and report the others. Names that differ only in case (``Case1``,
    ``case1``) clash too: on a case-insensitive output folder (macOS, Windows, some shares) they are one file."""
    jobs = _series_named_apart(jobs)
    seen: dict[str, PredictionJob] = {}
    clashes = []
    for job in sorted(jobs, key=lambda j: (j.name.casefold(), j.name, str(j.source))):
        first = seen.get(job.name.casefold())
        if first is None:
            seen[job.name.casefold()] = job
            continue
        which = (f"output name {job.name}" if first.name == job.name else
                 f"output name {job.name} differs only in case from {first.name}, which")
        clashes.append(CaseFailure(job.name, str(job.source), f"{which} is already used by {first.source}; rename "
                                                              "one of them"))
    return list(seen.values()), clashes


def _series_named_apart(jobs: list[PredictionJob]) -> list[PredictionJob]:
    by_name: dict[str, list[PredictionJob]] = {}
    for job in jobs:  # names equal but for case are one file on a case-insensitive output folder
        by_name.setdefault(job.name.casefold(), []).append(job)
    renamed = []
    for same in by_name.values():
        uids = [j.series_uid for j in same]
        if len(same) > 1 and all(j.kind == "dicom" and j.series_uid for j in same) and len(set(uids)) == len(uids):
            for job in same:
                new = f"{job.name}_{hashlib.sha1(job.series_uid.encode()).hexdigest()[:6]}"
                logger.info("%s: %d DICOM series share this name; this one (%s) is named %s", job.name, len(same),
                            job.series_uid, new)
                renamed.append(replace(job, name=new, output=job.output.with_name(f"{new}{OUTPUT_SUFFIX}")))
        else:
            renamed += same
    return renamed


OVERWRITES_INPUT = "the output would overwrite this input file; choose another output folder"


def _outputs_apart_from_inputs(jobs: list[PredictionJob]) -> _Found:
    """A job whose mask (or probabilities, or image copy) would replace one of its own input files, e.g.
    ``-i scans/CASE.nii.gz -o scans/``, is refused: the input would be lost."""
    kept, refused = [], []
    for job in jobs:
        sources = {p.resolve() for p in job.sources}
        written = [p for p in (job.output, job.probabilities_path, job.image_copy) if p is not None]
        hit = next((p for p in written if p.resolve() in sources), None)
        if hit is None:
            kept.append(job)
        else:
            refused.append(CaseFailure(job.name, str(hit), OVERWRITES_INPUT))
    return kept, refused


def _in_own_output(path: Path, root: Path, out: Path) -> bool:
    """``path`` lies in the output folder, which itself lies inside the input folder ``root`` (an output
    folder *above* the input holds every input: that is not a reason to skip any)."""
    out_resolved, path_resolved = out.resolve(), path.resolve()
    return (root.resolve() in out_resolved.parents
            and (path_resolved == out_resolved or out_resolved in path_resolved.parents))


def _warn_nested_images(folder: Path, out: Path) -> None:
    nested = [p for p in folder.rglob("*") if p.parent != folder and p.is_file() and _image_suffix(p)
              and not _in_own_output(p, folder, out)
              and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if nested:
        logger.warning("%d image file(s) in sub-folders of %s are not predicted (only DICOM is searched in "
                       "sub-folders), e.g. %s", len(nested), folder, nested[0])


__all__ = ["CaseFailure", "Discovery", "IMAGES_FROM_DICOM", "IMAGE_SUFFIXES", "JOB_KINDS", "OVERWRITES_INPUT",
           "PredictionJob",
           "REFERENCE_LABEL_SUFFIXES", "SIDE_FILE_SUFFIXES", "check_complete", "discover_jobs", "sanitise_name"]
