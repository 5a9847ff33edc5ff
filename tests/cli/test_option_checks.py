"""Options no command can honour stop it at once (exit 2, the option named), before any file is written."""
from __future__ import annotations

import pytest

from autocmr.cli.find_best import main as find_best_main
from autocmr.cli.plan import main as plan_main


@pytest.mark.parametrize("main,argv,message", [
    (plan_main, ["-d", "101", "-j", "0"], "-j/--num-workers must be >= 1"),
    (plan_main, ["-d", "101", "--context-slices", "-1"], "--context-slices must be >= 0"),
    (find_best_main, ["-d", "101", "-c", "2d", "--step", "0"], "--step must be in (0, 1]"),
    (find_best_main, ["-d", "101", "-c", "2d", "--step", "5"], "--step must be in (0, 1]"),
])
def test_impossible_options_stop_the_command(main, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv + ["--raw", str(tmp_path / "raw")])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command,argv,message", [
    ("plan", ["-d", "101", "--seed", "-1"], "--seed: must be >= 0"),
    ("train", ["101", "2d", "0", "--seed", "-1"], "--seed: must be >= 0"),
    ("demo", ["--subjects", "3"], "--subjects: must be >= 5"),
    ("demo", ["--test-subjects", "0"], "--test-subjects: must be >= 1"),
    ("demo", ["--minutes", "nan"], "--minutes: must be a finite number > 0"),
    ("predict", ["-i", "IN", "-o", "OUT", "-c", "3d_fullres"], "-c/--configuration: these choose a model by -d"),
    ("predict", ["-i", "IN", "-o", "OUT", "--metadata", "nowhere.csv"], "--metadata nowhere.csv: no such file"),
    ("predict", ["-i", "IN", "-o", "OUT", "-f", "0", "0"], "a fold given twice"),
])
def test_values_no_command_can_use_are_refused_at_parse_time(command, argv, message, tmp_path, capsys,
                                                             monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"autocmr.cli.{command}").main
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_predict_on_devices_checks_devices_and_input_before_starting_any_process(tmp_path, capsys):
    from autocmr.cli.predict import main

    (tmp_path / "in").mkdir()
    assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--devices", "foo"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "foo" in err and "Traceback" not in err
    assert main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out"), "--devices", "cpu"]) == 2
    assert "missing: input not found" in capsys.readouterr().err


def test_a_bad_card_json_is_an_error_naming_it(tiny_model_dir, tmp_path, capsys):
    from autocmr.cli.models import main

    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "unknown.json").write_text('{"intended_usage": "x"}')
    for name, message in (("bad.json", "bad.json: cannot read the card fields"),
                          ("list.json", "must be a JSON object"), ("unknown.json", "unknown model card field")):
        assert main(["pack", str(tiny_model_dir), str(tmp_path / "d"), "--name", "x", "--card-json",
                     str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err


def test_training_several_folds_of_a_dataset_nowhere_is_one_error_exit_2(tmp_path, capsys):
    from autocmr.cli.train import main

    roots = ["--raw", str(tmp_path / "r"), "--preprocessed", str(tmp_path / "p"), "--results", str(tmp_path / "x")]
    assert main(["999", "2d", "0", "1", *roots]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "999" in err
    assert main(["999", "2d", "0", "1", "--splits", str(tmp_path / "none.json"), *roots]) == 2
    assert "none.json: splits file not found" in capsys.readouterr().err


def test_a_file_ending_without_its_dot_is_refused_at_parse_time(tmp_path, capsys):
    from autocmr.cli.convert import main

    with pytest.raises(SystemExit) as stopped:
        main(["folder", "--images", str(tmp_path), "--labels", str(tmp_path), "-d", "120", "--name", "X",
              "--file-ending", "nii.gz"])
    assert stopped.value.code == 2 and "give one of .nii.gz" in capsys.readouterr().err


def test_an_evaluation_output_that_is_a_file_is_refused_before_scoring(tmp_path, capsys):
    from autocmr.cli.evaluate import main

    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "out").write_text("a file")
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


class _Ended(BaseException):
    """Stands for the process ending (a BaseException, so run_command does not turn it into exit 3)."""


def test_a_rank_started_by_a_launcher_ends_without_interpreter_teardown(tmp_path, monkeypatch, capsys):
    import autocmr.trainers.distributed as distributed
    from autocmr.cli.train import main

    def end(code):
        raise _Ended(code)

    monkeypatch.setattr(distributed, "end_rank_process", end)
    roots = ["--raw", str(tmp_path / "r"), "--preprocessed", str(tmp_path / "p"), "--results", str(tmp_path / "x")]
    argv = ["999", "2d", "0", *roots]  # no such dataset: refused before any process group is joined
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 2  # an ordinary process returns its exit code
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(_Ended) as ended:
        main(argv)
    assert ended.value.args == (2,)  # a launched rank leaves through end_rank_process, with the same code
    assert "no dataset with id 999" in capsys.readouterr().err


def test_a_metadata_file_that_is_no_cases_table_is_refused_before_predicting(tmp_path, capsys):
    from autocmr.cli.predict import main

    (tmp_path / "in").mkdir()
    (tmp_path / "cases.csv").write_text("patient,notes\nA,unrelated\n")
    with pytest.raises(SystemExit) as exited:
        main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--metadata", str(tmp_path / "cases.csv")])
    assert exited.value.code == 2 and "--metadata" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_splits_file_given_with_a_tilde_the_shell_left_is_read_for_the_fold_check(tiny_model, tmp_path,
                                                                                        monkeypatch, capsys):
    """--splits=~/s.json: the shell expands no ~ after '='; the file's two folds still decide that fold 3 is
    refused up front (before, the check read no file and allowed the five default folds)."""
    import json

    from autocmr.cli.train import main
    from autocmr.testing.tiny_model import TINY_DATASET_ID

    _, roots = tiny_model
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "s.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}]))
    argv = [str(TINY_DATASET_ID), "2d", "3", "--splits=~/s.json", "--raw", str(roots.raw),
            "--preprocessed", str(roots.preprocessed), "--results", str(tmp_path / "results")]
    assert main(argv) == 2
    assert "fold '3' does not exist: valid folds are 0..1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [(["--step", "0"], "--step 0"), (["--part-id", "2", "--num-parts", "2"],
                                                                           "--part-id 2 of --num-parts 2"),
                                        (["-j", "-1"], "-j/--num-workers -1")])
