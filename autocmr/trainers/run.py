"""`autocmr_train`: set up one fold's run (plans, data, splits, model folder) and train it."""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from autocmr.dataset.naming import resolve_dataset_name
from autocmr.dataset.raw import DatasetJson, load_metadata
from autocmr.device import make_current, resolve_device
from autocmr.documents.layout import (CASES, DATASET, FINGERPRINT, INTENSITY_REFERENCE, PLANS, POSTPROCESSING,
                                      RUN_LOG, SPLITS, VALIDATION_DIR, checkpoint_name, fold_dir_name)
from autocmr.documents.manifest import ModelManifest
from autocmr.documents.plans import CPU_PLANS_NAME, Plans, default_plans_name
from autocmr.errors import AutocmrError, ConfigurationError, DatasetError
from autocmr.models.folder import ModelFolder, model_folder_name
from autocmr.io.atomic import copy_file_atomic, remove_stale_temporaries, write_json_atomic
from autocmr.io.locks import held
from autocmr.networks.unet import build_network
from autocmr.preprocessing import storage
from autocmr.settings import Roots
from autocmr.trainers.checkpoint import check_resumable, data_settings, fold_cases, load_checkpoint
from autocmr.trainers.distributed import DistributedContext, quiet_log, rank_device
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.progress import RunLog
from autocmr.trainers.run_folder import (check_plans_of_trained_folds, check_resume_options, check_resumed_run,
                                         finish_fold, other_trained_folds, start_fold, write_run_options)
from autocmr.trainers.schedule import resolve_schedule
from autocmr.trainers.splits import load_or_create_splits, read_splits, select_fold
from autocmr.trainers.trainer import Trainer

logger = logging.getLogger(__name__)
TRAINING_LOCK = ".training.lock"  # beside the fold's checkpoints: who trains it now
REFERENCE_CASES = 50  # training cases the intensity reference is built from: 50 describe it well


@dataclass(frozen=True)
class TrainResult:
    fold_dir: Path
    epochs: int
    validation: dict[str, Any]


def choose_plans_name(folder: Path, requested: str | None, device: torch.device) -> str:
    if requested:
        return requested
    return default_plans_name(device.type, cpu_plans_exist=(folder / f"{CPU_PLANS_NAME}.json").is_file())


def check_plans_choice(plans_name: str | None, pretrained: str | None) -> None:
    """Fine-tuning trains with the pretrained model's plans (its network, its preprocessing): plans named as
    well would not be used, so the two together are refused rather than one of them ignored."""
    if plans_name and pretrained:
        raise ConfigurationError(f"-p/--plans {plans_name} and --pretrained {pretrained} given together: a fine-tuned "
                                 "model is trained with the pretrained model's plans; leave out -p")


def _identity(plans: Plans, configuration: str) -> ModelManifest:
    return ModelManifest(plans.dataset_name, plans.plans_name, configuration)


