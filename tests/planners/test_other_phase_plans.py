"""``other_phase`` in the plans: every configuration, same preprocessing, read from old plans as off."""
from __future__ import annotations

from dataclasses import replace

from autocmr.cli.plan import build_parser
from autocmr.planners.planner import plan
from autocmr.planners.plans import Plans

from tests.planners.test_planner import acdc_like


def test_other_phase_goes_to_every_configuration_and_keeps_the_data_identifier():
    plain, paired = plan(acdc_like()), plan(acdc_like(), other_phase=True)
    for name in ("2d", "3d_fullres"):
        assert paired.configuration(name).other_phase and not plain.configuration(name).other_phase
        assert replace(paired.configuration(name), other_phase=False) == plain.configuration(name)
    assert paired.configuration("2d").input_channels(1) == 2


def test_plans_round_trip_with_and_without_other_phase(tmp_path):
    plans = plan(acdc_like(), other_phase=True, context_slices=1)
    plans.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path / "plans.json") == plans
    old = plan(acdc_like()).to_dict()
    for c in old["configurations"].values():
        del c["other_phase"]  # plans written before the field existed
    assert Plans.from_dict(old, source="old.json") == plan(acdc_like())


def test_plan_command_takes_other_phase():
    assert build_parser().parse_args(["-d", "101", "--other-phase"]).other_phase
    assert not build_parser().parse_args(["-d", "101"]).other_phase
