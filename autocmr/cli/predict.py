"""``autocmr_predict -i IN -o OUT``: segment every image in a folder (NIfTI 3D, 4D cine, DICOM series).

Examples::

    autocmr_predict -i scans/ -o masks/                        # the default model shipped with autocmr
    autocmr_predict -i scans/ -o masks/ -d 101 -c 2d           # trained model of dataset 101, all folds
    autocmr_predict -i scans/ -o masks/ -d 101                 # what autocmr_find_best -d 101 chose
    autocmr_predict -i scans/ -o masks/ -m ~/models/acdc_2d    # a copied model folder
    autocmr_predict -i dicom_study/ -o masks/ -d 101 -c 2d -f 0 --device cpu
    autocmr_predict -i scans/ -o masks/ -d 101 -c 2d --num-parts 4 --part-id 2   # one of four machines
    autocmr_predict -i scans/ -o masks/ -d 101 -c 2d --devices cuda:0 cuda:1      # one process per GPU
    autocmr_predict -i dicom_study/ -o masks/ -d 101 -c 2d --output-format both  # + DICOM-SEG per series

Masks (``NAME.nii.gz``, uint8: 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity) have the exact
header of their input; a 4D cine gets a 4D mask (by default full accuracy on its ED and ES frames, a fast
pass on the others; ``--cine full`` for every frame). DICOM series are also written as NIfTI under
``OUT/images_from_dicom/``; ``--output-format dicom-seg|both`` writes ``NAME_seg.dcm`` (or ``NAME_seg/``,
one file per cardiac phase) referencing the source images. ``OUT/failures.json`` lists cases that could
not be predicted and why. ``measures.csv``, ``volumes.csv``, ``qc.csv``, ``figures/`` and ``report.html``
(volumes, ED/ES, EF, LV mass and quality control per subject) are written beside the masks.
Exit code: 0 all cases predicted, 1 some failed, 2 bad options or model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autocmr.cli.common import (RERUN_WITH_CONTINUE, add_root_flags, apply_device_settings, run_command,
                               setup_logging)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_predict", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples::", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", required=True, help="folder of images / DICOM (or a single file)")
    p.add_argument("-o", "--output", required=True, help="folder for the masks (created if needed)")
    model = p.add_mutually_exclusive_group()  # neither: the default model shipped with autocmr
    model.add_argument("-m", "--model", default=None,
                       help="model folder (holds plans.json and fold_N/), 'default' (the model shipped with autocmr, "
                            "used when neither -m nor -d is given) or the name of a model installed with "
                            "autocmr_models import")
    model.add_argument("-d", "--dataset", default=None, help="dataset id (101) or name of a trained model")
    model.add_argument("--selection", default=None, metavar="SELECTION_JSON",
                       help="selection.json of autocmr_find_best: the model or ensemble chosen by cross-validation, "
                            "with its folds and postprocessing")
    p.add_argument("-c", "--configuration", default=None, help="configuration with -d: 2d or 3d_fullres")
    p.add_argument("-p", "--plans", default=None,
                   help="plans name with -d (default: autocmrPlans_cpu on the CPU when trained, else autocmrPlans)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ensemble (default: all available)")
    # defaults None: a selection refuses any explicit value, the default's name included (resolved below)
    p.add_argument("--checkpoint", default=None, choices=("final", "best", "latest"),
                   help="which checkpoint of each fold (default final)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--no-mirror", action="store_true", help="no test-time mirroring (faster, slightly worse)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="network arithmetic: auto (bf16 on a CPU where it is faster: Intel AMX, or AVX512-BF16 on "
                        "AMD; else fp32; the fast cine pass in fp16 on CUDA), or one of fp32, bf16, fp16 (CUDA) for "
                        "every pass")
    p.add_argument("--step", type=float, default=0.5, help="sliding-window step as a fraction of the patch "
                                                           "(default 0.5; 1 is faster)")
    p.add_argument("--continue", dest="continue_", action="store_true",
                   help="skip cases an earlier run finished (mask written and recorded, from the same input files: "
                        "same size and time); the rest are predicted")
    p.add_argument("--num-parts", type=int, default=1, help="split the cases over this many runs (default 1)")
    p.add_argument("--part-id", type=int, default=0, help="which part this run does, 0..num-parts-1")
    p.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="one worker process per device (e.g. cuda:0 cuda:1), each predicting a part of the cases; "
                        "the parts are merged at the end and the folder analysed once, as one run (with "
                        "--num-parts, per machine: merge with autocmr_merge_parts)")
    p.add_argument("--worker-timeout", type=float, default=None, metavar="SECONDS",
                   help="a case whose reading, export or writing in a worker process takes longer fails (its worker "
                        "is stopped) and the batch goes on: for inputs on network file systems that can hang "
                        "(default: no limit; needs worker processes, -j 1 or more)")
    p.add_argument("--save-probabilities", action="store_true", help="also write NAME_probabilities.npz (float16)")
    p.add_argument("--postprocess", default=None, choices=("auto", "on", "off"),
                   help="largest-component postprocessing: auto (as chosen at training), on, off")
    p.add_argument("--harmonise", action="store_true",
                   help="match image intensities to the training set (histogram matching)")
    p.add_argument("--output-format", default="nifti", choices=("nifti", "dicom-seg", "both"),
                   help="masks as NIfTI (default), DICOM-SEG referencing the source series, or both; DICOM-SEG "
                        "applies to DICOM inputs only (others get NIfTI, with a warning)")
    p.add_argument("--cine", default="fast", choices=("fast", "full"),
                   help="4D cines: fast (one fold, no mirroring over all frames, full accuracy on ED and ES; "
                        "default) or full (every frame at full accuracy, slower)")
    p.add_argument("--cine-fast-region", default="heart", choices=("heart", "whole"),
                   help="what the fast cine pass predicts: a window around the heart found on two frames "
                        "(default) or whole slices")
    p.add_argument("--cine-screen", default="on", choices=("on", "off"),
                   help="fast cine path: rule out a near tie of ED or ES, or a fast-pass frame that beats them, on "
                        "its uncertain slices predicted at full accuracy before refining the whole frame (default on; "
                        "README, fast cine path)")
    p.add_argument("--cine-tie-tolerance", type=_percent, default=1.0, metavar="PERCENT",
                   help="fast cine path: a frame whose full-accuracy LV volume could beat ED's or ES's by less than "
                        "this is left to the fast pass (default 1; 0 = the full path's ED/ES frames whenever the "
                        "fast pass cannot rule a frame out, slower; README, fast cine path)")
    p.add_argument("--metadata", default=None, metavar="CASES_CSV",
                   help="cases.csv (case_id, subject, phase) pairing ED/ES files into subjects for the measures "
                        "(default: a cases.csv in or beside the input folder; else names _ED/_ES, _frameNN + Info.cfg)")
    p.add_argument("--no-analysis", action="store_true",
                   help="masks only: no measures.csv, volumes.csv, qc.csv, figures/ or report.html")
    p.add_argument("-j", "--num-workers", type=int, default=None,
                   help="processes reading and writing cases (0: none; default: a few)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_root_flags(p, "results")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    by_dataset = args.dataset is not None
    if by_dataset and not args.configuration:  # the dataset's choice by cross-validation, if one was made
        args.selection, args.dataset = _recorded_selection(parser, args), None
    if not by_dataset and (args.configuration or args.plans or args.results):
        given = ", ".join(flag for flag, value in (("-c/--configuration", args.configuration),
                                                   ("-p/--plans", args.plans), ("--results", args.results)) if value)
        parser.error(f"{given}: these choose a model by -d/--dataset (not -m/--model, --selection or the default "
                     "model)")
    if not 0 < args.step <= 1:
        parser.error(f"--step {args.step:g}: give a fraction of the patch in (0, 1] (0.5 is the default)")
    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        parser.error(f"--part-id {args.part_id} of --num-parts {args.num_parts}: the parts are numbered "
                     f"0..{max(args.num_parts, 1) - 1}, and there is at least one")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"-j/--num-workers {args.num_workers}: give 0 (all in this process) or more worker processes")
    if args.worker_timeout is not None and not args.worker_timeout > 0:
        parser.error(f"--worker-timeout {args.worker_timeout:g}: give a number of seconds above 0")
    if args.folds and len(set(args.folds)) != len(args.folds):
        parser.error(f"-f/--folds {' '.join(args.folds)}: a fold given twice would count twice in the ensemble")
    if args.metadata is not None:  # found and read now, not after every case is predicted
        if not Path(args.metadata).expanduser().is_file():
            parser.error(f"--metadata {args.metadata}: no such file")
        from autocmr.analysis.subjects import read_metadata
        from autocmr.errors import InputFileError

        try:
            read_metadata(Path(args.metadata).expanduser())
        except InputFileError as exc:
            parser.error(f"--metadata {exc}")
    if args.selection is not None:  # what the selection path does not do: refused, not silently ignored
        chosen = [flag for flag, given in (("-f/--folds", args.folds), ("--checkpoint", args.checkpoint is not None),
                                           ("--postprocess", args.postprocess is not None)) if given]
        if chosen:
            parser.error(f"{', '.join(chosen)}: the selection fixes its members' folds, checkpoint and "
                         "postprocessing (see its selection.json); predict with -m MODEL to choose them")
        unsupported = [flag for flag, given in (("--num-parts", args.num_parts != 1), ("--devices", args.devices),
                                                ("--worker-timeout", args.worker_timeout is not None),
                                                ("--output-format", args.output_format != "nifti"),
                                                ("--save-probabilities", args.save_probabilities)) if given]
        if unsupported:
            parser.error(f"--selection does not support {', '.join(unsupported)} yet; predict with -m MODEL "
                         "for those")
    setup_logging(args.verbose)

    def go() -> int:
        from functools import partial

        from autocmr.analysis.pipeline import analyse_batch
        from autocmr.inference.batch import ModelSpec, PredictorOptions, predict_folder
        apply_device_settings(args.device)

        model = (ModelSpec(args.dataset, args.configuration, args.plans, args.results) if args.dataset is not None
                 else args.model or "default")
        options = PredictorOptions(folds=tuple(args.folds) if args.folds else None,
                                   checkpoint=args.checkpoint or "final", device=args.device,
                                   mirror=not args.no_mirror, step=args.step, postprocess=args.postprocess or "auto",
                                   harmonise=args.harmonise, precision=args.precision)
        if args.selection:  # the configuration or ensemble chosen by autocmr_find_best (autocmr.selection)
            from autocmr.selection.apply import predict_with_selection

            report = predict_with_selection(args.input, args.output, args.selection, options=options,
                                            continue_=args.continue_, num_workers=args.num_workers,
                                            cine=_cine_options(args), phase_pairs=_phase_pairs(args))
            if not args.no_analysis:  # the selection's predictions.json makes OUT an ordinary output folder
                from autocmr.analysis.pipeline import analyse_output_folder

                analyse_output_folder(args.output, metadata=args.metadata)
            print(report.summary())
            return 0 if report.ok else 1
        if args.devices:  # one process per device, each a part of this run (autocmr.inference.multi_device)
            from autocmr.inference.multi_device import predict_on_devices

            predict_folder = partial(predict_on_devices, devices=args.devices,  # noqa: F811 - same call below
                                     keep_freed_memory=True)  # the CLI's allocator setting, in every child too
        # the clinical analysis (measures, QC, figures, report.html) runs after each part's batch
        analysis = None if args.no_analysis else partial(analyse_batch, metadata=args.metadata)
        # devices of this machine alone are merged at the end: the folder is then analysed once, as one run
        # (one report.html; a subject whose ED and ES fell to two devices paired), not per device
        whole_folder = analysis is not None and bool(args.devices) and args.num_parts == 1 and len(args.devices) > 1
        report = predict_folder(args.input, args.output, model, options=options, continue_=args.continue_,
                                num_parts=args.num_parts, part_id=args.part_id,
                                save_probabilities=args.save_probabilities, num_workers=args.num_workers,
                                cine=_cine_options(args),
                                output_format=args.output_format,
                                after_batch=None if whole_folder else analysis, subject_of=_subject_of(args),
                                worker_timeout_s=args.worker_timeout,
                                phase_pairs=_phase_pairs(args))
        if whole_folder and getattr(report, "merge", None) is not None:
            from autocmr.analysis.pipeline import analyse_output_folder

            analyse_output_folder(args.output, metadata=args.metadata)
        elif whole_folder:  # a device failed: nothing merged; the rerun with --continue analyses the folder
            print("not analysed: a device's part did not finish; rerun the same command with --continue",
                  file=sys.stderr)
        print(report.summary())  # stdout: what scripts read (the batch logs it at debug level only)
        return 0 if report.ok else 1

    from autocmr.parent_watch import finishing_on_sigterm

    # a cluster's time limit (SIGTERM) records the finished cases as Ctrl-C does; the merge knows it stopped
    with finishing_on_sigterm(f"recording the cases finished so far; {RERUN_WITH_CONTINUE}"):
        return run_command(go, on_interrupt=RERUN_WITH_CONTINUE)


def _recorded_selection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``-d 101`` without ``-c``: the configuration or ensemble ``autocmr_find_best -d 101`` chose by
    cross-validation and recorded in ``<results>/<dataset>/selection/selection.json``."""
    from autocmr.cli.common import roots_from
    from autocmr.dataset.naming import resolve_dataset_name
    from autocmr.errors import AutocmrError

    if args.plans:
        parser.error("-p/--plans: with -d and no -c the dataset's selection.json names its models; give -c too")
    roots = roots_from(args)
    try:
        name = resolve_dataset_name(args.dataset, roots.raw, roots.results)
    except AutocmrError as exc:
        parser.error(f"-d {args.dataset}: {exc}")
    recorded = roots.results / name / "selection" / "selection.json"
    if not recorded.is_file():
        parser.error(f"-d/--dataset needs -c/--configuration (e.g. -c 2d), or a choice made by cross-validation: "
                     f"no {recorded} (autocmr_find_best -d {args.dataset} -c 2d 3d_fullres writes it)")
    print(f"predicting with the selection autocmr_find_best recorded: {recorded}", file=sys.stderr)
    return str(recorded)


