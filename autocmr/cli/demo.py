"""``autocmr_demo``: the whole chain on generated phantoms in a few minutes on a CPU (quick start).

Generates a small phantom dataset, plans, trains for a short budget, predicts held-back phantom subjects,
evaluates them and prints the table. All files stay in the output folder (default ./autocmr_demo); a rerun
clears a folder an earlier demo made and refuses any other folder that is not empty.
Exit code: 0 done, 1 some held-back case could not be predicted, 2 bad options or output folder.
"""
from __future__ import annotations

import argparse
import sys

from autocmr.cli.common import apply_device_settings, at_least, positive_finite, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="autocmr_demo", help="folder for everything (default ./autocmr_demo)")
    p.add_argument("--minutes", type=positive_finite, default=4.0, help="training budget in minutes (default 4)")
    p.add_argument("--subjects", type=at_least(5), default=16,
                   help="phantom subjects to train on (default 16; at least 5, one per cross-validation fold)")
    p.add_argument("--test-subjects", type=at_least(1), default=4, help="held-back subjects to predict (default 4)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def go() -> int:
        from autocmr.demo import run_demo

        apply_device_settings(args.device)

        result = run_demo(args.output, minutes=args.minutes, n_subjects=args.subjects, n_test=args.test_subjects,
                          seed=args.seed, device=args.device)
        print(result.report)
        times = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        print(f"\nmean foreground Dice on {args.test_subjects} held-back phantom subjects: {result.mean_dice:.3f}")
        print(f"time: {times}")
        print(f"everything is in {result.folder}: raw/ preprocessed/ results/ predictions/ evaluation/ test/")
        for failure in result.failures:
            print(f"FAILED {failure}")
        return 1 if result.failures else 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