def test_predict_names_the_flag_of_a_value_out_of_range(tmp_path, capsys, argv, flag):
    from autocmr.cli.predict import main

    with pytest.raises(SystemExit) as stopped:
        main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--epochs", "--iterations", "--val-iterations", "--batch-size"])
def test_train_refuses_a_count_below_one_at_parse_time(capsys, flag):
    from autocmr.cli.train import main

    with pytest.raises(SystemExit) as stopped:
        main(["101", "2d", "0", flag, "0"])
    assert stopped.value.code == 2 and flag in capsys.readouterr().err


def test_evaluate_says_a_file_is_no_folder_and_checks_compare_before_scoring(tmp_path, capsys):
    from autocmr.cli.evaluate import main

    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "afile.nii.gz").write_bytes(b"x")
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "afile.nii.gz")]) == 2
    assert "afile.nii.gz: prediction folder is a file" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "--compare",
                 str(tmp_path / "nonexist"), "-o", str(out)]) == 2
    assert "nonexist: prediction folder not found" in capsys.readouterr().err and not out.exists()


def test_models_dir_may_follow_the_command(tmp_path):
    from autocmr.cli.models import build_parser

    parser = build_parser()
    assert parser.parse_args(["import", "a.tar.gz", "--models-dir", str(tmp_path)]).models_dir == str(tmp_path)
    assert parser.parse_args(["--models-dir", str(tmp_path), "list"]).models_dir == str(tmp_path)
    assert parser.parse_args(["list"]).models_dir is None


def test_a_file_system_refusal_names_the_path_first():
    import errno

    from autocmr.cli.common import run_command

    def refused() -> int:
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "afile.txt/fold_all")

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_command(refused) == 2
    assert err.getvalue() == ("error: afile.txt/fold_all: Not a directory (a part of the path is a file, not a "
                              "folder)\n")


def test_evaluate_checks_its_default_output_folder_before_scoring(tmp_path, capsys, monkeypatch):
    """Without -o the results go to <pred>/evaluation: a prediction folder that cannot be written to (a colleague's
    read-only share) was found only after every case was scored."""
    import os
    from pathlib import Path

    from autocmr.cli import evaluate as evaluate_cli

    (tmp_path / "ref").mkdir()
    shared = tmp_path / "pred"
    shared.mkdir()
    real_access = os.access
    # root (as on CI) may write anywhere: the folder is made unwritable in os.access's answer itself
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == shared and mode & os.W_OK
                        else real_access(p, mode, *a, **k))
    scored = []
    monkeypatch.setattr("autocmr.evaluation.evaluate.evaluate_folders", lambda *a, **k: scored.append(a))
    assert evaluate_cli.main(["-ref", str(tmp_path / "ref"), "-pred", str(shared)]) == 2
    err = capsys.readouterr().err
    assert f"{shared / 'evaluation'}: cannot be written: no write permission in {shared}" in err and not scored
