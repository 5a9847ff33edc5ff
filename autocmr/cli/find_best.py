"""``autocmr_find_best``: choose the best configuration or ensemble by cross-validation.

Examples::

    autocmr_find_best -d 101 -c 2d 3d_fullres                     # models of dataset 101, CPU plans if trained
    autocmr_find_best -d 101 -m runs/2d_seed0 runs/2d_seed1 -o runs/selection --no-mirror
    autocmr_predict -i scans/ -o masks/ --selection runs/selection/selection.json

Each model's folds predict their own validation cases (probabilities cached in OUT/probabilities/), every
single model and every ensemble of up to --max-members models is scored on Dice and the clinical measures
(OUT/candidates/<name>/: summary.json, clinical.csv, slice-position breakdown), and the best by --rank-by is
recorded with its figures and postprocessing in OUT/selection.json. Exit code: 0 done, 2 bad options or
models.
"""
from __future__ import annotations

import argparse
import sys

from autocmr.cli.common import add_root_flags, apply_device_settings, roots_from, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_find_best", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples::", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id (101) or name: its raw data are scored")
    p.add_argument("-c", "--configurations", nargs="+", default=None,
                   help="configurations of the dataset's trained models (e.g. 2d 3d_fullres)")
    p.add_argument("-m", "--models", nargs="+", default=None, help="model folders (instead of -c)")
    p.add_argument("-p", "--plans", default=None,
                   help="plans name with -c (default: autocmrPlans_cpu on the CPU when trained, else autocmrPlans)")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: <results>/<dataset>/selection)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to use (default: every trained fold)")
    p.add_argument("--rank-by", default="dice",
                   help="dice (mean foreground Dice, default) or a clinical measure whose mean absolute "
                        "difference decides (LVM, RVEF, LVEF, LVEDV, ...)")
    p.add_argument("--max-members", type=int, default=2, help="largest ensemble tried (default 2; 1: no ensembles)")
    p.add_argument("--cache", default=None, help="probability cache folder (default: OUT/probabilities)")
    p.add_argument("--checkpoint", default="final", choices=("final", "best", "latest"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--no-mirror", action="store_true", help="no test-time mirroring (about 3x faster)")
    p.add_argument("--step", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("--plots", action="store_true", help="also write each candidate's evaluation plots")
    p.add_argument("-v", "--verbose", action="store_true")
    add_root_flags(p, "raw", "results")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.configurations) == bool(args.models):
        parser.error("give either -c CONFIGURATIONS or -m MODEL_FOLDERS")
    if not 0 < args.step <= 1:
        parser.error(f"--step must be in (0, 1], got {args.step}")
    setup_logging(args.verbose)

    def go() -> int:
        from pathlib import Path

        from autocmr.dataset.naming import resolve_dataset_name
        from autocmr.models.folder import ModelSpec
        from autocmr.inference.predictor import PredictorOptions
        from autocmr.selection.find_best import find_best_configuration

        apply_device_settings(args.device)

        roots = roots_from(args)
        name = resolve_dataset_name(args.dataset, roots.raw, roots.results)
        options = PredictorOptions(checkpoint=args.checkpoint, device=args.device, mirror=not args.no_mirror,
                                   step=args.step)
        models = args.models or [ModelSpec(name, c, args.plans, roots.results).resolve(args.device)
                                 for c in args.configurations]
        output = Path(args.output) if args.output else roots.results / name / "selection"
        result = find_best_configuration(models, roots.raw / name, output, folds=args.folds, options=options,
                                         rank_by=args.rank_by, max_members=args.max_members, cache_dir=args.cache,
                                         make_plots=args.plots)
        print(result.report())
        return 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
