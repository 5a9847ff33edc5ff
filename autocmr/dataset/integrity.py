"""Check a raw dataset before planning: every file readable, geometry consistent, label values declared.

:func:`check_dataset` reads every image and label (pixel data too, in a process pool) and returns one
:class:`IntegrityReport` listing all problems found, so that a user fixes them in one pass instead of
meeting them one at a time deep inside preprocessing or training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autocmr.dataset.labels import label_values
from autocmr.dataset.naming import RESERVED_CASE_IDS, colliding_case_ids
from autocmr.dataset.raw import CASES_CSV, DATASET_JSON, DatasetJson, read_case_table, scan_channel_files
from autocmr.errors import DatasetError, InputFileError
from autocmr.io.completeness import check_complete
from autocmr.io.image import DEFAULT_GEOMETRY_TOLERANCE, Geometry, read_image
from autocmr.io.validity import check_voxels
from autocmr.parallel import make_bare_pool, run_all

logger = logging.getLogger(__name__)

ERROR, WARNING = "error", "warning"
EXPECTED_DIM = 3  # autocmr trains on 3D stacks (z, y, x), one channel per file


@dataclass(frozen=True)
class IntegrityProblem:
    """One problem: the case (empty for dataset-level problems), the file at fault, what is wrong."""

    case_id: str
    file: Path
    reason: str
    severity: str = ERROR


@dataclass(frozen=True)
class IntegrityReport:
    """All problems found in one dataset."""

    dataset_folder: Path
    num_training: int
    num_test: int
    problems: tuple[IntegrityProblem, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[IntegrityProblem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[IntegrityProblem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def format(self) -> str:
        """A header line and one line per problem (severity, case, file relative to the dataset, reason)."""
        head = (f"{self.dataset_folder}: {self.num_training} training cases, {self.num_test} test cases checked; "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        if not self.problems:
            return head + " - no problems found"
        rows = [(p.severity, p.case_id or "-", self._relative(p.file), p.reason)
                for p in sorted(self.problems, key=lambda p: (p.severity != ERROR, p.case_id, str(p.file)))]
        widths = [max(len(r[i]) for r in rows + [("severity", "case", "file", "")]) for i in range(3)]
        lines = [head, "  ".join(h.ljust(w) for h, w in zip(("severity", "case", "file"), widths)) + "  problem"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` with the full listing when there is any error."""
        if not self.ok:
            raise DatasetError("the dataset has problems that must be fixed first:\n" + self.format())

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.dataset_folder))
        except ValueError:
            return str(path)


