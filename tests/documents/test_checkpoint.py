"""The checkpoint document: read with weights_only, exact RNG round trip, version-1 files, refused pickles."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from autocmr.documents.checkpoint import CHECKPOINT_SCHEMA_VERSION, load_checkpoint, save_checkpoint, upgrade_payload
from autocmr.errors import DocumentError
from autocmr.trainers.checkpoint import restore_rng_state, rng_state


def _payload(**extra):
    return {"network": {"conv.weight": torch.randn(4, 3)}, "plans_name": "autocmrPlans_cpu", "configuration": "2d",
            "topology": {"dim": 2, "features": (16, 32), "strides": ((1, 1), (2, 2))}, "epochs": 3,
            "options": {"seed": 0}, **extra}


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_training_checkpoint_round_trip_restores_every_random_state(tmp_path):
    payload = _payload(state={"epoch": 2, "history": {"lr": [0.01, 0.009]}})
    payload["rng"] = rng_state()
    expected = _draws()
    save_checkpoint(tmp_path / "c.pth", payload)
    torch.load(tmp_path / "c.pth", weights_only=True)  # plain torch reads it safely too
    _draws()  # move every generator on
    back = load_checkpoint(tmp_path / "c.pth")
    restore_rng_state(back["rng"])
    assert _draws() == expected
    assert back["schema_version"] == CHECKPOINT_SCHEMA_VERSION and back["state"]["epoch"] == 2
    assert torch.equal(back["network"]["conv.weight"], payload["network"]["conv.weight"])


def test_version_1_checkpoint_with_numpy_rng_state_still_loads_and_upgrades(tmp_path):
    legacy = _payload()
    legacy["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(legacy, tmp_path / "old.pth")  # how autocmr wrote checkpoints before the document
    expected = _draws()
    back = load_checkpoint(tmp_path / "old.pth")
    assert "schema_version" not in back
    restore_rng_state(back["rng"])
    assert _draws() == expected
    save_checkpoint(tmp_path / "new.pth", upgrade_payload(back))
    new = torch.load(tmp_path / "new.pth", weights_only=True)  # no numpy objects left
    assert new["schema_version"] == CHECKPOINT_SCHEMA_VERSION and isinstance(new["rng"]["numpy"]["keys"], torch.Tensor)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_holding_a_pickled_object_fails_with_a_clear_message_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save(_payload(extra=_RunsCode(marker)), tmp_path / "evil.pth")
    with pytest.raises(DocumentError, match=r"evil\.pth: refused to load.*other than tensors.*system"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_truncated_foreign_and_newer_checkpoints_are_named(tmp_path):
    save_checkpoint(tmp_path / "ok.pth", _payload())
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(DocumentError, match=r"cut\.pth: cannot read checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pth")
    with pytest.raises(DocumentError, match=r"foreign\.pth: not an autocmr checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    torch.save({**_payload(), "schema_version": CHECKPOINT_SCHEMA_VERSION + 1}, tmp_path / "newer.pth")
    with pytest.raises(DocumentError, match="newer autocmr"):
        load_checkpoint(tmp_path / "newer.pth")
    with pytest.raises(DocumentError, match="header lacks"):
        save_checkpoint(tmp_path / "no_header.pth", {"network": {}})
    assert not (tmp_path / "no_header.pth").exists()
