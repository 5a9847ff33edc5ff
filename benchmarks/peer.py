"""Drive the benchmark peer, nnU-Net v2, from autocmr's benchmark scripts.

nnU-Net lives in its own virtual environment (default ``/work/peer_venv``, or ``$AUTOCMR_PEER_VENV``);
it is never imported here. This module builds its command lines and environment, links autocmr's raw
datasets into ``nnUNet_raw`` (they already are nnU-Net v2 raw datasets), writes an nnU-Net configuration
with autocmr's network, patch and batch size (``write_custom_plans``), checks that both tools then build
the same network (``check-network``) and reads nnU-Net's training logs. Run the commands with
:func:`benchmarks.measure.run_measured` and ``env=peer_env(...)``. See benchmarks/README.md.

This file also runs inside the peer venv (``_describe-nnunet``, for ``check-network``): it must not import
autocmr or torch at module level.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

try:  # autocmr's venv; the peer venv only runs `_describe-nnunet`, which raises none of these
    from autocmr.errors import ConfigurationError, DatasetError, PlansError
except ImportError:  # pragma: no cover - peer venv
    ConfigurationError = DatasetError = PlansError = RuntimeError  # type: ignore[misc,assignment]

DEFAULT_PEER_VENV = Path("/work/peer_venv")
ENV_PEER_VENV = "AUTOCMR_PEER_VENV"
CREATE_HINT = "python -m venv /work/peer_venv && /work/peer_venv/bin/pip install nnunetv2"
# Worker processes for nnU-Net's pools (fingerprint, preprocessing, export of predictions/validation):
# the same number autocmr uses on this 2-core machine (autocmr.parallel.default_workers()).
BENCH_WORKERS = 2
# nnU-Net's own default data-augmentation workers: nnUNet_n_proc_DA, else a hostname table defaulting to
# 12, capped at os.cpu_count() (nnunetv2/utilities/default_n_proc_DA.py) -> 2 here.
NNUNET_DEFAULT_DA_CAP = 12
# nnUNetTrainer (nnunetv2 2.8.1, nnUNetTrainer.__init__): iterations per epoch, validation iterations per
# epoch (no-grad forward passes, counted inside "Epoch time"), epochs.
ITERATIONS_PER_EPOCH = 250
VAL_ITERATIONS_PER_EPOCH = 50
DEFAULT_EPOCHS = 1000
TRAINING_LENGTH_MODULE = "nnunetv2/training/nnUNetTrainer/variants/training_length/nnUNetTrainer_Xepochs.py"
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
NORM_EPS = 1e-5  # autocmr.networks.unet.NORM_EPS (checked by check-network through the layer signatures)
LEAKY_SLOPE = 1e-2  # autocmr.networks.unet.LEAKY_SLOPE (idem)
_CONV = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}
_NORM = {2: "torch.nn.modules.instancenorm.InstanceNorm2d", 3: "torch.nn.modules.instancenorm.InstanceNorm3d"}
_EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
_EPOCH = re.compile(r": Epoch (\d+)\s*$")


# ----- peer environment ------------------------------------------------------------------------------
def peer_venv() -> Path:
    """The peer virtualenv; raises ConfigurationError with the command to create it when missing."""
    venv = Path(os.environ.get(ENV_PEER_VENV) or DEFAULT_PEER_VENV)
    if not (venv / "bin" / "nnUNetv2_train").is_file():
        raise ConfigurationError(f"{venv}: no nnU-Net v2 virtualenv there (bin/nnUNetv2_train missing); create it "
                                 f"with `{CREATE_HINT}` or point ${ENV_PEER_VENV} at one")
    return venv


def peer_python() -> Path:
    return peer_venv() / "bin" / "python"


def peer_bin(name: str) -> Path:
    """An executable of the peer venv, e.g. ``peer_bin("nnUNetv2_train")``."""
    path = peer_venv() / "bin" / name
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such nnU-Net entry point")
    return path


@dataclass(frozen=True)
class NnunetRoots:
    raw: Path
    preprocessed: Path
    results: Path


def nnunet_roots(nnunet_root: str | Path) -> NnunetRoots:
    root = Path(nnunet_root).resolve()
    return NnunetRoots(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")


def peer_env(nnunet_root: str | Path, *, n_proc_da: int | None = None, def_n_proc: int = BENCH_WORKERS,
             ext_trainer_dir: str | Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for nnU-Net commands: its three roots under ``nnunet_root`` (created), the peer venv first
    on PATH, and its process counts.

    ``n_proc_da`` (nnUNet_n_proc_DA, training augmentation workers; validation gets half, at least 1):
    None sets nnU-Net's own default explicitly, min(12, cores) = 2 here, so a run records what it used;
    pass 1 to match autocmr's CPU default (1 training + 1 validation loader worker). ``def_n_proc``
    (nnUNet_def_n_proc, default 8) sizes the pools that export the final validation after training, and
    caps the torch threads used for prediction: 8 processes on 2 cores only thrash, so 2.
    OMP_NUM_THREADS is left alone: with ``-device cpu`` nnU-Net calls torch.set_num_threads(cpu_count())
    in the main process and its augmentation workers set 1 thread each. ``ext_trainer_dir``: folder of
    trainers written by :func:`write_trainer_variant` (nnUNet_extTrainer).
    """
    env = dict(os.environ if base is None else base)
    for leaked in ("PYTHONPATH", "PYTHONHOME"):  # autocmr's venv must not leak into the peer's
        env.pop(leaked, None)
    venv = peer_venv()
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    roots = nnunet_roots(nnunet_root)
    for name, path in (("nnUNet_raw", roots.raw), ("nnUNet_preprocessed", roots.preprocessed),
                       ("nnUNet_results", roots.results)):
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["nnUNet_n_proc_DA"] = str(n_proc_da if n_proc_da is not None else min(NNUNET_DEFAULT_DA_CAP, os.cpu_count() or 1))
    env["nnUNet_def_n_proc"] = str(def_n_proc)
    if ext_trainer_dir is not None:
        env["nnUNet_extTrainer"] = str(Path(ext_trainer_dir).resolve())
    return env


