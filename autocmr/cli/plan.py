"""``autocmr_plan``: check a raw dataset, fingerprint it, write plans (GPU and CPU targets), preprocess.

Examples::

    autocmr_plan -d 101                      # both targets, 2d and 3d_fullres
    autocmr_plan -d 101 --target cpu -c 2d   # only what a CPU 2d training needs
    autocmr_plan -d 101 --context-slices 1   # 2d sees each slice with its neighbours ("2.5D")
    autocmr_plan -d 101 --other-phase        # ED and ES volumes of a subject see each other
"""
from __future__ import annotations

import argparse
import sys

from autocmr.cli.common import add_root_flags, at_least, roots_from, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autocmr_plan", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("Examples::", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (101) or name (Dataset101_ACDC)")
    parser.add_argument("--target", nargs="+", choices=("gpu", "cpu"), default=["gpu", "cpu"],
                        help="hardware the plans are sized for (default: both; plans autocmrPlans / autocmrPlans_cpu)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None, choices=("2d", "3d_fullres"),
                        help="configurations to preprocess (default: all planned)")
    parser.add_argument("-j", "--num-workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--no-check", action="store_true", help="skip the integrity check (not recommended)")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plans, do not preprocess")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the intensity sampling (default 0)")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2d configuration: give the network slices z-K..z+K as input channels (default 0: "
                             "the slice alone); the preprocessed data are the same for every K")
    parser.add_argument("--other-phase", action="store_true",
                        help="give the network the subject's other cardiac phase (ES beside ED, ED beside ES) as "
                             "input channels; pairs come from cases.csv (subject, phase), lone volumes see "
                             "themselves; the preprocessed data are the same")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_root_flags(parser, "raw", "preprocessed")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_workers is not None and args.num_workers < 1:
        parser.error(f"-j/--num-workers must be >= 1, got {args.num_workers}")
    if args.context_slices < 0:
        parser.error(f"--context-slices must be >= 0, got {args.context_slices}")
    setup_logging(args.verbose)

    def go() -> int:
        from autocmr.planners.plan_dataset import plan_dataset
        from autocmr.planners.plans import Plans

        result = plan_dataset(args.dataset, roots_from(args), targets=args.target, configurations=args.configurations,
                              num_workers=args.num_workers, check=not args.no_check, preprocess=not args.plan_only,
                              seed=args.seed, context_slices=args.context_slices,
                              other_phase=args.other_phase)
        for path in result.plans_files:
            plans = Plans.load(path)
            print(f"{path}")
            for c in plans.configurations.values():
                print(f"  {c.name:<11} spacing {tuple(round(s, 3) for s in c.spacing)} patch {c.patch_size} "
                      f"batch {c.batch_size} stages {c.topology.n_stages} features {c.topology.features[0]}-"
                      f"{c.topology.features[-1]} data {c.data_identifier}"
                      + (f" context slices {c.context_slices}" if c.context_slices else "")
                      + (" other phase" if c.other_phase else ""))
        for ident, n in result.preprocessed.items():
            print(f"preprocessed {ident}: {n} case(s) written, {result.skipped.get(ident, 0)} up to date")
        return 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