def _subject_of(args: argparse.Namespace):
    """How a split run (``--num-parts``, ``--devices``) keeps a subject's cases in one part: by name, and by the
    ``cases.csv`` the analysis pairs them with (``--metadata``, or found in or beside the input folder)."""
    from functools import partial

    from autocmr.analysis.subjects import find_metadata, read_metadata
    from autocmr.inference.parts import subject_key

    if not (args.num_parts > 1 or args.devices):
        return subject_key  # one part: nothing to deal out
    path = args.metadata or find_metadata(args.input)
    return partial(subject_key, metadata=read_metadata(path)) if path is not None else subject_key


def _phase_pairs(args: argparse.Namespace):
    """How a model that takes the other cardiac phase finds it among 3D inputs: the subjects the analysis
    measures (``cases.csv`` from ``--metadata`` or in or beside the input folder, ``_ED``/``_ES`` names, ACDC
    ``_frameNN`` with ``Info.cfg``)."""
    from functools import partial

    from autocmr.analysis.subjects import find_metadata, phase_pairs_of_jobs

    # a partial of a module function: picklable for --devices' child processes
    return partial(phase_pairs_of_jobs, metadata_path=args.metadata or find_metadata(args.input))


def _percent(text: str) -> float:
    """A percentage in [0, 100), for argparse (its error names the option and the value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"a percentage in [0, 100) is expected, got {text}")
    return value


def _cine_options(args: argparse.Namespace):
    from autocmr.inference.fast_cine import CineOptions

    return CineOptions(mode=args.cine, fast_precision=args.precision, fast_region=args.cine_fast_region,
                       screen=args.cine_screen == "on", tie_tolerance=args.cine_tie_tolerance / 100)


if __name__ == "__main__":
    sys.exit(main())