# ----- datasets and plans ----------------------------------------------------------------------------
def link_raw_dataset(autocmr_raw_dataset_folder: str | Path, nnunet_raw: str | Path, *, copy: bool = False) -> Path:
    """Make an autocmr raw dataset (``DatasetXXX_Name`` with dataset.json, imagesTr, labelsTr) visible in
    ``nnunet_raw`` under the same name: a symlink (or a copy). autocmr's extra ``cases.csv`` is harmless:
    nnU-Net lists cases from imagesTr only. Returns the path in ``nnunet_raw``."""
    source = Path(autocmr_raw_dataset_folder).resolve()
    if not re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9_\-]+", source.name):
        raise DatasetError(f"{source}: folder name must be DatasetNNN_Name for nnU-Net")
    for required in ("dataset.json", "imagesTr", "labelsTr"):
        if not (source / required).exists():
            raise DatasetError(f"{source}: {required} missing; not an nnU-Net v2 raw dataset")
    target = Path(nnunet_raw) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() and target.resolve() == source:
        return target
    if target.exists() or target.is_symlink():
        raise DatasetError(f"{target}: already exists and is not a link to {source}; remove it first")
    if copy:
        import shutil

        shutil.copytree(source, target)
    else:
        target.symlink_to(source, target_is_directory=True)
    return target


def dataset_folder(root: str | Path, dataset_id: int) -> Path:
    """``root/DatasetXXX_*`` for an id (one match required)."""
    found = sorted(Path(root).glob(f"Dataset{int(dataset_id):03d}_*"))
    if len(found) != 1:
        raise DatasetError(f"{root}: expected one Dataset{int(dataset_id):03d}_* folder, found {[p.name for p in found]}")
    return found[0]


