"""Dataset fingerprint: per-case spacing and shapes, and foreground intensity statistics.

Intensities are sampled (seeded, a fixed number per case) from voxels inside the reference segmentation,
so statistics describe the tissue of interest, not air. The fingerprint is saved as JSON with one entry
per case and reused while the raw files are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocmr.dataset.raw import RawCase, RawDataset, hash_file_stats
from autocmr.documents.plans import IntensityStats
from autocmr.documents.versioning import check_version, read_json_document
from autocmr.errors import DatasetError, DocumentError, exception_text
from autocmr.io.atomic import write_json_atomic
from autocmr.parallel import run_all
from autocmr.preprocessing.cropping import crop, nonzero_bbox
from autocmr.preprocessing.loading import load_case

FINGERPRINT_SCHEMA_VERSION = 1
SAMPLES_PER_CASE = 10_000  # foreground voxels sampled per case for intensity statistics


@dataclass(frozen=True)
class CaseFingerprint:
    case_id: str
    spacing: tuple[float, float, float]  # canonical numpy order (through-plane first for cine stacks)
    shape: tuple[int, int, int]  # canonical, before cropping
    cropped_shape: tuple[int, int, int]
    classes: tuple[int, ...]  # label values present
    crop_fraction: float  # cropped voxels / original voxels


@dataclass(frozen=True)
class Fingerprint:
    dataset_name: str
    labels: dict[str, int]
    channel_names: dict[str, str]
    cases: tuple[CaseFingerprint, ...]
    intensity: tuple[IntensityStats, ...]
    source_signature: str
    seed: int = 0
    schema_version: int = FINGERPRINT_SCHEMA_VERSION

    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], float)

    def cropped_shapes(self) -> np.ndarray:
        return np.array([c.cropped_shape for c in self.cases], float)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "Fingerprint":
        """The fingerprint in ``path``; a missing, corrupt, malformed or other-version file raises a
        :class:`~autocmr.errors.PlansError` (a DocumentError) naming the file, never a KeyError."""
        path = Path(path)
        rerun = "re-run `autocmr_plan`"
        d = read_json_document(path, kind="fingerprint", what_to_rerun=rerun)
        check_version(path, d.get("schema_version"), kind="fingerprint", supported=(FINGERPRINT_SCHEMA_VERSION,),
                      what_to_rerun=rerun)
        try:
            return from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DocumentError(f"{path}: malformed fingerprint ({exception_text(exc)}); {rerun}") from exc


def from_dict(d: dict[str, Any]) -> Fingerprint:
    cases = tuple(CaseFingerprint(c["case_id"], tuple(c["spacing"]), tuple(c["shape"]), tuple(c["cropped_shape"]),
                                  tuple(c["classes"]), float(c["crop_fraction"])) for c in d["cases"])
    return Fingerprint(d["dataset_name"], {k: int(v) for k, v in d["labels"].items()}, dict(d["channel_names"]),
                       cases, tuple(IntensityStats(**s) for s in d["intensity"]), d["source_signature"],
                       int(d.get("seed", 0)), int(d["schema_version"]))


def source_signature(raw: RawDataset) -> str:
    """Hash of every raw file's name, size and modification time: changes when the dataset does."""
    h = hashlib.sha256()
    for case in raw.cases:
        hash_file_stats(h, case.files)
    h.update(json.dumps(raw.dataset_json.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def fingerprint_case(case: RawCase, seed: int, samples: int = SAMPLES_PER_CASE) -> tuple[CaseFingerprint, np.ndarray]:
    """Fingerprint of one case and its sampled foreground intensities (channels x samples)."""
    loaded = load_case(case.images, case.label)
    bbox = nonzero_bbox(loaded.data)
    data = crop(loaded.data, bbox)
    seg = crop(loaded.seg, bbox) if loaded.seg is not None else None
    fg = seg > 0 if seg is not None else np.ones(data.shape[1:], bool)
    if not fg.any():  # no foreground annotated: describe the whole image rather than nothing
        fg = np.ones(data.shape[1:], bool)
    values = data[:, fg]
    rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode())])
    if values.shape[1] > samples:
        values = values[:, rng.choice(values.shape[1], samples, replace=False)]
    classes = tuple(int(v) for v in np.unique(seg)) if seg is not None else ()
    shape = tuple(int(n) for n in loaded.data.shape[1:])
    cropped = tuple(int(n) for n in data.shape[1:])
    fp = CaseFingerprint(case.case_id, tuple(float(s) for s in loaded.spacing), shape, cropped, classes,
                         float(np.prod(cropped) / np.prod(shape)))
    return fp, values.astype(np.float32)


def intensity_stats(values: np.ndarray) -> IntensityStats:
    if values.size == 0:
        return IntensityStats(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    values = values.astype(np.float64, copy=False)  # float32 squares overflow at 1e20 scales, vanish at 1e-30
    p = np.percentile(values, [0.5, 50, 99.5])
    return IntensityStats(float(values.mean()), float(values.std()), float(p[1]), float(p[0]), float(p[2]),
                          float(values.min()), float(values.max()))


def compute_fingerprint(raw: RawDataset, *, num_workers: int = 1, seed: int = 0, pool=None) -> Fingerprint:
    jobs = [(c.case_id, (c, seed)) for c in raw.cases]
    results, failures = run_all(fingerprint_case, jobs, num_workers=num_workers, desc="fingerprint", pool=pool)
    if failures:
        listing = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        raise DatasetError(f"{raw.root}: {len(failures)} case(s) could not be fingerprinted:\n{listing}")
    ordered = [results[c.case_id] for c in raw.cases]
    per_channel = np.concatenate([v for _, v in ordered], axis=1)
    return Fingerprint(
        dataset_name=raw.name, labels=dict(raw.dataset_json.labels), channel_names=dict(raw.dataset_json.channel_names),
        cases=tuple(fp for fp, _ in ordered),
        intensity=tuple(intensity_stats(per_channel[c]) for c in range(per_channel.shape[0])),
        source_signature=source_signature(raw), seed=seed,
    )
