"""``context_slices`` in the plans: planned for 2d only, read from old plans as 0, rejected on 3d."""
from __future__ import annotations

from dataclasses import replace

import pytest

from autocmr.cli.plan import build_parser
from autocmr.errors import PlansError
from autocmr.planners.planner import plan
from autocmr.planners.plans import Plans

from tests.planners.test_planner import acdc_like


def test_context_goes_to_2d_only_and_keeps_the_data_identifier_and_network():
    plain, context = plan(acdc_like()), plan(acdc_like(), context_slices=1)
    assert plain.configuration("2d").context_slices == 0
    assert context.configuration("2d").context_slices == 1
    assert context.configuration("3d_fullres").context_slices == 0
    # the preprocessed data do not change, so the configuration differs only in the context
    assert replace(context.configuration("2d"), context_slices=0) == plain.configuration("2d")
    assert context.configuration("3d_fullres") == plain.configuration("3d_fullres")
    assert context.configuration("2d").input_channels(1) == 3
    assert context.configuration("2d").input_channels(2) == 6
    assert plain.configuration("2d").input_channels(2) == 2


def test_plans_round_trip_with_and_without_the_field(tmp_path):
    plans = plan(acdc_like(), context_slices=2)
    path = tmp_path / "plans.json"
    plans.save(path)
    assert Plans.load(path) == plans
    old = plans.to_dict()
    for c in old["configurations"].values():
        del c["context_slices"]  # plans written before the field existed
    loaded = Plans.from_dict(old, source="old.json")
    assert loaded.configuration("2d").context_slices == 0
    assert loaded == plan(acdc_like())


def test_3d_configuration_with_context_and_negative_context_are_rejected_naming_the_file():
    data = plan(acdc_like()).to_dict()
    data["configurations"]["3d_fullres"]["context_slices"] = 1
    with pytest.raises(PlansError, match=r"bad\.json.*3d_fullres.*2d configuration"):
        Plans.from_dict(data, source="bad.json")
    with pytest.raises(PlansError, match=">= 0"):
        plan(acdc_like(), context_slices=-1)


def test_plan_command_takes_context_slices():
    assert build_parser().parse_args(["-d", "101", "--context-slices", "1"]).context_slices == 1
    assert build_parser().parse_args(["-d", "101"]).context_slices == 0
