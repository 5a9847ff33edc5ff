"""``autocmr_train DATASET CONFIGURATION FOLD [FOLD ...]``: train folds of a 5-fold, subject-level cross-validation.

Examples::

    autocmr_train 101 2d 0                          # CPU: 60 min budget and CPU plans by default
    autocmr_train 101 2d 0 --time-budget 20m --augmentation cross-domain
    autocmr_train 101 3d_fullres all --epochs 500   # all cases, no validation
    autocmr_train 101 2d 0 --continue               # resume after an interruption
    autocmr_train 101 2d 0 --num-gpus 4             # one fold, data-parallel on 4 GPUs of this machine
    torchrun --nproc_per_node 4 -m autocmr.cli.train 101 2d 0   # the same, started by torchrun (or srun)
    autocmr_train 101 2d 0 1 2 3 4 --devices cuda:0 cuda:1      # five folds, two at a time, one per GPU
    autocmr_train 130 2d 0 --pretrained ~/autocmr_data/results/Dataset101_ACDC/autocmrPlans_cpu__2d \\
        --freeze decoder                            # fine-tune on a few cases of a new site
"""
from __future__ import annotations

import argparse
import os
import sys

from autocmr.cli.common import (RERUN_WITH_CONTINUE, add_root_flags, apply_device_settings, at_least, roots_from,
                               run_command, setup_logging)


def _fold(text: str) -> str:
    """A fold argument: 'all' or a fold number, written canonically ('00' is fold 0, folder fold_0)."""
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"fold must be a number 0, 1, ... or 'all', got {text!r}")
    return str(int(text))


