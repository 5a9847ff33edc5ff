"""Converters from public cardiac datasets and plain folders to autocmr's raw format (nnU-Net v2 + cases.csv).

Every converter returns the dataset folder, builds it in a hidden staging folder and moves it into place
only when all cases converted (see :mod:`autocmr.dataset.converters.common` for the overwrite policy), and
reports all per-case problems together in one :class:`autocmr.errors.DatasetError`.
"""
from __future__ import annotations

from typing import Any

from autocmr.dataset.converters.acdc import convert_acdc
from autocmr.dataset.converters.common import convert_staged, summarize_dataset
from autocmr.dataset.converters.generic import convert_folder
from autocmr.dataset.converters.mnms import convert_mnms


def __getattr__(name: str) -> Any:
    # The Sunnybrook converter needs pydicom and scikit-image; import it only when asked for.
    if name == "convert_sunnybrook":
        from autocmr.dataset.converters.sunnybrook import convert_sunnybrook

        return convert_sunnybrook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["convert_acdc", "convert_folder", "convert_mnms", "convert_staged", "convert_sunnybrook",
           "summarize_dataset"]