def _prepare_model_dir(model_dir: Path, pre_dir: Path, plans: Plans, configuration: str, fold: str | int,
                       folds: list[dict[str, Any]] | None, log: Callable[[str], None]) -> None:
    """Copy the dataset's documents into the model folder. ``folds``: the partition this run uses (a --splits
    file's, or the dataset's), written as the folder's splits; without one (fold 'all'), the dataset's unless
    the folder has splits already (its cross-validation folds were trained with them: keep them)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    plans.save(model_dir / PLANS)
    keep_splits = bool(folds) or (model_dir / SPLITS).is_file()
    for name in (DATASET, FINGERPRINT, CASES) + (() if keep_splits else (SPLITS,)):
        if (pre_dir / name).is_file():
            copy_file_atomic(pre_dir / name, model_dir / name)
    if folds:
        stored = model_dir / SPLITS
        previous = _read_folds(stored) if stored.is_file() else None
        if previous is not None and previous != folds:
            log(f"WARNING: {stored} is replaced by this run's splits; folds trained before with the old ones are "
                "not comparable with this fold (retrain them with the same --splits)")
        write_json_atomic(stored, folds)
    start_fold(model_dir, _identity(plans, configuration), fold)  # its checkpoints are about to be rewritten


def _check_before_writing(options: TrainOptions, device: torch.device, dim: int, model_dir: Path) -> str:
    """What the trainer or its loader would refuse later, refused before the model folder is touched (a run
    from epoch 0 removes the fold's earlier checkpoints first). Returns the precision the run trains in."""
    from autocmr.precision import resolve_precision

    precision = resolve_precision(options.precision, device, training=True)
    if options.end_slice_oversampling and dim != 2:
        raise ConfigurationError(f"--end-slice-oversampling needs the 2d configuration, this one is {dim}D")
    if options.pretrained and Path(options.pretrained).expanduser().resolve() == Path(model_dir).resolve():
        raise ConfigurationError(f"--pretrained {options.pretrained} is the folder this run trains into: fine-tune "
                                 "into another folder (-o), or the pretrained weights would be replaced")
    return precision


def _finished_epochs(resumed: dict[str, Any]) -> int:
    return int((resumed.get("state") or {}).get("epoch", 0))


def _check_not_past_end(resumed: dict[str, Any], options: TrainOptions, path: Path) -> None:
    """A run cannot be shortened after the fact: its learning rate followed the longer schedule, so resuming it
    with fewer ``--epochs`` would record a model of N epochs that is not one."""
    done = _finished_epochs(resumed)
    if options.epochs and done > options.epochs:
        raise ConfigurationError(f"{path}: the run has trained {done} epochs already, more than --epochs "
                                 f"{options.epochs}; train the shorter run from epoch 0 (without --continue, or into "
                                 "another folder with -o)")


def _holding_fold(fold_dir: Path, fold: str | int, is_main: bool) -> contextlib.AbstractContextManager[None]:
    """Rank 0 holds the fold's folder while it trains (:mod:`autocmr.io.locks`): the same fold started twice
    (two terminals, a requeued job racing the original) is refused at once, naming the holder."""
    if not is_main:
        return contextlib.nullcontext()
    return held(fold_dir / TRAINING_LOCK, lambda holder: ConfigurationError(
        f"{fold_dir}: fold {fold} is being trained by {holder}; wait for it to end (then --continue if it "
        "stopped early), or train into another folder (-o)"))


def _forget_earlier_run(fold_dir: Path, log: Callable[[str], None]) -> None:
    """A fold trained again from epoch 0 removes what its earlier run left: until this run's first save, a
    ``--continue`` (a requeued job) would resume the old checkpoint, or keep its final weights as this run's,
    and its validation masks (another split's cases, perhaps) would decide the postprocessing."""
    stale = [fold_dir / checkpoint_name(which) for which in ("latest", "final", "best")]
    stale = [path for path in stale if path.is_file()]
    validation_dir = fold_dir / VALIDATION_DIR
    removed = [p.name for p in stale] + ([f"{VALIDATION_DIR}/"] if validation_dir.is_dir() else [])
    for path in stale:
        path.unlink()
    if validation_dir.is_dir():
        shutil.rmtree(validation_dir)
    if removed:
        log(f"training from epoch 0: removed the earlier run's {', '.join(removed)} (to resume a run instead, "
            "use --continue)")


def _forget_folder_documents(model_dir: Path, fold: str | int, log: Callable[[str], None]) -> None:
    """A fold trained from epoch 0 with no other trained fold beside it owns the folder's documents derived
    from training: its earlier run's intensity reference (other training cases, perhaps) and postprocessing
    (inherited from another ``--pretrained``, or decided from validation masks now removed) would otherwise be
    kept as this run's, since both are written only where none exists. This run writes them again."""
    if other_trained_folds(model_dir, fold):
        return  # theirs as much as this fold's: the final validation decides the postprocessing again
    stale = [model_dir / name for name in (INTENSITY_REFERENCE, POSTPROCESSING) if (model_dir / name).is_file()]
    for path in stale:
        path.unlink()
    if stale:
        log(f"training from epoch 0 with no other trained fold in {model_dir}: removed the earlier run's "
            f"{', '.join(p.name for p in stale)} (this run writes them again)")


def _read_folds(path: Path) -> list[dict[str, Any]] | None:
    try:
        return read_splits(path)
    except AutocmrError:
        return None  # unreadable: replaced without a comparison


def train(dataset: str | int, configuration: str, fold: str | int, roots: Roots, *, options: TrainOptions,
          plans_name: str | None = None, continue_training: bool = False, splits_file: str | Path | None = None,
          output_dir: str | Path | None = None, distributed: DistributedContext | None = None,
          allow_changed_options: bool = False) -> TrainResult:
    """Train one fold (see the module doc); returns where it was written and the validation summary.

    ``distributed``: this process's rank in a data-parallel job whose process group is already joined
    (:mod:`autocmr.trainers.distributed_launch` does that); rank 0 alone writes into the model folder.
    ``allow_changed_options``: with ``continue_training``, resume even when result-changing options differ
    from the stored ones (otherwise refused, naming them).

    CPU training runs ~15 % faster with :func:`autocmr.allocator.keep_freed_memory`, a process-wide allocator
    setting that ``autocmr_train`` applies; callers of this function opt in by calling it first.
    """
    start_time = time.monotonic()  # the time budget counts from here
    check_plans_choice(plans_name, options.pretrained)
    if options.pretrained:  # fine-tuning preprocesses the raw cases to the pretrained plans itself
        name = resolve_dataset_name(dataset, roots.preprocessed, roots.raw)
    else:
        try:
            name = resolve_dataset_name(dataset, roots.preprocessed)
        except DatasetError:
            name = resolve_dataset_name(dataset, roots.raw)  # raises when the dataset is nowhere
            raise DatasetError(f"{name} has not been planned yet; run `autocmr_plan -d {dataset}` first") from None
    pre_dir = roots.preprocessed / name
    if not pre_dir.is_dir() and not options.pretrained:
        raise DatasetError(f"{pre_dir}: no preprocessed data; run `autocmr_plan -d {dataset}` first")
    dist = distributed or DistributedContext()
    device = rank_device(resolve_device(options.device), dist)
    make_current(device)
    if device.type == "cuda":
        # every batch has the configuration's one patch shape: cuDNN times its algorithms once and keeps the
        # fastest (nnU-Net does the same); the CPU ignores the flag
        torch.backends.cudnn.benchmark = True
    dist.wait_for_main()  # rank 0 preprocesses fine-tuning data and creates the splits before the others look
    if options.pretrained:
        from autocmr.trainers.pretrained_plans import plans_for_finetuning

        plans = plans_for_finetuning(options.pretrained, name, configuration, roots)
    else:
        plans = Plans.load(pre_dir / f"{choose_plans_name(pre_dir, plans_name, device)}.json")
    config = plans.configuration(configuration)
    data_dir = pre_dir / config.data_identifier
    cases = storage.list_cases(data_dir) if data_dir.is_dir() else []
    if not cases:
        raise DatasetError(f"{data_dir}: no preprocessed cases for {configuration}; run `autocmr_plan -d {dataset}`")
    metadata = load_metadata(roots.raw / name if (roots.raw / name).is_dir() else pre_dir, cases)
    subjects: dict[str, list[str]] = {}
    for case_id, subject in metadata["subject"].items():
        subjects.setdefault(str(subject), []).append(str(case_id))
    if splits_file:
        folds = read_splits(Path(splits_file))
    elif str(fold) == "all":
        folds = []
    else:
        folds = load_or_create_splits(pre_dir / SPLITS, subjects)
    train_cases, val_cases = select_fold(folds, fold, cases, source=str(splits_file or pre_dir / SPLITS),
                                         subject_of={str(c): str(s) for c, s in metadata["subject"].items()})
    dist.main_done()
    model_dir = (Path(output_dir) if output_dir
                 else roots.results / name / model_folder_name(plans.plans_name, configuration))
    fold_dir = model_dir / fold_dir_name(fold)
    # one training per fold folder at a time: two would interleave checkpoints and delete each other's temporaries
    with _holding_fold(fold_dir, fold, dist.is_main):
        log = RunLog(fold_dir / RUN_LOG) if dist.is_main else quiet_log
        if dist.is_main:
            remove_stale_temporaries(fold_dir)  # a run killed while writing a checkpoint leaves its temporary file
            remove_stale_temporaries(fold_dir / VALIDATION_DIR)  # or while writing a validation mask (we hold
            # the fold: no other process writes there now)
        options = resolve_schedule(options, device, log,
                                   training_samples=_training_samples(data_dir, train_cases, config),
                                   training_subjects=metadata.loc[train_cases, "subject"].nunique(),
                                   batch_size=options.batch_size or config.batch_size)
        latest = fold_dir / checkpoint_name("latest")
        resuming = continue_training and latest.is_file()
        if continue_training and not resuming:
            kept = [n for n in (checkpoint_name("final"), checkpoint_name("best")) if (fold_dir / n).is_file()]
            if kept:  # starting over would delete them: a finished fold (exported with its final weights only)
                raise ConfigurationError(f"--continue: {fold_dir} has {' and '.join(kept)} but no {latest.name}, so "
                                         "there is no run to resume, and training from epoch 0 would replace "
                                         "them; run without --continue to train this fold again")
            log(f"--continue: no {latest.name} in {fold_dir}, so this fold starts from epoch 0")
        resumed = load_checkpoint(latest) if resuming else None
        changes = (check_resume_options(fold_dir, options, allow_changes=allow_changed_options, log=log,
                                        checkpoint_options=resumed.get("options")) if resumed is not None else [])
        if resumed is not None:
            _check_not_past_end(resumed, options, latest)
        check_plans_of_trained_folds(model_dir, plans, configuration, fold)
        precision = _check_before_writing(options, device, config.dim, model_dir)
        cases = fold_cases(train_cases, val_cases)
        if resumed is not None:
            changes += check_resumed_run(latest, resumed, cases=cases, precision=precision, requested=options,
                                         device_type=device.type, allow_changes=allow_changed_options, log=log,
                                         data=data_settings(config))
        torch.manual_seed(options.seed)
        network = build_network(config.topology, config.input_channels(len(plans.channel_names)), len(plans.labels))
        trainable, pretrained = None, None
        if options.pretrained:  # before check_resumable: --freeze decides which parameters the optimizer trains
            from autocmr.trainers.finetune import freeze, load_pretrained

            pretrained = ModelFolder.open(options.pretrained)
            report = load_pretrained(network, pretrained, plans.labels)
            trainable = freeze(network, options.freeze, options.unfreeze_blocks)
            log(f"fine-tuning from {options.pretrained}: {report}; freeze={options.freeze}, "
                f"{sum(p.numel() for p in trainable)} trainable parameters")
        if resumed is not None:  # before anything is written: a refused resume leaves the model folder as it was
            check_resumable(resumed, network=network, plans_name=plans.plans_name, configuration=configuration,
                            path=latest, parameters=trainable)
        if dist.is_main:
            if not resuming:
                _forget_earlier_run(fold_dir, log)
                _forget_folder_documents(model_dir, fold, log)
            _prepare_model_dir(model_dir, pre_dir, plans, configuration, fold, folds or None, log)
            write_run_options(fold_dir, options, str(device), changes, resuming=resuming, precision=precision,
                              cases=cases, resumed_after=_finished_epochs(resumed) if resumed is not None else None)
        raw_folder = roots.raw / name if (roots.raw / name).is_dir() else None
        partners = _phase_partners(metadata, data_dir, log) if config.other_phase else {}
        trainer = Trainer(network=network, plans=plans, config=config, data_folder=data_dir, train_cases=train_cases,
                          val_cases=val_cases, output_dir=fold_dir, options=options, device=device, log=log,
                          parameters=trainable, start_time=start_time, distributed=dist, partners=partners)
        if resumed is not None:
            trainer.restore(resumed)
            # the epoch lines count from 0: the next one logged is "epoch N"
            log(f"resumed from {latest} after {trainer.state.epoch} finished epoch(s)")
        if dist.is_main:
            _write_intensity_reference(model_dir, data_dir, train_cases)
        finished_before = resumed is not None and trainer.finished()  # --continue of a finished fold
        try:
            trainer.run()
        except torch.cuda.OutOfMemoryError as exc:
            raise AutocmrError(f"out of GPU memory with batch {trainer.batch_size} and patch {config.patch_size}; "
                               "lower --batch-size or train with the CPU-target plans (-p autocmrPlans_cpu)") from exc
        except MemoryError as exc:
            raise AutocmrError("out of memory; lower --batch-size or --num-workers") from exc
        if dist.is_main:
            finish_fold(model_dir, _identity(plans, configuration), fold)  # sha256 of its checkpoints
        summary: dict[str, Any] = {}
        if options.final_validation and val_cases:
            from autocmr.trainers.validation import decide_model_postprocessing, kept_validation, run_final_validation

            file_ending = DatasetJson.load(pre_dir / DATASET).file_ending
            settings = trainer.validation_settings()
            kept = kept_validation(settings, file_ending) if finished_before and dist.is_main else None
            if dist.broadcast([kept is not None])[0]:  # the ranks share the validation: all skip it, or none
                summary = kept or {}
                log(f"final validation of these weights already in {fold_dir / VALIDATION_DIR}: kept (remove that "
                    "folder to predict it again)")
            else:
                summary = run_final_validation(settings, raw_folder, file_ending, metadata=metadata)
            if raw_folder is not None and dist.is_main:
                decide_model_postprocessing(model_dir, raw_folder, plans.foreground_labels, file_ending)
            log(f"final validation: {_dice_line(summary)}")
        if pretrained is not None and dist.is_main and not (model_dir / POSTPROCESSING).is_file():
            _inherit_postprocessing(model_dir, pretrained, plans.labels, log)
        return TrainResult(fold_dir, trainer.state.epoch, summary)


def _phase_partners(metadata: Any, data_dir: Path, log: Any) -> dict[str, str]:
    """Each case's other cardiac phase (:func:`autocmr.preprocessing.other_phase.case_phases`: ``cases.csv``'s
    subject and phase, else ``_ED``/``_ES`` names), where the two lie on the same voxel grid."""
    from autocmr.preprocessing.other_phase import case_phases, phase_partners

    partners = phase_partners(case_phases(metadata), lambda c: storage.load_properties(data_dir, c))
    if partners:
        log(f"other phase: {len(partners)} of {len(metadata)} cases paired with their subject's other phase")
    else:
        log(f"warning: other phase: none of the {len(metadata)} cases found its subject's other phase (cases.csv "
            "needs subject and phase columns with ED/ES, or case names ending in _ED/_ES), so the network learns "
            "from each image paired with itself and gains nothing from the other-phase channels")
    return partners


def _inherit_postprocessing(model_dir: Path, pretrained: ModelFolder, labels: dict[str, int], log: Any) -> None:
    """A fine-tuned model without its own validation (few cases, fold ``all``) keeps the pretrained model's
    postprocessing, labels matched by name. Without it, stray islands far from the heart survive: on ACDC they
    raised HD95 several-fold and cost fine-tuned models their Dice gain."""
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.trainers.finetune import head_channel_map

    stored = pretrained.read_json(POSTPROCESSING)
    if not stored:
        return
    old = PostprocessingDecision.from_dict(stored, source=Path(pretrained.path) / POSTPROCESSING)
    new_value = {old_value: new for new, old_value in head_channel_map(pretrained.plans.labels, labels).items()}
    per_label = tuple(new_value[v] for v in old.per_label_lcc if v in new_value)
    evidence = {"inherited_from": str(Path(pretrained.path).resolve())}
    PostprocessingDecision(old.foreground_lcc, per_label, evidence).save(model_dir / POSTPROCESSING)
    log(f"postprocessing inherited from {pretrained.path}: foreground LCC {old.foreground_lcc}, per label {per_label}")


def _training_samples(data_dir: Path, cases: list[str], config: Any) -> int:
    """What one training patch is drawn from: a slice of a case for 2D configurations, a case for 3D."""
    if len(config.patch_size) == 3:
        return len(cases)
    return sum(int(storage.load_properties(data_dir, c)["shape_after_resampling"][0]) for c in cases)


def _dice_line(summary: dict[str, Any]) -> str:
    classes = summary.get("classes", {})
    parts = []
    for cname, stats in classes.items():
        dice = stats.get("dice") if isinstance(stats, dict) else None
        value = dice.get("mean") if isinstance(dice, dict) else dice
        if value is not None:
            parts.append(f"{cname} Dice {value:.4f}")
    return ", ".join(parts) or "see validation/summary.json"


def reference_cases(train_cases: list[str], count: int = REFERENCE_CASES) -> list[str]:
    """The training cases the intensity reference is built from: ``count`` of them at evenly spaced places in
    id order, so the same cases every time. Not the first ``count``: datasets number their cases by group
    (ACDC's 100 patients by pathology, 20 each), and the first 50 would describe two or three groups only."""
    ordered = sorted(train_cases)
    if len(ordered) <= count:
        return ordered
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def _write_intensity_reference(model_dir: Path, data_dir: Path, train_cases: list[str]) -> None:
    from autocmr.inference.harmonisation import build_reference, save_reference

    path = model_dir / INTENSITY_REFERENCE
    if path.is_file():
        return
    images = (storage.load_arrays(data_dir, c)[0] for c in reference_cases(train_cases))
    save_reference(path, build_reference(images))


