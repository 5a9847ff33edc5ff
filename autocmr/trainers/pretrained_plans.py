"""Plans for fine-tuning: the pretrained model's configuration (network, patch, spacing) applied to a new
dataset, whose cases are preprocessed to those plans. The new dataset's own plans are not used."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autocmr.dataset.raw import CASES_CSV, DATASET_JSON, load_raw_dataset
from autocmr.errors import ConfigurationError, DatasetError
from autocmr.io.atomic import copy_file_atomic
from autocmr.models.folder import ModelFolder
from autocmr.planners.plans import Plans
from autocmr.preprocessing.preprocessor import preprocess_stale_cases
from autocmr.settings import Roots


def plans_for_finetuning(pretrained: str | Path, dataset_name: str, configuration: str, roots: Roots,
                         *, num_workers: int | None = None) -> Plans:
    model = ModelFolder.open(pretrained)
    if model.configuration.name != configuration:
        raise ConfigurationError(f"{model.path}: pretrained model is a '{model.configuration.name}' model; fine-tune "
                                 f"it with configuration '{model.configuration.name}', not '{configuration}'")
    raw_dir = roots.raw / dataset_name
    if not raw_dir.is_dir():
        raise DatasetError(f"{raw_dir}: fine-tuning preprocesses the new dataset's raw cases to the pretrained "
                           "plans, but the raw dataset is missing")
    raw = load_raw_dataset(raw_dir)
    if raw.dataset_json.num_channels != len(model.plans.channel_names):
        raise ConfigurationError(f"{model.path}: pretrained model takes {len(model.plans.channel_names)} channel(s), "
                                 f"{dataset_name} has {raw.dataset_json.num_channels}")
    source = model.plans.dataset_name.split("_")[0]
    plans = replace(model.plans, dataset_name=dataset_name, plans_name=f"{model.plans.plans_name}_from_{source}",
                    labels=dict(raw.dataset_json.labels), configurations={configuration: model.configuration})
    pre_dir = roots.preprocessed / dataset_name
    pre_dir.mkdir(parents=True, exist_ok=True)
    plans.save(pre_dir / f"{plans.plans_name}.json")
    for name in (DATASET_JSON, CASES_CSV):  # the model folder copies them from here
        if (raw_dir / name).is_file():
            copy_file_atomic(raw_dir / name, pre_dir / name)
    config = model.configuration
    preprocess_stale_cases(raw, plans, config, pre_dir / config.data_identifier, num_workers=num_workers)
    return plans
