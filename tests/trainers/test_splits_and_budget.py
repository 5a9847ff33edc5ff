"""``--splits`` (a custom partition decides the validation cases and is the one the model folder keeps), the
final-validation time reserve of ``--time-budget``, and the allocator setting applied by ``autocmr_train`` (for
its own process and those it spawns) but never by the Python API unless asked."""
from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from autocmr import allocator
from autocmr.cli.train import main as train_main
from autocmr.documents.plans import Plans
from autocmr.errors import ConfigurationError
from autocmr.planners.plan_dataset import plan_dataset
from autocmr.settings import resolve_roots
from autocmr.trainers import distributed_launch, validation
from autocmr.device import ChildSettings
from autocmr.trainers.distributed_launch import TrainRequest, run_training
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.run import _prepare_model_dir, train
from autocmr.trainers.splits import load_or_create_splits
from autocmr.trainers.trainer import VALIDATION_MARGIN

DATASET = 972
NAME = "Dataset972_Phantom"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    from autocmr.testing.phantoms import write_phantom_dataset

    base = tmp_path_factory.mktemp("splits")
    roots = resolve_roots(raw=base / "raw", preprocessed=base / "pre", results=base / "res")
    write_phantom_dataset(roots.raw, n_subjects=5, dataset_id=DATASET, fov_mm=120)
    plan_dataset(DATASET, roots, targets=("cpu",), configurations=("2d",), num_workers=1, check=False)
    return roots


@pytest.fixture
def allocator_calls(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda *a, **k: calls.append(1) or True)
    return calls


def _cases(roots) -> list[str]:
    table = (roots.raw / NAME / "cases.csv").read_text(encoding="utf-8").splitlines()[1:]
    return sorted(line.split(",")[0] for line in table)


