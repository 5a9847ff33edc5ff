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
