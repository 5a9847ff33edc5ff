"""``autocmr_evaluate``: compare predicted label maps with references; metrics, clinical agreement, plots."""
from __future__ import annotations

import argparse
import sys

from autocmr.cli.common import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocmr_evaluate",
        description="Evaluate predicted label maps against reference label maps (files matched by name). "
                    "Writes summary.json, cases.csv, clinical.csv and plots into the output folder and prints "
                    "per-class Dice, IoU, HD95 and ASSD and the agreement of clinical measures.")
    parser.add_argument("-ref", "--reference", required=True, help="folder of reference label maps")
    parser.add_argument("-pred", "--prediction", required=True, nargs="+",
                        help="folder of predicted label maps, or several pooled (e.g. MODEL/fold_*/validation: a "
                             "whole cross-validation; needs -o)")
    parser.add_argument("-meta", "--metadata", default=None,
                        help="cases.csv with case_id, subject, phase (ED/ES), group, vendor, ... "
                             "(default: cases.csv in or beside the reference folder, if any)")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (default: <pred>/evaluation, or <pred>/comparison with --compare)")
    parser.add_argument("--by", nargs="+", default=None, metavar="COLUMN",
                        help="metadata columns to break results down by, e.g. phase group vendor; "
                             "slice_position: volume error, Dice and added/missed slices by position in the "
                             "reference LV (basal/mid/apical thirds, above the base, below the apex)")
    parser.add_argument("--base-end", default="auto", choices=("auto", "first", "last"),
                        help="with --by slice_position: which end of the slice stack is basal; auto decides "
                             "per subject from the reference anatomy (default)")
    parser.add_argument("--compare", default=None, metavar="PRED_B",
                        help="second prediction folder: paired comparison with -pred (Wilcoxon test)")
    parser.add_argument("--labels", default=None,
                        help="classes as JSON text or file ({\"LV\": 1, ...} or a dataset.json); "
                             "default: autocmr LV=1 MYO=2 RV=3")
    parser.add_argument("--ignore-pred-labels", type=int, nargs="+", default=[], metavar="VALUE",
                        help="predicted label values to count as background, e.g. 3 (RV) when the reference "
                             "annotates LV and MYO only")
    parser.add_argument("--file-ending", default=".nii.gz", help="image file ending (default .nii.gz)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only, no PNG plots")
    parser.add_argument("-j", "--workers", type=int, default=1, help="worker processes (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = dict(labels=args.labels, metadata=args.metadata, by=args.by, file_ending=args.file_ending,
                   num_workers=args.workers, make_plots=not args.no_plots)

    def go() -> int:
        from pathlib import Path

        from autocmr.errors import ConfigurationError

        from autocmr.evaluation.evaluate import DEFAULT_OUTPUT_SUBDIR
        from autocmr.io.atomic import check_output_folder

        prediction = args.prediction[0] if len(args.prediction) == 1 else args.prediction
        # a wrong -o fails now, not once every case is scored; so does the default beside a read-only prediction
        first = Path(args.prediction[0]).expanduser()  # not a folder: the scoring names that problem itself
        if args.output or first.is_dir():
            check_output_folder(args.output or first / ("comparison" if args.compare else DEFAULT_OUTPUT_SUBDIR))
        if args.compare:
            from autocmr.evaluation.compare import compare_predictions

            if len(args.prediction) > 1:
                raise ConfigurationError("--compare takes one prediction folder for -pred")
            output = args.output or str(Path(prediction) / "comparison")
            result = compare_predictions(args.reference, prediction, args.compare, output,
                                         ignore_labels=args.ignore_pred_labels, base_end=args.base_end, **options)
        else:
            from autocmr.evaluation.evaluate import evaluate_folders

            result = evaluate_folders(args.reference, prediction, args.output,
                                      ignore_labels=args.ignore_pred_labels, base_end=args.base_end, **options)
        print(result.report())
        print(f"\nResults written to {result.output_dir}")
        # as every command: 1 when it ran but some cases could not be evaluated (listed under "failures" in
        # summary.json); reference cases without a prediction are listed too, but a subset predicted is no error
        evaluated = [result.a, result.b] if args.compare else [result]
        return 1 if any(not f.missing for r in evaluated for f in r.failures) else 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