def _cli(roots, out, *extra: str) -> int:
    return train_main([str(DATASET), "2d", "0", "--iterations", "2", "--val-iterations", "1",
                       "--num-workers", "0", "--batch-size", "2", "--device", "cpu", "--augmentation", "none",
                       "-o", str(out), "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                       "--results", str(roots.results), *extra])


def test_splits_choose_validation_cases_and_the_budget_reserves_their_time(roots, tmp_path, monkeypatch,
                                                                           allocator_calls) -> None:
    """One short CLI run checks three things (training is the slow part, so it runs once)."""
    cases = _cases(roots)
    val = [c for c in cases if c.startswith(cases[-1].rsplit("_", 1)[0])]  # the last subject's ED and ES
    splits = tmp_path / "my_splits.json"
    custom = [{"train": [c for c in cases if c not in val], "val": val}]
    splits.write_text(json.dumps(custom), encoding="utf-8")
    subjects: dict[str, list[str]] = {}
    for case in cases:
        subjects.setdefault(case.rsplit("_", 1)[0], []).append(case)
    default = load_or_create_splits(roots.preprocessed / NAME / "splits.json", subjects)  # the dataset's own
    assert default != custom
    per_case = 4.0  # the one-case timing the reserve is scaled from, fixed so the reserve is known
    monkeypatch.setattr(validation, "time_one_case", lambda settings: per_case)
    reserve = VALIDATION_MARGIN * per_case * len(val) + 10.0
    out = tmp_path / "model"
    # the reserve takes the whole budget: the first epoch (it always runs) and no more, however fast the machine
    assert _cli(roots, out, "--splits", str(splits), "--epochs", "20", "--time-budget", f"{reserve / 2:.2f}",
                "--no-mirror-validation") == 0

    predicted = sorted(p.name.removesuffix(".nii.gz") for p in (out / "fold_0" / "validation").glob("*.nii.gz"))
    assert predicted == sorted(val)  # --splits decided the validation cases
    # and the model folder records that partition, not the dataset's default one it used to copy
    assert json.loads((out / "splits.json").read_text(encoding="utf-8")) == custom
    state = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)["state"]
    assert state["reserve_s"] == pytest.approx(reserve)
    assert state["epoch"] == 1  # 20 epochs asked, the budget minus the reserve ended the run
    log = (out / "fold_0" / "log.txt").read_text(encoding="utf-8")
    assert f"final validation estimated at {reserve:.0f} s ({per_case:.1f} s per case)" in log
    assert allocator_calls == [1]  # the command applies the allocator setting for CPU work


@pytest.mark.parametrize("content,message", [
    ('[{"train": ["nobody_ED"], "val": []}]', "nobody_ED"),
    ('{"train": []}', "splits must be a list"),
    ("[{", "cannot read splits"),
])
def test_bad_splits_files_fail_before_training_naming_the_file(roots, tmp_path, capsys, content, message) -> None:
    splits = tmp_path / "bad_splits.json"
    splits.write_text(content, encoding="utf-8")
    assert _cli(roots, tmp_path / "model", "--epochs", "1", "--splits", str(splits)) == 2
    err = capsys.readouterr().err
    assert message in err and "bad_splits.json" in err
    assert not (tmp_path / "model" / "fold_0" / "checkpoint_final.pth").exists()


def test_the_train_api_leaves_the_allocator_alone(roots, tmp_path, allocator_calls) -> None:
    """Before issue 13, train() changed the allocator right after choosing the device, before reading the
    splits; a run that fails on its splits shows that it no longer does."""
    splits = tmp_path / "bad_splits.json"
    splits.write_text('{"train": []}', encoding="utf-8")
    options = TrainOptions(epochs=1, num_workers=0, device="cpu")
    with pytest.raises(ConfigurationError, match="splits must be a list"):
        train(DATASET, "2d", 0, roots, options=options, splits_file=splits, output_dir=tmp_path / "model")
    assert allocator_calls == []


class _Spawned(BaseException):  # a sentinel, not an error: passes run_command (which maps errors to exit codes)
    """Raised in place of starting a training process; carries the arguments the process would have got."""


class _NoSpawnContext:
    """Stands in for the ``spawn`` multiprocessing context: records the first process instead of starting it."""

    def Pipe(self, duplex: bool = True):  # noqa: N802 - multiprocessing's name
        return multiprocessing.Pipe(duplex=duplex)

    def Process(self, *, target, name, args):  # noqa: N802
        raise _Spawned(args)


def _child_settings(spawned: pytest.ExceptionInfo) -> ChildSettings:
    return next(a for a in spawned.value.args[0] if isinstance(a, ChildSettings))


@pytest.mark.parametrize("flags", [("--devices", "cpu", "cpu"), ("--num-gpus", "2")])
def test_the_command_has_its_spawned_processes_keep_freed_memory(roots, tmp_path, monkeypatch, allocator_calls,
                                                                   flags) -> None:
    monkeypatch.setattr(distributed_launch.multiprocessing, "get_context", lambda method: _NoSpawnContext())
    with pytest.raises(_Spawned) as spawned:
        _cli(roots, tmp_path / "model", "--epochs", "1", *flags)
    assert _child_settings(spawned).keep_freed_memory  # before issue 13's fix: not passed on (or always on)
    assert _child_settings(spawned).threads >= 1


def test_processes_spawned_by_the_api_leave_the_allocator_alone_unless_asked(roots, monkeypatch) -> None:
    monkeypatch.setattr(distributed_launch.multiprocessing, "get_context", lambda method: _NoSpawnContext())
    request = TrainRequest(str(DATASET), "2d", "0", roots, TrainOptions(epochs=1, device="cpu"))
    with pytest.raises(_Spawned) as spawned:
        run_training(request, ["0", "1"], devices=["cpu", "cpu"])
    assert not _child_settings(spawned).keep_freed_memory
    with pytest.raises(_Spawned) as spawned:
        run_training(request, ["0", "1"], devices=["cpu", "cpu"], keep_freed_memory=True)
    assert _child_settings(spawned).keep_freed_memory


def test_a_device_left_without_a_fold_takes_no_share_of_the_cores(roots, monkeypatch) -> None:
    """One fold on ``--devices cpu cpu`` of an 8-core machine: the one process started gets every core (threads
    and loader workers), not half of them."""
    monkeypatch.setattr(distributed_launch.multiprocessing, "get_context", lambda method: _NoSpawnContext())
    monkeypatch.setattr(distributed_launch, "default_workers", lambda: 8)
    request = TrainRequest(str(DATASET), "2d", "0", roots, TrainOptions(epochs=1, device="cpu"))
    with pytest.raises(_Spawned) as spawned:
        run_training(request, ["0"], devices=["cpu", "cpu"])
    workers = lambda spawn: next(a for a in spawn.value.args[0] if isinstance(a, TrainRequest)).options.num_workers  # noqa: E731
    assert (_child_settings(spawned).threads, workers(spawned)) == (8, 2)
    with pytest.raises(_Spawned) as two:
        run_training(request, ["0", "1"], devices=["cpu", "cpu"])
    assert (_child_settings(two).threads, workers(two)) == (4, 0)  # 4 cores each: batches made in-process


@pytest.mark.parametrize("keep,device,expected", [(True, "cpu", [1]), (False, "cpu", []), (True, "cuda", [])])
def test_a_spawned_process_applies_the_allocator_setting_when_asked_for_cpu_work(allocator_calls, keep, device,
                                                                                expected) -> None:
    threads = torch.get_num_threads()
    ChildSettings(threads, keep).apply(torch.device(device))
    assert allocator_calls == expected
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("stored, warned", [(None, False), ("same", False), ("other", True), ("half", False)])
def test_the_model_folder_warns_only_when_readable_splits_differ(roots, tmp_path, stored, warned) -> None:
    """A fold started beside another (two cross-validation chains on one model folder) may read a splits file the
    other is writing; only a readable partition that differs is worth the "not comparable" warning. The copied
    documents are renamed into place, so no temporary file is left."""
    pre_dir = roots.preprocessed / NAME
    plans = Plans.load(pre_dir / "autocmrPlans_cpu.json")
    cases = _cases(roots)
    folds = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:-2], "val": cases[-2:]}]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    other = [{"train": f["val"], "val": f["train"]} for f in folds]
    text = {"same": json.dumps(folds), "other": json.dumps(other), "half": json.dumps(folds)[:20]}.get(stored)
    if text is not None:
        (model_dir / "splits.json").write_text(text, encoding="utf-8")
    messages: list[str] = []
    _prepare_model_dir(model_dir, pre_dir, plans, "2d", 0, folds, messages.append)
    assert any("not comparable" in m for m in messages) == warned
    assert json.loads((model_dir / "splits.json").read_text(encoding="utf-8")) == folds
    assert (model_dir / "dataset.json").read_bytes() == (pre_dir / "dataset.json").read_bytes()
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp_")]


