"""The one table of file names that make up autocmr's folders (model folders, run folders, archives, predictions).

Every module that reads or writes one of these files takes its name from here, so a rename is one edit and
a model folder's layout is written down in one place. A model folder looks like::

    MODEL/
      model.json                 manifest: version, identity, sha256 of every weight file
      model_card.json            what the model was trained on, how, and how well it did (optional)
      plans.json dataset.json fingerprint.json splits.json cases.csv
      postprocessing.json intensity_reference.json
      fold_N/checkpoint_{final,best,latest}.pth  options.json  log.txt  validation/

and the output folder of ``autocmr_predict`` holds, beside the masks, ``predictions.json`` (what was predicted,
how and how fast) and ``failures.json`` (cases that failed, with the file at fault and why).
"""
from __future__ import annotations

from pathlib import PurePosixPath

MODEL_MANIFEST = "model.json"
MODEL_CARD = "model_card.json"
PLANS = "plans.json"
DATASET = "dataset.json"
FINGERPRINT = "fingerprint.json"
SPLITS = "splits.json"
CASES = "cases.csv"
POSTPROCESSING = "postprocessing.json"
INTENSITY_REFERENCE = "intensity_reference.json"
RUN_OPTIONS = "options.json"
RUN_LOG = "log.txt"
VALIDATION_DIR = "validation"
VALIDATION_SUMMARY = "summary.json"
CHECKPOINT_KINDS = ("final", "best", "latest")
FOLD_PREFIX = "fold_"
BATCH_PREDICTIONS = "predictions.json"
BATCH_FAILURES = "failures.json"
SELECTION = "selection.json"  # autocmr_find_best's choice of configuration or ensemble, with its CV figures

# The small documents a model folder carries beside its weights (all copied by export).
MODEL_DOCUMENTS = (PLANS, DATASET, FINGERPRINT, SPLITS, CASES, POSTPROCESSING, INTENSITY_REFERENCE, MODEL_CARD)
# What predicting and fine-tuning read: the compact shipped form keeps only these, so a packaged model does not
# redistribute its training set's per-case table (subjects' metadata), fingerprint or splits.
INFERENCE_DOCUMENTS = (PLANS, DATASET, POSTPROCESSING, INTENSITY_REFERENCE, MODEL_CARD)


def fold_dir_name(fold: str | int) -> str:
    return f"{FOLD_PREFIX}{fold}"


def checkpoint_name(kind: str) -> str:
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"unknown checkpoint {kind!r}; valid: {list(CHECKPOINT_KINDS)}")
    return f"checkpoint_{kind}.pth"


def checkpoint_relpath(fold: str | int, kind: str) -> str:
    """Path of a fold's checkpoint relative to the model folder, with '/' on every system (manifest key)."""
    return str(PurePosixPath(fold_dir_name(fold)) / checkpoint_name(kind))
