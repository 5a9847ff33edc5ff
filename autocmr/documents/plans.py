"""Plans: the typed, versioned JSON document that drives preprocessing, training and inference.

One plans file per (dataset, plans name), e.g. ``autocmrPlans.json`` (GPU target) and
``autocmrPlans_cpu.json`` (CPU target). A trained model folder carries a copy, so it is self-contained.
Unknown or old schema versions fail with a clear message instead of a KeyError deep inside training.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autocmr.documents.versioning import read_json_document
from autocmr.errors import PlansError, exception_text
from autocmr.io.atomic import write_json_atomic

PLANS_SCHEMA_VERSION = 1
DEFAULT_PLANS_NAME = "autocmrPlans"
CPU_PLANS_NAME = "autocmrPlans_cpu"
SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # a data_identifier: one folder name, no separators


@dataclass(frozen=True)
class Topology:
    """A U-Net's shape: per resolution stage its features, conv kernel and the stride that enters it."""

    dim: int
    features: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]  # strides[0] is all ones
    convs_per_stage: int = 2
    deep_supervision: bool = True

    @property
    def n_stages(self) -> int:
        return len(self.features)

    def total_stride(self) -> tuple[int, ...]:
        """Product of strides per axis: patch sizes must be divisible by it."""
        out = [1] * self.dim
        for s in self.strides:
            out = [a * b for a, b in zip(out, s)]
        return tuple(out)


@dataclass(frozen=True)
class Resampling:
    """How a configuration resamples. Through-plane (axis 0) may stay native (``2d``) or use nearest
    neighbour when the data are anisotropic, because interpolating across 8-10 mm slices invents anatomy."""

    resample_through_plane: bool
    anisotropic: bool
    image_order: int = 3  # in-plane: cubic for images
    label_order: int = 1  # in-plane: linear on one-hot, then argmax (never invents classes)