def test_fold_all_keeps_the_splits_its_cross_validation_folds_were_trained_with(roots, tmp_path) -> None:
    pre_dir = roots.preprocessed / NAME
    plans = Plans.load(pre_dir / "autocmrPlans_cpu.json")
    cases = _cases(roots)
    custom = [{"train": cases[2:], "val": cases[:2]}]
    model_dir = tmp_path / "model"
    _prepare_model_dir(model_dir, pre_dir, plans, "2d", 0, custom, lambda m: None)  # fold 0 with --splits
    _prepare_model_dir(model_dir, pre_dir, plans, "2d", "all", [], lambda m: None)  # then fold all
    assert json.loads((model_dir / "splits.json").read_text(encoding="utf-8")) == custom
    subjects: dict[str, list[str]] = {}
    for case in cases:
        subjects.setdefault(case.rsplit("_", 1)[0], []).append(case)
    load_or_create_splits(pre_dir / "splits.json", subjects)  # the dataset's own (another test may have made them)
    fresh = tmp_path / "fresh"
    _prepare_model_dir(fresh, pre_dir, plans, "2d", "all", [], lambda m: None)  # alone: the dataset's splits
    assert (fresh / "splits.json").read_bytes() == (pre_dir / "splits.json").read_bytes()


def test_a_fold_that_does_not_exist_stops_the_command_before_any_fold_trains(roots, tmp_path, capsys, allocator_calls,
                                                                           monkeypatch) -> None:
    trained = []
    monkeypatch.setattr(distributed_launch, "train", lambda *a, **k: trained.append(a) or None)
    assert train_main([str(DATASET), "2d", "0", "7", "--epochs", "1", "--device", "cpu", "-o", str(tmp_path / "m"),
                       "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                       "--results", str(roots.results)]) == 2  # folds "0 7": 7 is refused before 0 trains
    assert "fold '7' does not exist: valid folds are 0..4" in capsys.readouterr().err and not trained
    for bad in ("-1", "x"):
        with pytest.raises(SystemExit) as stopped:
            train_main([str(DATASET), "2d", bad, "--preprocessed", str(roots.preprocessed)])
        assert stopped.value.code == 2 and "fold must be a number" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="not in"):
        from autocmr.trainers.splits import select_fold

        select_fold([{"train": ["a"], "val": ["b"]}], -1, ["a", "b"])


def test_saved_splits_of_another_set_of_cases_are_refused(tmp_path):
    from autocmr.errors import ConfigurationError
    from autocmr.trainers.splits import load_or_create_splits

    subjects = {f"s{k}": [f"s{k}_ED", f"s{k}_ES"] for k in range(6)}
    path = tmp_path / "splits.json"
    folds = load_or_create_splits(path, subjects)
    assert load_or_create_splits(path, subjects) == folds  # reused as saved
    more = {**subjects, "s6": ["s6_ED", "s6_ES"]}  # converted again with a new patient
    with pytest.raises(ConfigurationError, match=r"made for another set of cases \(now 2 more"):
        load_or_create_splits(path, more)