def check_dataset(dataset_folder: str | Path, *, num_workers: int = 1,
                  tolerance: float = DEFAULT_GEOMETRY_TOLERANCE) -> IntegrityReport:
    """Check every case of a raw dataset folder; returns the report (it never stops at the first problem).

    Args:
        dataset_folder: a ``DatasetNNN_Name`` folder in the raw format.
        num_workers: processes reading the files in parallel.
        tolerance: geometry tolerance (mm for spacing/origin, relative for large values; direction cosines).
    """
    folder = Path(dataset_folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    try:
        dj = DatasetJson.load(folder / DATASET_JSON)
    except DatasetError as exc:
        problem = IntegrityProblem("", folder / DATASET_JSON, str(exc).removeprefix(f"{folder / DATASET_JSON}: "))
        return IntegrityReport(folder, 0, 0, (problem,))
    problems: list[IntegrityProblem] = []
    train = _list_cases(folder / "imagesTr", dj, problems)
    test = _list_cases(folder / "imagesTs", dj, problems) if (folder / "imagesTs").is_dir() else {}
    if not (folder / "imagesTr").is_dir():
        problems.append(IntegrityProblem("", folder / "imagesTr", "training images folder not found"))
    labels = _list_labels(folder / "labelsTr", dj.file_ending, set(train), problems)
    for first, second in colliding_case_ids(set(train)):  # preprocessing would overwrite one with the other
        problems.append(IntegrityProblem(second, train[second][0], f"case id clashes with case {first}: "
                                         f"{second}.b2nd would be both {first}'s stored label map and {second}'s "
                                         "image; rename one"))
    for case_id in sorted(RESERVED_CASE_IDS & (set(train) | set(test))):
        found = train.get(case_id) or test[case_id]
        problems.append(IntegrityProblem(case_id, found[0], f"case id {case_id!r} is reserved: the preprocessed "
                                         f"folder's {case_id}.json would overwrite its stored properties; rename it"))
    if dj.num_training != len(train):
        problems.append(IntegrityProblem("", folder / DATASET_JSON, f"numTraining is {dj.num_training} but "
                                         f"{len(train)} training cases were found in imagesTr"))
    for case_id in sorted(set(train) & set(test)):  # cases.csv and predictions name a case by its id alone
        problems.append(IntegrityProblem(case_id, test[case_id][0], "case id is used in both imagesTr and imagesTs: "
                                         "its cases.csv row and predicted file would belong to both; rename one"))
    problems += _check_cases_csv(folder / CASES_CSV, set(train) | set(test))
    allowed = sorted(dj.labels.values())
    # jobs keyed by folder and id: a test case named like a training case must not replace its results
    jobs = [(f"imagesTr/{case_id}", (case_id, train[case_id], labels.get(case_id), allowed, tolerance))
            for case_id in train]
    jobs += [(f"imagesTs/{case_id}", (case_id, test[case_id], None, allowed, tolerance)) for case_id in test]
    problems += _run_checks(jobs, num_workers)
    report = IntegrityReport(folder, len(train), len(test), tuple(problems))
    logger.info("integrity check of %s: %d error(s), %d warning(s)", folder, len(report.errors), len(report.warnings))
    return report


def _list_cases(images_dir: Path, dj: DatasetJson, problems: list[IntegrityProblem]) -> dict[str, list[Path]]:
    """Case id -> channel files, from ``CASE_XXXX<ending>`` names; bad names and missing channels are problems."""
    if not images_dir.is_dir():
        return {}
    ending = dj.file_ending
    scan = scan_channel_files(images_dir, ending)
    for f in sorted(scan.other_files + scan.misnamed):  # in file order, as a user reads the folder
        problems.append(IntegrityProblem("", f, f"not a {ending} file (dataset.json file_ending)", WARNING)
                        if f in scan.other_files else
                        IntegrityProblem("", f, f"image name must be CASE_XXXX{ending} (XXXX = channel)"))
    expected = list(range(dj.num_channels))
    wrong = scan.channels_wrong(dj.num_channels)
    for case_id, found in wrong.items():
        problems.append(IntegrityProblem(case_id, scan.by_case[case_id][min(found)],
                                         f"has channels {found}, dataset.json declares {expected}"))
    return {c: [ch[i] for i in expected] for c, ch in sorted(scan.by_case.items()) if c not in wrong}


def _list_labels(labels_dir: Path, ending: str, cases: set[str], problems: list[IntegrityProblem]) -> dict[str, Path]:
    found = {f.name[: -len(ending)]: f for f in sorted(labels_dir.iterdir())
             if f.name.endswith(ending) and not f.name.startswith(".")} if labels_dir.is_dir() else {}
    for case_id, f in found.items():
        if case_id not in cases:
            problems.append(IntegrityProblem(case_id, f, "label without a training image", WARNING))
    for case_id in sorted(cases - set(found)):
        problems.append(IntegrityProblem(case_id, labels_dir / f"{case_id}{ending}", "label file missing"))
    return {c: f for c, f in found.items() if c in cases}


def _check_cases_csv(path: Path, known: set[str]) -> list[IntegrityProblem]:
    if not path.is_file():
        return []
    try:
        table = read_case_table(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return [IntegrityProblem("", path, f"cannot read as CSV ({exc})")]
    if "case_id" not in table.columns:
        return [IntegrityProblem("", path, f"needs a 'case_id' column, found {list(table.columns)}")]
    problems = []
    for case_id, rows in table.groupby("case_id", sort=True):
        if len(rows) > 1:
            subjects = sorted(rows["subject"].fillna("").unique()) if "subject" in rows else []
            what = f"mapped to several subjects {subjects}" if len(subjects) > 1 else "listed more than once"
            problems.append(IntegrityProblem(str(case_id), path, f"{len(rows)} rows: case {what}"))
    unknown = sorted(set(table["case_id"].dropna()) - known)
    problems += [IntegrityProblem(c, path, "row for a case that is not in imagesTr or imagesTs", WARNING)
                 for c in unknown]
    return problems


def _run_checks(jobs: list, num_workers: int) -> list[IntegrityProblem]:
    if num_workers <= 1 or len(jobs) < 2:
        results, failures = run_all(check_case, jobs, num_workers=1, desc="checking")
    else:
        with make_bare_pool(min(num_workers, len(jobs))) as pool:  # no torch needed here: starts faster
            results, failures = run_all(check_case, jobs, num_workers=num_workers, desc="checking", pool=pool)
    problems = [p for key, _ in jobs for p in results.get(key, [])]
    problems += [IntegrityProblem(args[0], args[1][0], f"check failed ({failures[key]})")
                 for key, args in jobs if key in failures]
    return problems


def check_case(case_id: str, images: list[Path], label: Path | None, allowed: list[int],
               tolerance: float = DEFAULT_GEOMETRY_TOLERANCE) -> list[IntegrityProblem]:
    """All problems of one case: its channel images and (for training cases) its label."""
    problems: list[IntegrityProblem] = []
    reference: tuple[Path, Geometry] | None = None
    for path in images:
        geometry = _check_image(case_id, path, problems)
        if geometry is None:
            continue
        if reference is None:
            reference = (path, geometry)
        else:
            _compare(case_id, path, geometry, reference, tolerance, problems)
    if label is None:
        return problems
    try:
        check_complete(label)
        array, geometry = read_image(label)
    except InputFileError as exc:
        return problems + [IntegrityProblem(case_id, label, exc.reason)]
    if _dim_ok(case_id, label, array.shape, problems) and reference is not None:
        _compare(case_id, label, geometry, reference, tolerance, problems)
    problems += _label_value_problems(case_id, label, array, allowed)
    return problems


def _check_image(case_id: str, path: Path, problems: list[IntegrityProblem]) -> Geometry | None:
    try:
        check_complete(path)
        array, geometry = read_image(path)
    except InputFileError as exc:
        problems.append(IntegrityProblem(case_id, path, exc.reason))
        return None
    dim_ok = _dim_ok(case_id, path, array.shape, problems)
    try:  # the same policy as prediction (autocmr.io.validity): NaN/inf and constant images are refused
        check_voxels(array, path)
    except InputFileError as exc:
        problems.append(IntegrityProblem(case_id, path, exc.reason))
    return geometry if dim_ok else None


def _dim_ok(case_id: str, path: Path, shape: tuple[int, ...], problems: list[IntegrityProblem]) -> bool:
    if len(shape) == EXPECTED_DIM:
        return True
    hint = (" (a 4D cine? convert its ED/ES frames to 3D cases)" if len(shape) == 4 else
            " (a single slice? store it as a 3D image of one slice: shape x, y, 1)" if len(shape) == 2 else "")
    problems.append(IntegrityProblem(case_id, path, f"{len(shape)}D array of shape {shape}, expected a 3D "
                                                    f"image (z, y, x){hint}"))
    return False


def _compare(case_id: str, path: Path, geometry: Geometry, reference: tuple[Path, Geometry], tolerance: float,
             problems: list[IntegrityProblem]) -> None:
    differences = reference[1].differences(geometry, tolerance)
    if differences:
        problems.append(IntegrityProblem(case_id, path, f"geometry differs from {reference[0].name}: "
                                                        + "; ".join(differences)))


def _label_value_problems(case_id: str, path: Path, label: np.ndarray, allowed: list[int]) -> list[IntegrityProblem]:
    try:
        values = label_values(label, path)
    except InputFileError as exc:
        return [IntegrityProblem(case_id, path, exc.reason)]
    problems = []
    undeclared = sorted(set(values) - set(allowed))
    if undeclared:
        problems.append(IntegrityProblem(case_id, path, f"label values {undeclared} are not declared in "
                                                        f"dataset.json labels {allowed}"))
    if values == [0]:
        problems.append(IntegrityProblem(case_id, path, "label is all background", WARNING))
    return problems


__all__ = ["ERROR", "WARNING", "IntegrityProblem", "IntegrityReport", "check_case", "check_dataset"]