@dataclass(frozen=True)
class Configuration:
    name: str
    dim: int
    data_identifier: str  # preprocessed folder name; shared by configurations that preprocess identically
    spacing: tuple[float, float, float]  # target spacing (transposed numpy order); axis 0 = median if native
    resampling: Resampling
    median_shape: tuple[int, int, int]  # after resampling
    patch_size: tuple[int, ...]
    batch_size: int
    topology: Topology
    normalization: tuple[str, ...]  # one scheme per channel
    use_mask_for_norm: tuple[bool, ...]
    batch_dice: bool
    foreground_oversampling: float = 0.33  # fraction of each batch forced to contain foreground
    # 2d only: neighbouring slices on each side stacked as input channels ("2.5D", built on the fly by
    # autocmr.preprocessing.context, so the preprocessed data do not depend on it); 0 = the slice alone
    context_slices: int = 0
    # the other cardiac phase of the same subject (ES beside ED and ED beside ES) as extra input channels,
    # appended in preprocessed space (autocmr.preprocessing.other_phase); a lone volume is paired with itself
    other_phase: bool = False

    def __post_init__(self) -> None:
        if self.context_slices < 0:
            raise PlansError(f"configuration {self.name!r}: context_slices must be >= 0, got {self.context_slices}")
        if self.context_slices and self.dim != 2:
            raise PlansError(f"configuration {self.name!r}: context_slices={self.context_slices} needs a 2d "
                             f"configuration (a {self.dim}d network already sees neighbouring slices); use 0")

    def input_channels(self, n_image_channels: int) -> int:
        """The network's input channels: each image channel (and, with ``other_phase``, each of the other
        phase's) of the slice and its ``2 * context_slices`` neighbours (channel order:
        :mod:`autocmr.preprocessing.other_phase`, then :mod:`autocmr.preprocessing.context`)."""
        return self.image_channels(n_image_channels) * (2 * self.context_slices + 1)

    def image_channels(self, n_image_channels: int) -> int:
        """Channels of the preprocessed volume the sliding window receives: the image's, doubled by the other
        phase's when ``other_phase`` is on."""
        return n_image_channels * (2 if self.other_phase else 1)


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel (sampled over the training set)."""

    mean: float
    std: float
    median: float
    p00_5: float
    p99_5: float
    min: float
    max: float


@dataclass(frozen=True)
class Plans:
    dataset_name: str
    plans_name: str
    target: str  # "gpu" or "cpu": what the patch/batch/network were sized for
    labels: dict[str, int]
    channel_names: dict[str, str]
    transpose_forward: tuple[int, int, int]
    original_median_spacing: tuple[float, float, float]  # canonical numpy order, before transpose
    original_median_shape: tuple[int, int, int]
    intensity: tuple[IntensityStats, ...]
    configurations: dict[str, Configuration]
    autocmr_version: str = ""
    schema_version: int = PLANS_SCHEMA_VERSION
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def transpose_backward(self) -> tuple[int, int, int]:
        return tuple(self.transpose_forward.index(i) for i in range(3))  # type: ignore[return-value]

    def configuration(self, name: str) -> Configuration:
        try:
            return self.configurations[name]
        except KeyError:
            raise PlansError(f"configuration {name!r} is not in plans {self.plans_name} of {self.dataset_name}; "
                             f"valid names: {sorted(self.configurations)}") from None

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(v for v in self.labels.values() if v != 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"schema_version": d.pop("schema_version"), **d}
        return d

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "plans") -> "Plans":
        version = d.get("schema_version")
        if type(version) is not int or version != PLANS_SCHEMA_VERSION:  # ``true`` is no version 1
            newer = type(version) is int and version > PLANS_SCHEMA_VERSION
            remedy = ("written by a newer autocmr: upgrade autocmr to use it (a model folder's plans cannot be "
                      "regenerated)" if newer else "re-run `autocmr_plan` to regenerate the plans")
            raise PlansError(f"{source}: plans schema version {version!r}, this autocmr reads version "
                             f"{PLANS_SCHEMA_VERSION}; {remedy}")
        try:
            plans = cls(
                dataset_name=d["dataset_name"], plans_name=d["plans_name"], target=d["target"],
                labels={str(k): int(v) for k, v in d["labels"].items()},
                channel_names={str(k): str(v) for k, v in d["channel_names"].items()},
                transpose_forward=_ints(d["transpose_forward"]),
                original_median_spacing=_floats(d["original_median_spacing"]),
                original_median_shape=_ints(d["original_median_shape"]),
                intensity=tuple(IntensityStats(**s) for s in d["intensity"]),
                configurations={k: _checked(k, _configuration(v)) for k, v in d["configurations"].items()},
                autocmr_version=str(d.get("autocmr_version", "")),
                schema_version=int(version),
                notes=dict(d.get("notes", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # AttributeError: a list for a mapping
            raise PlansError(f"{source}: malformed plans ({exception_text(exc)})") from exc
        except PlansError as exc:  # an inconsistent configuration: name the file too
            raise PlansError(f"{source}: {exc}") from exc
        channels = len(plans.channel_names)
        if len(plans.intensity) != channels:
            raise PlansError(f"{source}: {len(plans.intensity)} intensity statistics for {channels} channel(s)")
        for key, config in plans.configurations.items():
            if not len(config.normalization) == len(config.use_mask_for_norm) == channels:
                raise PlansError(f"{source}: configuration {key!r} has {len(config.normalization)} normalisation "
                                 f"scheme(s) and {len(config.use_mask_for_norm)} mask setting(s) for {channels} "
                                 "channel(s)")
        if sorted(plans.transpose_forward) != [0, 1, 2]:
            raise PlansError(f"{source}: transpose_forward {list(plans.transpose_forward)} is not an order of the "
                             "axes 0, 1, 2")
        return plans

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        """The plans in ``path``; a missing, corrupt or unknown-version file raises :class:`PlansError` (a
        :class:`~autocmr.errors.DocumentError` for the file itself) naming it and what to re-run."""
        path = Path(path)
        data = read_json_document(path, kind="plans file", what_to_rerun="run `autocmr_plan` for this dataset first")
        return cls.from_dict(data, source=str(path))


def default_plans_name(device_type: str, *, cpu_plans_exist: bool) -> str:
    """The plans used when none is named: the CPU-sized plans (smaller network, patch and batch) for work on the
    CPU when they exist, else the default GPU-sized plans."""
    return CPU_PLANS_NAME if device_type == "cpu" and cpu_plans_exist else DEFAULT_PLANS_NAME


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


def _checked(key: str, config: Configuration) -> Configuration:
    """A loaded configuration that describes one buildable network (a hand-edited or damaged plans file would
    otherwise load and fail deep inside training, or build another network than the plans list)."""
    t = config.topology
    problems = []
    if config.name != key:
        problems.append(f"its name is {config.name!r}")
    if not (len(t.features) == len(t.kernels) == len(t.strides) >= 2):
        problems.append(f"{len(t.features)} features, {len(t.kernels)} kernels and {len(t.strides)} strides "
                        "(one of each per stage, at least 2 stages)")
    if not (t.dim == config.dim == len(config.patch_size)) or any(len(v) != t.dim for v in t.kernels + t.strides):
        problems.append(f"dimensions disagree (configuration {config.dim}D, topology {t.dim}D, patch "
                        f"{list(config.patch_size)}, kernels/strides of other lengths)")
    elif any(v < 1 for v in config.patch_size + t.features + sum(t.kernels + t.strides, ())):
        problems.append("a size, feature count, kernel or stride below 1")
    elif t.strides and any(v != 1 for v in t.strides[0]):
        problems.append(f"the first stage has strides {list(t.strides[0])} (it must not pool)")
    elif any(p % s for p, s in zip(config.patch_size, t.total_stride())):
        problems.append(f"patch {list(config.patch_size)} is not divisible by the network's total stride "
                        f"{list(t.total_stride())}")
    elif any(k % 2 == 0 for k in sum(t.kernels, ())):
        problems.append("an even kernel size (a 'same' convolution needs odd kernels: the decoder's sizes would "
                        "not match its skip connections)")
    if t.convs_per_stage < 1:
        problems.append(f"{t.convs_per_stage} convolutions per stage (at least 1)")
    if not SAFE_NAME.fullmatch(config.data_identifier) or set(config.data_identifier) == {"."}:
        # a folder name under the preprocessed root: a path here would write (and clean up) elsewhere
        problems.append(f"data_identifier {config.data_identifier!r} is not a plain folder name")
    if problems:
        raise PlansError(f"configuration {key!r}: " + "; ".join(problems) + " (re-run `autocmr_plan`)")
    return config


def _configuration(d: dict[str, Any]) -> Configuration:
    t = d["topology"]
    topology = Topology(
        dim=int(t["dim"]), features=_ints(t["features"]),
        kernels=tuple(_ints(k) for k in t["kernels"]), strides=tuple(_ints(s) for s in t["strides"]),
        convs_per_stage=int(t["convs_per_stage"]), deep_supervision=bool(t["deep_supervision"]),
    )
    return Configuration(
        name=d["name"], dim=int(d["dim"]), data_identifier=str(d["data_identifier"]),
        spacing=_floats(d["spacing"]), resampling=Resampling(**d["resampling"]),
        median_shape=_ints(d["median_shape"]), patch_size=_ints(d["patch_size"]),
        batch_size=int(d["batch_size"]), topology=topology,
        normalization=tuple(str(n) for n in d["normalization"]),
        use_mask_for_norm=tuple(bool(b) for b in d["use_mask_for_norm"]),
        batch_dice=bool(d["batch_dice"]),
        foreground_oversampling=float(d.get("foreground_oversampling", 0.33)),
        context_slices=int(d.get("context_slices", 0)),  # absent in plans written before it existed
        other_phase=bool(d.get("other_phase", False)),  # likewise
    )