def write_splits(preprocessed_dataset_folder: str | Path, folds: Sequence[Mapping[str, Sequence[str]]]) -> Path:
    """Write nnU-Net's ``splits_final.json`` (same format as autocmr's splits.json: a list of
    ``{"train": [...], "val": [...]}``), so both tools train and validate on the same cases. Without it
    nnU-Net draws its own 5-fold split over *cases*, so ED and ES of one patient can straddle folds."""
    from autocmr.io.atomic import write_json_atomic

    path = Path(preprocessed_dataset_folder) / "splits_final.json"
    write_json_atomic(path, [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in folds])
    return path


def architecture_for_topology(topology: Any) -> dict[str, Any]:
    """nnU-Net ``architecture`` entry (PlainConvUNet) for an autocmr Topology: per stage features, kernels,
    strides, ``convs_per_stage`` convs in encoder and decoder, conv bias, InstanceNorm(eps, affine),
    LeakyReLU(0.01); PlainConvUNet's fixed parts (strided-conv downsampling, transposed-conv upsampling,
    a 1x1 head per decoder stage) are autocmr's too."""
    dim, n = int(topology.dim), len(topology.features)
    if dim not in _CONV:
        raise ConfigurationError(f"topology dim {dim}: nnU-Net's PlainConvUNet here supports 2 or 3")
    return {
        "network_class_name": PLAIN_UNET,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [int(f) for f in topology.features],
            "conv_op": _CONV[dim],
            "kernel_sizes": [[int(k) for k in ks] for ks in topology.kernels],
            "strides": [[int(s) for s in ss] for ss in topology.strides],
            "n_conv_per_stage": [int(topology.convs_per_stage)] * n,
            "n_conv_per_stage_decoder": [int(topology.convs_per_stage)] * (n - 1),
            "conv_bias": True,
            "norm_op": _NORM[dim],
            "norm_op_kwargs": {"eps": NORM_EPS, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"negative_slope": LEAKY_SLOPE, "inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def topology_from_architecture(architecture: Mapping[str, Any]) -> Any:
    """The autocmr Topology an nnU-Net PlainConvUNet ``architecture`` entry describes."""
    from autocmr.planners.plans import Topology

    kw = architecture["arch_kwargs"]
    convs = set(kw["n_conv_per_stage"]) | set(kw["n_conv_per_stage_decoder"])
    if architecture["network_class_name"] != PLAIN_UNET or len(convs) != 1:
        raise PlansError(f"architecture {architecture['network_class_name']} with convs per stage {sorted(convs)}: "
                         f"autocmr's U-Net is a {PLAIN_UNET} with one conv count for all stages")
    return Topology(dim=len(kw["kernel_sizes"][0]), features=tuple(kw["features_per_stage"]),
                    kernels=tuple(tuple(k) for k in kw["kernel_sizes"]),
                    strides=tuple(tuple(s) for s in kw["strides"]), convs_per_stage=convs.pop())


def write_custom_plans(nnunet_plans_file: str | Path, topology: Any, patch_size: Sequence[int], batch_size: int, *,
                       configuration_name: str = "2d_autocmr_cpu", inherits_from: str = "2d",
                       batch_dice: bool | None = None) -> str:
    """Add a configuration to an nnU-Net plans file (e.g. nnUNet_preprocessed/DatasetXXX/nnUNetPlans.json)
    that inherits everything (preprocessed data, spacing, normalisation) from ``inherits_from`` and replaces
    patch size, batch size and network with autocmr's. nnU-Net keeps such extra configurations when it
    re-plans. Train it with ``train_cmd(..., configuration_name)``; no extra preprocessing is needed."""
    from autocmr.io.atomic import write_json_atomic

    path = Path(nnunet_plans_file)
    try:
        plans = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlansError(f"{path}: cannot read nnU-Net plans ({exc}); run nnUNetv2_plan_and_preprocess first") from exc
    parent = plans.get("configurations", {}).get(inherits_from)
    if parent is None:
        raise PlansError(f"{path}: no configuration {inherits_from!r}; valid: {sorted(plans.get('configurations', {}))}")
    if len(patch_size) != topology.dim or len(parent["patch_size"]) != topology.dim:
        raise PlansError(f"{path}: patch {list(patch_size)} / {inherits_from} patch {parent['patch_size']} do not "
                         f"match a {topology.dim}D topology")
    if any(p % s for p, s in zip(patch_size, topology.total_stride())):
        raise PlansError(f"patch {list(patch_size)} is not divisible by the network's total stride {topology.total_stride()}")
    if not topology.deep_supervision:
        raise ConfigurationError("nnUNetTrainer always trains with deep supervision; for a topology without it "
                                 "train with -tr nnUNetTrainerNoDeepSupervision instead (not handled here)")
    config: dict[str, Any] = {"inherits_from": inherits_from, "patch_size": [int(p) for p in patch_size],
                              "batch_size": int(batch_size), "architecture": architecture_for_topology(topology)}
    if batch_dice is not None:
        config["batch_dice"] = bool(batch_dice)
    plans["configurations"][configuration_name] = config
    write_json_atomic(path, plans)
    return configuration_name


def write_custom_plans_from_autocmr(nnunet_plans_file: str | Path, autocmr_plans_file: str | Path,
                                    autocmr_configuration: str = "2d", **kwargs: Any) -> str:
    """:func:`write_custom_plans` with topology, patch, batch size and batch Dice of an autocmr plans file."""
    from autocmr.planners.plans import Plans

    c = Plans.load(autocmr_plans_file).configuration(autocmr_configuration)
    kwargs.setdefault("inherits_from", "2d" if c.dim == 2 else "3d_fullres")
    kwargs.setdefault("batch_dice", c.batch_dice)
    return write_custom_plans(nnunet_plans_file, c.topology, c.patch_size, c.batch_size, **kwargs)


# ----- commands --------------------------------------------------------------------------------------
def plan_and_preprocess_cmd(dataset_id: int, configurations: Sequence[str] = ("2d", "3d_fullres"), *,
                            num_processes: int = BENCH_WORKERS, verify: bool = True, clean: bool = False) -> list[str]:
    """``nnUNetv2_plan_and_preprocess``. nnU-Net defaults: ``-npfp 8`` fingerprint and ``-np`` 8 (2d) /
    4 (3d_fullres) preprocessing processes; here both are ``num_processes`` (autocmr's worker count).
    ``-c`` limits preprocessing; planning always writes 2d, 3d_fullres (and 3d_lowres when useful)."""
    cmd = [str(peer_bin("nnUNetv2_plan_and_preprocess")), "-d", str(int(dataset_id)), "-c", *configurations,
           "-np", str(num_processes), "-npfp", str(num_processes), "--no_pbar"]
    if verify:
        cmd.append("--verify_dataset_integrity")
    if clean:
        cmd.append("--clean")
    return cmd


def train_cmd(dataset_id: int, configuration: str, fold: int | str, *, trainer: str = "nnUNetTrainer",
              plans: str = "nnUNetPlans", device: str = "cpu", disable_checkpointing: bool = False) -> list[str]:
    """``nnUNetv2_train``. It trains ``num_epochs`` epochs (1000; fewer with the ``nnUNetTrainer_<N>epochs``
    variants, see :func:`epoch_variants`), then always predicts the fold's validation cases (not inside
    the epoch times, but inside the command's wall time)."""
    cmd = [str(peer_bin("nnUNetv2_train")), str(int(dataset_id)), configuration, str(fold), "-tr", trainer,
           "-p", plans, "-device", device]
    if disable_checkpointing:
        cmd.append("--disable_checkpointing")
    return cmd


_TRAINER_TEMPLATE = """# generated by autocmr benchmarks/peer.py (write_trainer_variant); found through $nnUNet_extTrainer
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    # explicit signature: nnUNetTrainer.__init__ records its subclass' named arguments for checkpoints
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
"""


def write_trainer_variant(folder: str | Path, *, num_epochs: int, iterations_per_epoch: int = ITERATIONS_PER_EPOCH,
                          val_iterations_per_epoch: int = VAL_ITERATIONS_PER_EPOCH) -> str:
    """Write an nnUNetTrainer subclass with other epoch/iteration counts into ``folder`` (outside the peer
    venv) and return its name; pass ``ext_trainer_dir=folder`` to :func:`peer_env` so nnU-Net finds it
    (``nnUNet_extTrainer``). Everything else is nnUNetTrainer's. For smoke tests, or to give both tools
    the same iterations per epoch; the poly learning rate follows ``num_epochs``."""
    from autocmr.io.atomic import write_text_atomic

    name = f"nnUNetTrainer_bench_e{num_epochs}_i{iterations_per_epoch}_v{val_iterations_per_epoch}"
    write_text_atomic(Path(folder) / f"{name}.py", _TRAINER_TEMPLATE.format(
        name=name, epochs=int(num_epochs), iterations=int(iterations_per_epoch), val_iterations=int(val_iterations_per_epoch)))
    return name


def predict_cmd(input_dir: str | Path, output_dir: str | Path, dataset_id: int, configuration: str,
                folds: Sequence[int | str], *, plans: str = "nnUNetPlans", trainer: str = "nnUNetTrainer",
                disable_tta: bool = False, device: str = "cpu", num_processes: int = BENCH_WORKERS,
                checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """``nnUNetv2_predict`` on a folder of ``CASE_0000.nii.gz`` files. ``num_processes`` sets both ``-npp``
    (preprocessing) and ``-nps`` (segmentation export) workers, nnU-Net's defaults being 3 and 3."""
    cmd = [str(peer_bin("nnUNetv2_predict")), "-i", str(input_dir), "-o", str(output_dir), "-d", str(int(dataset_id)),
           "-c", configuration, "-p", plans, "-tr", trainer, "-f", *[str(f) for f in folds], "-device", device,
           "-npp", str(num_processes), "-nps", str(num_processes), "-chk", checkpoint, "--disable_progress_bar"]
    if disable_tta:
        cmd.append("--disable_tta")
    return cmd


def link_cases(raw_dataset_folder: str | Path, case_ids: Sequence[str], input_dir: str | Path) -> Path:
    """A prediction input folder with symlinks to the images of ``case_ids`` (all channels)."""
    source, out = Path(raw_dataset_folder) / "imagesTr", Path(input_dir)
    out.mkdir(parents=True, exist_ok=True)
    for case in case_ids:
        files = sorted(source.glob(f"{case}_[0-9][0-9][0-9][0-9].*"))
        if not files:
            raise DatasetError(f"{source}: no image for case {case!r}")
        for f in files:
            link = out / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return out


# ----- results and logs ------------------------------------------------------------------------------
def training_folder(nnunet_results: str | Path, dataset_id: int, configuration: str, fold: int | str, *,
                    trainer: str = "nnUNetTrainer", plans: str = "nnUNetPlans") -> Path:
    return dataset_folder(nnunet_results, dataset_id) / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"


def latest_training_log(fold_folder: str | Path) -> Path:
    logs = sorted(Path(fold_folder).glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise DatasetError(f"{fold_folder}: no training_log_*.txt (has nnUNetv2_train run?)")
    return logs[-1]


def parse_epoch_times(log_file: str | Path) -> list[float]:
    """Seconds per epoch from nnU-Net's ``training_log_*.txt`` (``<timestamp>: Epoch time: 51.23 s`` lines).
    Each covers the 250 training iterations and the 50 no-grad validation iterations of that epoch
    (on_epoch_start to on_epoch_end), not checkpointing, plotting or the final validation."""
    return [float(m.group(1)) for m in _EPOCH_TIME.finditer(Path(log_file).read_text(errors="replace"))]


def parse_epochs(log_file: str | Path) -> list[dict[str, Any]]:
    """Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``pseudo_dice`` (list), ``time_s``."""
    epochs: list[dict[str, Any]] = []
    for line in Path(log_file).read_text(errors="replace").splitlines():
        if (m := _EPOCH.search(line)) is not None:
            epochs.append({"epoch": int(m.group(1))})
        elif epochs and (m := _EPOCH_TIME.search(line)) is not None:
            epochs[-1]["time_s"] = float(m.group(1))
        elif epochs:
            for key, label in (("train_loss", ": train_loss "), ("val_loss", ": val_loss "), ("pseudo_dice", ": Pseudo dice ")):
                if label in line:
                    text = line.split(label, 1)[1].strip().replace("np.float32(", "").replace(")", "")
                    epochs[-1][key] = json.loads(text) if key == "pseudo_dice" else float(text)
    return epochs


def epoch_variants() -> dict[str, int]:
    """Trainer name -> epochs for the installed ``nnUNetTrainer_<N>epochs`` variants (read from source)."""
    found = sorted((peer_venv() / "lib").glob(f"python3*/site-packages/{TRAINING_LENGTH_MODULE}"))
    if not found:
        raise ConfigurationError(f"{peer_venv()}: {TRAINING_LENGTH_MODULE} not found")
    text = found[0].read_text()
    out = {}
    for m in re.finditer(r"class (nnUNetTrainer_\w+)\(nnUNetTrainer\):.*?self\.num_epochs = (\d+)", text, re.S):
        out[m.group(1)] = int(m.group(2))
    return out


# ----- network equality ------------------------------------------------------------------------------
def describe_network(net: Any, input_shape: Sequence[int], *, disable_deep_supervision: Any = None) -> dict[str, Any]:
    """Parameter count, multiset of leaf-layer signatures (type, channels, kernel, stride, padding, bias,
    eps, affine, slope) and output shapes for a seeded dummy input: in training mode (the deep-supervision
    list) and in inference mode (``disable_deep_supervision(net)`` first, if given). Runs in either venv."""
    import torch
    from collections import Counter

    torch.set_num_threads(1)  # tiny nets; leave the shared cores to others
    layers = Counter(_signature(m) for _, m in net.named_modules() if not list(m.children()))
    x = torch.randn(tuple(int(s) for s in input_shape), generator=torch.Generator().manual_seed(0))

    def shapes(out: Any) -> list[list[int]]:
        return [list(o.shape) for o in out] if isinstance(out, (list, tuple)) else [list(out.shape)]

    with torch.no_grad():
        net.train()
        train_shapes = shapes(net(x))
        if disable_deep_supervision is not None:
            disable_deep_supervision(net)
        net.eval()
        eval_shapes = shapes(net(x))
    return {"parameters": int(sum(p.numel() for p in net.parameters())), "layers": dict(sorted(layers.items())),
            "train_output_shapes": train_shapes, "eval_output_shapes": eval_shapes,
            "input_shape": list(x.shape), "torch": torch.__version__}


def _signature(m: Any) -> str:
    from torch import nn

    name = type(m).__name__
    if isinstance(m, nn.modules.conv._ConvNd):
        return (f"{name}(in={m.in_channels}, out={m.out_channels}, k={tuple(m.kernel_size)}, s={tuple(m.stride)}, "
                f"p={tuple(m.padding)}, bias={m.bias is not None})")
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return f"InstanceNorm({m.num_features}, eps={m.eps}, affine={m.affine}, running={m.track_running_stats})"
    if isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels:
        # autocmr computes instance norm as a group norm with one group per channel (same maths, faster kernel)
        return f"InstanceNorm({m.num_channels}, eps={m.eps}, affine={m.affine}, running=False)"
    if isinstance(m, nn.LeakyReLU):
        return f"LeakyReLU({m.negative_slope})"
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return f"{name}(p={m.p})"
    return name


def _describe_nnunet(plans_file: str, configuration: str, dataset_json: str) -> dict[str, Any]:
    """Peer venv side: the network nnU-Net's trainer builds for this configuration (its own code path)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans_file)
    cm = pm.get_configuration(configuration)
    dj = json.loads(Path(dataset_json).read_text())
    n_in, n_out = len(dj["channel_names"]), pm.get_label_manager(dj).num_segmentation_heads
    net = nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, True)
    d = describe_network(net, (cm.batch_size, n_in, *cm.patch_size),
                         disable_deep_supervision=lambda n: setattr(n.decoder, "deep_supervision", False))
    d.update(network_class=cm.network_arch_class_name, patch_size=list(cm.patch_size), batch_size=cm.batch_size,
             architecture=cm.configuration["architecture"], in_channels=n_in, num_classes=n_out)
    return d


def check_network(nnunet_plans_file: str | Path, configuration: str, *, dataset_json: str | Path | None = None,
                  autocmr_plans_file: str | Path | None = None, autocmr_configuration: str = "2d") -> dict[str, Any]:
    """Compare the network nnU-Net builds for ``configuration`` with autocmr's ``build_network`` for the same
    topology (derived from the plans, or taken from an autocmr plans file). ``equal`` is True when the
    parameter counts, the layer multisets and all output shapes agree; ``differences`` says what does not."""
    from autocmr.networks.unet import build_network

    plans_file = Path(nnunet_plans_file).resolve()
    dataset_json = Path(dataset_json) if dataset_json else plans_file.parent / "dataset.json"
    proc = subprocess.run([str(peer_python()), str(Path(__file__).resolve()), "_describe-nnunet", "--plans",
                           str(plans_file), "--config", configuration, "--dataset-json", str(dataset_json)],
                          env=_subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise PlansError(f"{plans_file}: nnU-Net could not build configuration {configuration!r}:\n{proc.stderr[-3000:]}")
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    differences = []
    topology = topology_from_architecture(peer["architecture"])
    if autocmr_plans_file is not None:
        from autocmr.planners.plans import Plans

        c = Plans.load(autocmr_plans_file).configuration(autocmr_configuration)
        # nnUNetTrainer always uses deep supervision (write_custom_plans refuses topologies without it)
        for what, ours, theirs in (("topology", replace(c.topology, deep_supervision=True), topology),
                                   ("patch_size", list(c.patch_size), peer["patch_size"]),
                                   ("batch_size", c.batch_size, peer["batch_size"])):
            if ours != theirs:
                differences.append(f"{what}: autocmr {ours} vs nnU-Net {theirs}")
        topology = c.topology
    net = build_network(topology, peer["in_channels"], peer["num_classes"])
    ours = describe_network(net, peer["input_shape"])
    for key in ("parameters", "train_output_shapes", "eval_output_shapes"):
        if ours[key] != peer[key]:
            differences.append(f"{key}: autocmr {ours[key]} vs nnU-Net {peer[key]}")
    for sig in sorted(set(ours["layers"]) | set(peer["layers"])):
        a, b = ours["layers"].get(sig, 0), peer["layers"].get(sig, 0)
        if a != b:
            differences.append(f"layer {sig}: autocmr x{a} vs nnU-Net x{b}")
    return {"equal": not differences, "differences": differences,
            "equal_except_transposed_conv_bias": _equal_except_tconv_bias(ours, peer, differences), "autocmr": ours,
            "nnunet": {k: v for k, v in peer.items() if k != "architecture"}}


def _equal_except_tconv_bias(ours: dict[str, Any], peer: dict[str, Any], differences: list[str]) -> bool:
    """True when the networks differ only in the transposed convolutions' bias. PlainConvUNet gives them
    ``conv_bias`` (no separate switch in the plans); a per-channel constant added before the next
    conv + InstanceNorm is removed by that norm (up to border effects of zero padding)."""
    def strip(layers: dict[str, int]) -> tuple[dict[str, int], int]:
        out: dict[str, int] = {}
        bias_params = 0
        for sig, count in layers.items():
            if sig.startswith("ConvTranspose"):
                if sig.endswith("bias=True)"):
                    bias_params += count * int(re.search(r"out=(\d+)", sig).group(1))
                sig = sig.replace("bias=True)", "bias=*)").replace("bias=False)", "bias=*)")
            out[sig] = out.get(sig, 0) + count
        return out, bias_params

    (a, a_bias), (b, b_bias) = strip(ours["layers"]), strip(peer["layers"])
    other = [d for d in differences if not d.startswith(("parameters", "layer ConvTranspose"))]
    return a == b and not other and ours["parameters"] - a_bias == peer["parameters"] - b_bias


def _subprocess_env() -> dict[str, str]:
    """Environment for peer-venv helpers that need no nnU-Net roots."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{peer_venv() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


# ----- command line ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Helpers for benchmarking against nnU-Net v2 (see benchmarks/README.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-network", help="compare nnU-Net's network for a configuration with autocmr's")
    check.add_argument("--plans", required=True, help="nnU-Net plans file (nnUNet_preprocessed/DatasetXXX/nnUNetPlans.json)")
    check.add_argument("--config", required=True, help="its configuration, e.g. 2d_autocmr_cpu")
    check.add_argument("--dataset-json", default=None, help="default: dataset.json next to the plans")
    check.add_argument("--autocmr-plans", default=None, help="also compare with this autocmr plans file's topology")
    check.add_argument("--autocmr-config", default="2d")
    write = sub.add_parser("write-plans", help="add a configuration with autocmr's network to an nnU-Net plans file")
    write.add_argument("--plans", required=True)
    write.add_argument("--autocmr-plans", required=True)
    write.add_argument("--autocmr-config", default="2d")
    write.add_argument("--name", default="2d_autocmr_cpu")
    sub.add_parser("epoch-variants", help="list the installed nnUNetTrainer_<N>epochs trainers")
    inner = sub.add_parser("_describe-nnunet")  # runs in the peer venv
    inner.add_argument("--plans", required=True)
    inner.add_argument("--config", required=True)
    inner.add_argument("--dataset-json", required=True)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ConfigurationError, DatasetError, PlansError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "_describe-nnunet":
        print(json.dumps(_describe_nnunet(args.plans, args.config, args.dataset_json)))
        return 0
    if args.command == "epoch-variants":
        print(json.dumps(epoch_variants(), indent=2))
        return 0
    if args.command == "write-plans":
        print(write_custom_plans_from_autocmr(args.plans, args.autocmr_plans, args.autocmr_config,
                                              configuration_name=args.name))
        return 0
    result = check_network(args.plans, args.config, dataset_json=args.dataset_json,
                           autocmr_plans_file=args.autocmr_plans, autocmr_configuration=args.autocmr_config)
    a, n = result["autocmr"], result["nnunet"]
    print(f"parameters: autocmr {a['parameters']:,} (torch {a['torch']}) | nnU-Net {n['parameters']:,} (torch {n['torch']})")
    print(f"input {a['input_shape']}; training outputs {a['train_output_shapes']}; inference {a['eval_output_shapes']}")
    print("EQUAL" if result["equal"] else "DIFFERENT:\n  " + "\n  ".join(result["differences"]))
    if not result["equal"] and result["equal_except_transposed_conv_bias"]:
        print("(only the transposed convolutions' bias differs: nnU-Net has it, autocmr does not)")
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
