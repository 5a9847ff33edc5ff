"""``autocmr_merge_parts OUT``: merge the per-part tables of a prediction split with ``--num-parts``.

Examples::

    autocmr_merge_parts masks/                       # after every part has finished
    autocmr_merge_parts masks/ --allow-incomplete    # merge the parts there so far (warnings name what is missing)

Writes ``failures.json``, ``predictions.json`` and one table per ``NAME_partK.csv`` (measures, volumes, QC)
into OUT; the part files are kept. Exit code: 0 merged and no case failed, 1 merged with failed cases,
2 nothing to merge, parts missing or inconsistent, or a later run without parts wrote OUT/predictions.json.
"""
from __future__ import annotations

import argparse
import sys

from autocmr.cli.common import run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_merge_parts", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples::", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the output folder the parts predicted into")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="merge even when some parts have not written their tables (yet), stopped before they "
                        "finished, are still running, or found other inputs (each named in a warning)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def go() -> int:
        from autocmr.inference.parts import merge_parts

        report = merge_parts(args.output, allow_incomplete=args.allow_incomplete)
        print(report.summary())
        return 0 if report.ok else 1

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