def _check_folds(args: argparse.Namespace) -> None:
    """What every fold would refuse, refused once before any fold trains (several folds would otherwise
    each report it, and the command exit 1 as if some folds had trained)."""
    from pathlib import Path

    from autocmr.dataset.naming import resolve_dataset_name
    from autocmr.errors import ConfigurationError, DatasetError, InputFileError
    from autocmr.trainers.run import check_plans_choice
    from autocmr.trainers.splits import check_fold_names

    check_plans_choice(args.plans, args.pretrained)
    repeated = sorted({f for f in args.fold if args.fold.count(f) > 1})
    if repeated:
        raise ConfigurationError(f"fold(s) {repeated} given more than once")
    roots = roots_from(args)
    if args.splits:  # once, for every use below (a shell leaves ~ in --splits=~/s.json as it is)
        args.splits = str(Path(args.splits).expanduser())
    if args.splits and not Path(args.splits).is_file():
        raise InputFileError(args.splits, "splits file not found")
    try:
        pre_dir = roots.preprocessed / resolve_dataset_name(args.dataset, roots.preprocessed)
    except DatasetError:
        if not args.pretrained:  # fine-tuning preprocesses the raw dataset itself
            name = resolve_dataset_name(args.dataset, roots.raw)  # raises when the dataset is nowhere
            raise DatasetError(f"{name} has not been planned yet; run `autocmr_plan -d {args.dataset}` "
                               "first") from None
        pre_dir = None
    check_fold_names(args.fold, pre_dir, args.splits)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_train", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples::", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset id (101) or name (Dataset101_ACDC)")
    p.add_argument("configuration", help="2d or 3d_fullres")
    p.add_argument("fold", nargs="+", type=_fold, help="fold 0-4, or 'all'; several folds train one after another "
                   "(or at once with --devices)")
    p.add_argument("-p", "--plans", default=None,
                   help="plans name (default: autocmrPlans_cpu on CPU, else autocmrPlans; not with --pretrained, "
                   "whose plans are used)")
    p.add_argument("--epochs", type=at_least(1), default=None,
                   help="number of epochs (default: 1000 on GPU; on CPU the time budget; "
                   "when fine-tuning, 25 passes over the training slices per training subject)")
    p.add_argument("--iterations", type=at_least(1), default=250,
                   help="training iterations per epoch (default 250; the most per epoch when the "
                   "fine-tuning schedule is chosen for you)")
    p.add_argument("--val-iterations", type=at_least(1), default=50, help="pseudo-Dice batches per epoch (default 50)")
    p.add_argument("--time-budget", default=None, help="wall-clock budget incl. final validation, e.g. 60m, 1h30m")
    p.add_argument("--lr", type=float, default=None,
                   help="initial learning rate, poly decay 0.9 (default 0.01; 0.001 with --pretrained)")
    p.add_argument("--augmentation", default="default", help="augmentation preset: default, cross-domain, none")
    p.add_argument("--elastic", action="store_true", help="add elastic deformation to the augmentation preset")
    p.add_argument("--end-slice-oversampling", type=float, default=0.0, metavar="SHARE",
                   help="2d: share of each batch drawn from the first and last labelled slice of a case, where the "
                   "base and apex are (default 0: slices drawn uniformly)")
    p.add_argument("--patch-placement", default="anywhere", choices=("anywhere", "inside"),
                   help="where training patches may lie: anywhere (centred on any voxel, up to half padding; the "
                   "recipe so far) or inside (nnU-Net's rule: within the image where the patch fits)")
    p.add_argument("--other-phase-dropout", type=float, default=0.2, metavar="P",
                   help="plans made with --other-phase: chance that a training sample sees itself in place of the "
                   "other phase, so that lone volumes are segmented as well (default 0.2)")
    p.add_argument("--dice-weight", type=float, default=1.0, metavar="W",
                   help="weight of the soft-Dice loss term beside cross-entropy (default 1, Dice + CE as nnU-Net; "
                   "0: cross-entropy only, whose optimum does not inflate uncertain borders the way soft Dice does)")
    p.add_argument("--dice-weight-end", type=float, default=None, metavar="W",
                   help="Dice weight at the end of the schedule: the weight goes linearly from --dice-weight to this "
                   "with the learning rate's progress (default: constant), e.g. 0 for Dice's fast start and a "
                   "cross-entropy finish")
    p.add_argument("--batch-size", type=at_least(1), default=None, help="override the plans' batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="network arithmetic: auto (fp16 mixed precision on CUDA, fp32 elsewhere), fp32, bf16 (mixed "
                   "precision; about 1.4-1.5x faster training on CPUs with Intel AMX or AMD's AVX512-BF16, slower on "
                   "others) or fp16 (CUDA)")
    p.add_argument("--num-workers", type=int, default=None, help="augmentation worker processes (0: in-process)")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--save-every", type=int, default=5, help="epochs between 'latest' checkpoints (default 5)")
    p.add_argument("--continue", dest="continue_training", action="store_true", help="resume from checkpoint_latest")
    p.add_argument("--allow-changed-options", action="store_true",
                   help="with --continue: resume even if options that change the result differ from the stored ones")
    p.add_argument("--splits", default=None, help="custom splits JSON: [{'train': [...], 'val': [...]}, ...]")
    p.add_argument("--no-final-validation", action="store_true", help="skip predicting the validation cases")
    p.add_argument("--no-mirror-validation", action="store_true", help="final validation without test-time mirroring")
    p.add_argument("--pretrained", default=None, help="model folder to fine-tune from (its plans are used)")
    p.add_argument("--freeze", default="none", choices=("none", "encoder", "decoder"),
                   help="part of the pretrained network to keep fixed (default none)")
    p.add_argument("--unfreeze-blocks", type=int, default=0,
                   help="with --freeze encoder: train the first N encoder stages anyway")
    p.add_argument("--num-gpus", "--num-processes", dest="num_processes", type=int, default=1, metavar="N",
                   help="data-parallel processes for one fold on this machine: one per GPU (nccl), or with "
                   "--device cpu N CPU processes (gloo). The plans' batch is split across them")
    p.add_argument("--devices", nargs="+", default=(), metavar="DEVICE",
                   help="train the folds at once, one process per device (e.g. cuda:0 cuda:1; 'cpu cpu' shares the "
                   "cores); folds are dealt out in turn")
    p.add_argument("--ddp-timeout", default="30m", help="a data-parallel rank waiting longer than this for the "
                   "others fails, ending the job (default 30m)")
    p.add_argument("-o", "--output", default=None, help="model folder to write (default under the results root)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_root_flags(p, "raw", "preprocessed", "results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def go() -> int:
        from autocmr.trainers.distributed_launch import TrainRequest, run_training
        from autocmr.trainers.options import TrainOptions, parse_duration

        apply_device_settings(args.device)

        options = TrainOptions(
            epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations=args.val_iterations,
            learning_rate=args.lr, augmentation=args.augmentation, elastic=args.elastic, seed=args.seed,
            end_slice_oversampling=args.end_slice_oversampling, patch_placement=args.patch_placement,
            precision=args.precision,
            other_phase_dropout=args.other_phase_dropout,
            dice_weight=args.dice_weight, dice_weight_end=args.dice_weight_end,
            device=args.device,
            time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
            num_workers=args.num_workers, batch_size=args.batch_size, save_every=args.save_every,
            final_validation=not args.no_final_validation, mirror_validation=not args.no_mirror_validation,
            pretrained=args.pretrained, freeze=args.freeze, unfreeze_blocks=args.unfreeze_blocks,
        )
        if args.num_processes < 1:
            from autocmr.errors import ConfigurationError

            raise ConfigurationError(f"--num-gpus must be >= 1, got {args.num_processes}")
        _check_folds(args)
        ddp_timeout_s = parse_duration(args.ddp_timeout)
        if ddp_timeout_s <= 0:
            from autocmr.errors import ConfigurationError

            raise ConfigurationError(f"--ddp-timeout must be longer than 0, got {args.ddp_timeout!r}")
        request = TrainRequest(args.dataset, args.configuration, args.fold[0], roots_from(args), options,
                               plans_name=args.plans, continue_training=args.continue_training,
                               splits_file=args.splits, output_dir=args.output,
                               allow_changed_options=args.allow_changed_options)
        # processes spawned for --num-gpus/--devices apply the allocator setting too, as entry points
        report = run_training(request, args.fold, num_processes=args.num_processes, devices=args.devices,
                              timeout_s=ddp_timeout_s, keep_freed_memory=True)
        for result in report.results.values():
            print(f"model written to {result.fold_dir} ({result.epochs} epochs)")
        for fold, error in sorted(report.failures.items()):
            print(f"error: fold {fold}: {error}", file=sys.stderr)
        return 1 if report.failures else 0

    code = run_command(go, on_interrupt=RERUN_WITH_CONTINUE)
    if _rank_of_a_launched_job():
        from autocmr.trainers.distributed import end_rank_process

        end_rank_process(code)  # no interpreter teardown under torch's leftover gloo threads (see there)
    return code


def _rank_of_a_launched_job() -> bool:
    """Whether torchrun/srun started this process as one rank of a data-parallel job."""
    from autocmr.errors import ConfigurationError
    from autocmr.trainers.distributed import launcher_context

    try:
        context = launcher_context(os.environ)
    except ConfigurationError:  # a malformed launcher environment: the command already said so
        return False
    return context is not None and context.enabled


if __name__ == "__main__":
    sys.exit(main())
