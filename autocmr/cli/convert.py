"""``autocmr_convert``: convert public cardiac datasets or plain folders to autocmr's raw format, and check them.

Examples::

    autocmr_convert acdc /data/ACDC/training -d 101
    autocmr_convert mnms /data/MnMs --info /data/MnMs/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv -d 114
    autocmr_convert folder --images imgs/ --labels masks/ -d 120 --name MyCine --label-map '{"1": 3, "3": 1}'
    autocmr_convert sunnybrook /data/sunnybrook/SC-HF-I-1 -d 130
    autocmr_convert check -d 101

Exit code: 0 converted (or no problem found), 1 some source files were skipped (listed in
conversion_skipped.json) or the check found problems, 2 nothing converted or bad options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autocmr.cli.common import run_command

DESCRIPTION = "Convert cardiac MR datasets to autocmr's raw format (nnU-Net v2 layout + cases.csv), or check one."
DEFAULT_IDS = {"acdc": 101, "mnms": 114, "sunnybrook": 130}
DEFAULT_NAMES = {"acdc": "ACDC", "mnms": "MnMs", "sunnybrook": "Sunnybrook"}


def _common(parser: argparse.ArgumentParser, command: str, *, workers: bool = True) -> None:
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_IDS.get(command),
                        required=command not in DEFAULT_IDS,
                        help="dataset id NNN of DatasetNNN_Name" + (f" (default {DEFAULT_IDS[command]})"
                                                                    if command in DEFAULT_IDS else ""))
    parser.add_argument("--name", default=DEFAULT_NAMES.get(command), required=command not in DEFAULT_NAMES,
                        help="dataset short name" + (f" (default {DEFAULT_NAMES[command]})"
                                                     if command in DEFAULT_NAMES else ""))
    parser.add_argument("--raw", type=Path, default=None, help="raw data root (default: $AUTOCMR_RAW, "
                                                               "else $AUTOCMR_HOME/raw)")
    if workers:
        parser.add_argument("-j", "--num-workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset folder (only once the new conversion succeeded)")
    if command in ("acdc", "sunnybrook"):
        parser.add_argument("--strict", action="store_true",
                            help="fail on any bad file and write nothing (default: skip the bad frames or images, "
                                 "list them in conversion_skipped.json and convert the rest)")


def _file_ending(text: str) -> str:
    from autocmr.io.image import IMAGE_SUFFIXES

    if text.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: give one of {', '.join(IMAGE_SUFFIXES)} (with the dot)")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autocmr_convert", description=DESCRIPTION,
                                     epilog=__doc__.split("Examples::", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("acdc", help="ACDC challenge layout (patientNNN/ with Info.cfg)")
    p.add_argument("source", type=Path, help="folder of patientNNN folders")
    _common(p, "acdc")
    p = sub.add_parser("mnms", help="M&Ms challenge layout (CODE/CODE_sa.nii.gz + information CSV)")
    p.add_argument("source", type=Path, help="M&Ms folder (subject folders anywhere below)")
    p.add_argument("--info", type=Path, required=True, help="the M&Ms dataset information CSV")
    _common(p, "mnms")
    p = sub.add_parser("folder", help="a folder of image/label pairs matched by name")
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--labels", type=Path, required=True, help="folder of labels (may be the images folder)")
    p.add_argument("--label-map", default=None, help='label value mapping as JSON (or a JSON file), e.g. '
                                                     '\'{"1": 3, "3": 1}\'')
    p.add_argument("--metadata", type=Path, default=None, help="CSV with a case_id column (subject, phase, ...)")
    p.add_argument("--file-ending", default=".nii.gz", type=_file_ending,
                   help="file ending of the images and labels (.nii.gz, .nii, .mha or .nrrd)")
    _common(p, "folder")
    p = sub.add_parser("sunnybrook", help="one Sunnybrook Cardiac Data study (cine DICOM + LV contours)")
    p.add_argument("source", type=Path, help="the study folder (with dicom/ and contours/)")
    _common(p, "sunnybrook", workers=False)
    p = sub.add_parser("check", help="check a raw dataset's integrity (exit code 1 on errors)")
    p.add_argument("-d", "--dataset", required=True, help="dataset id (101) or name (Dataset101_ACDC)")
    p.add_argument("--raw", type=Path, default=None, help="raw data root")
    p.add_argument("-j", "--num-workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--tolerance", type=float, default=None, help="geometry tolerance (default 1e-3)")
    return parser


def _convert(args: argparse.Namespace) -> Path:
    from autocmr.dataset import converters

    options = {"short_name": args.name, "overwrite": args.overwrite}
    if args.command == "acdc":
        return converters.convert_acdc(args.source, args.raw, args.dataset_id, num_workers=args.num_workers,
                                       strict=args.strict, **options)
    if args.command == "mnms":
        return converters.convert_mnms(args.source, args.info, args.raw, args.dataset_id,
                                       num_workers=args.num_workers, **options)
    if args.command == "folder":
        return converters.convert_folder(args.images, args.labels, args.raw, args.dataset_id,
                                         label_map=args.label_map, metadata_csv=args.metadata,
                                         file_ending=args.file_ending, num_workers=args.num_workers, **options)
    from autocmr.dataset.converters.sunnybrook import convert_sunnybrook

    # it stages its own output (converters.common): wrapping it again would name a staging folder in its errors
    return convert_sunnybrook(args.source, args.raw, args.dataset_id, strict=args.strict, **options)


def _check(args: argparse.Namespace) -> int:
    from autocmr.dataset.integrity import check_dataset
    from autocmr.dataset.naming import resolve_dataset_name
    from autocmr.parallel import default_workers
    from autocmr.settings import resolve_roots

    raw = resolve_roots(raw=args.raw).raw
    folder = raw / resolve_dataset_name(args.dataset, raw)
    options = {} if args.tolerance is None else {"tolerance": args.tolerance}
    report = check_dataset(folder, num_workers=args.num_workers or default_workers(), **options)
    print(report.format())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        if args.command == "check":
            return _check(args)
        folder = _convert(args)
        from autocmr.dataset.converters import summarize_dataset
        from autocmr.dataset.converters.common import SKIPPED_JSON

        print(folder)
        print(summarize_dataset(folder))
        # Source files skipped by the partial-skip policy are failed cases: exit 1, as every batch command.
        return 1 if (folder / SKIPPED_JSON).is_file() else 0

    return run_command(go)


if __name__ == "__main__":
    sys.exit(main())
