"""Holds on shared work (autocmr.io.locks): where the file system refuses flock, the work goes on."""
from __future__ import annotations

import errno
import logging
import os

import pytest

from autocmr.errors import ConfigurationError
from autocmr.io import locks
from autocmr.io.locks import held


def _refusing_flock(code: int):
    def flock(fd, operation):
        raise OSError(code, os.strerror(code))
    return flock


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_flock_goes_on_without_the_lock_warning_once(tmp_path, monkeypatch, caplog, code):
    """Lustre mounted without flock, some NFS setups: the hold is a courtesy there, never the end of the run."""
    import fcntl

    locks._warn_no_locking_under.cache_clear()
    monkeypatch.setattr(fcntl, "flock", _refusing_flock(code))
    entered = []
    with caplog.at_level(logging.WARNING, logger="autocmr.io.locks"):
        with held(tmp_path / "a.lock", ConfigurationError):
            with held(tmp_path / "b.lock", ConfigurationError):
                entered.append(True)
        assert not locks.is_held(tmp_path / "a.lock")
    assert entered == [True]
    assert caplog.text.count("does not lock files") == 1, caplog.text


def test_another_flock_error_is_not_swallowed(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fcntl, "flock", _refusing_flock(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        with held(tmp_path / "a.lock", ConfigurationError):
            pass


def test_a_held_lock_refuses_a_second_holder_and_is_seen_held(tmp_path):
    with held(tmp_path / "a.lock", ConfigurationError):
        with pytest.raises(ConfigurationError, match=f"process {os.getpid()} on "):
            with held(tmp_path / "a.lock", ConfigurationError):
                pass
        assert locks.is_held(tmp_path / "a.lock")
    assert not locks.is_held(tmp_path / "a.lock") and not locks.is_held(tmp_path / "missing.lock")
    with held(tmp_path / "s.lock", ConfigurationError, shared=True):
        with held(tmp_path / "s.lock", ConfigurationError, shared=True):  # shared holds coexist
            assert locks.is_held(tmp_path / "s.lock")


def test_each_file_system_without_flock_is_named_once(tmp_path, monkeypatch, caplog):
    """A job whose output and model folders sit on two such file systems hears about each, once."""
    import fcntl

    locks._warn_no_locking_under.cache_clear()
    monkeypatch.setattr(fcntl, "flock", _refusing_flock(errno.ENOLCK))
    monkeypatch.setattr(locks, "_mount_point", lambda folder: folder)  # each folder its own file system
    with caplog.at_level(logging.WARNING, logger="autocmr.io.locks"):
        for name in ("one", "two", "one"):
            with held(tmp_path / name / "x.lock", ConfigurationError):
                pass
    assert caplog.text.count("does not lock files") == 2, caplog.text
    assert str(tmp_path / "one") in caplog.text and str(tmp_path / "two") in caplog.text
    locks._warn_no_locking_under.cache_clear()
