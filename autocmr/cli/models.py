"""``autocmr_models``: list, describe, verify, pack, export and import trained models.

Examples::

    autocmr_models list                                   # the default model and every imported one
    autocmr_models info                                   # model card of the default model
    autocmr_models info my_site_model
    autocmr_models export ~/autocmr_data/results/Dataset130_X/autocmrPlans_cpu__2d site_x.tar.gz --name site_x
    autocmr_models import site_x.tar.gz                   # then: autocmr_predict -i in/ -o out/ -m site_x
    autocmr_models pack MODEL_FOLDER autocmr/pretrained/default --name acdc_2d --cv-summary cv/summary.json
    autocmr_models verify site_x                          # sha256 of every weight file against the manifest
    autocmr_models upgrade OLD_MODEL_FOLDER               # folders written before manifests (in place)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autocmr.cli.common import positive_finite, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocmr_models", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples::", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="folder of imported models (default: $AUTOCMR_MODELS, else $AUTOCMR_HOME/models)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="installed models")
    for cmd, text in (("info", "print the model card"), ("verify", "check weight files against the manifest")):
        sub.add_parser(cmd, help=text).add_argument("model", nargs="?", default="default",
                                                    help="name or folder (default: the default model)")
    e = sub.add_parser("export", help="write a model folder to one archive")
    e.add_argument("model", help="name or folder")
    e.add_argument("archive", help="archive to write (.tar.gz)")
    e.add_argument("--name", default=None, help="name the model gets when imported (default: the name in its "
                                                "model.json, else its folder name)")
    e.add_argument("--checkpoints", nargs="+", default=["final"], choices=("final", "best", "latest"))
    e.add_argument("--replace", action="store_true", help="overwrite an existing archive of that name")
    i = sub.add_parser("import", help="install a model from an archive")
    i.add_argument("archive")
    i.add_argument("--name", default=None, help="install under this name (default: the archive's)")
    i.add_argument("--replace", action="store_true", help="replace an installed model of the same name")
    i.add_argument("--max-gib", type=positive_finite, default=None, metavar="GIB",
                   help="refuse an archive whose files add up to more (default: 16; never more than the free "
                        "space less 1 GiB)")
    k = sub.add_parser("pack", help="write the compact shipped form (float16 weights, manifest, card)")
    k.add_argument("model", help="trained model folder")
    k.add_argument("dest", help="folder to write (replaced as a whole), e.g. autocmr/pretrained/default")
    k.add_argument("--name", required=True, help="model name in the manifest and card")
    k.add_argument("-f", "--folds", nargs="+", default=None, help="folds to keep (default: all trained)")
    k.add_argument("--checkpoint", default="final", choices=("final", "best", "latest"))
    k.add_argument("--full-precision", action="store_true", help="keep float32 weights")
    k.add_argument("--cv-summary", type=Path, default=None,
                   help="evaluation summary.json of the pooled cross-validation (figures of the card)")
    k.add_argument("--domains", type=Path, default=None,
                   help="results JSON of benchmarks/model_domains.py: the card's figures on a simulated scanner "
                   "change and another vendor's scans beside the in-domain ones")
    k.add_argument("--card-json", type=Path, default=None,
                   help="JSON object of card fields to set (intended_use, data_licence, training: {recipe...})")
    sub.add_parser("upgrade", help="convert a folder written before manifests, in place").add_argument("folder")
    for command in sub.choices.values():  # also after the command (import ARCHIVE --models-dir D), as users type it
        command.add_argument("--models-dir", default=argparse.SUPPRESS, metavar="DIR",
                             help="folder of imported models (as before the command)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_command(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    from autocmr.models import commands

    if args.command == "list":
        print(commands.list_text(args.models_dir))
    elif args.command == "info":
        print(commands.info_text(args.model, models_dir=args.models_dir))
    elif args.command == "verify":
        print(commands.verify_text(args.model, models_dir=args.models_dir))
    elif args.command == "export":
        from autocmr.models.archive import export_model

        archive = export_model(_model_ref(args), args.archive, checkpoints=args.checkpoints, name=args.name,
                               replace=args.replace)
        print(f"exported to {archive}")
    elif args.command == "import":
        from autocmr.models.archive import GIB, MAX_IMPORT_BYTES, import_model

        limit = MAX_IMPORT_BYTES if args.max_gib is None else int(args.max_gib * GIB)
        dest = import_model(args.archive, name=args.name, models_dir=args.models_dir, replace=args.replace,
                            max_bytes=limit)
        from autocmr.settings import resolve_models_dir

        # the other commands find installed models in $AUTOCMR_MODELS: say so when --models-dir put it elsewhere
        found = dest.parent.resolve() == resolve_models_dir(None).resolve()
        prefix = "" if found else f"AUTOCMR_MODELS={dest.parent} "
        print(f"installed {dest}; use it with: {prefix}autocmr_predict -i IN -o OUT -m {dest.name}")
    elif args.command == "pack":
        extra = None
        if args.card_json:
            try:
                extra = json.loads(args.card_json.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                from autocmr.errors import InputFileError

                raise InputFileError(args.card_json, f"cannot read the card fields ({exc})") from exc
        manifest = commands.pack_with_card(args.model, args.dest, name=args.name, folds=args.folds,
                                           checkpoint=args.checkpoint, half=not args.full_precision,
                                           cv_summary=args.cv_summary, extra=extra,
                                           domains=args.domains)
        print(f"packed {len(manifest.weights)} weight file(s) into {args.dest}")
    elif args.command == "upgrade":
        from autocmr.models.store import upgrade_model_folder

        manifest = upgrade_model_folder(args.folder)
        print(f"{args.folder}: manifest written with {len(manifest.weights)} checksum(s)")
    return 0


def _model_ref(args: argparse.Namespace) -> str:
    from autocmr.models.registry import resolve_model

    return str(resolve_model(args.model, models_dir=args.models_dir))


if __name__ == "__main__":
    sys.exit(main())
