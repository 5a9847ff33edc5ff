"""``autocmr_models`` end to end: pack, info, list, export, import, verify; errors exit with code 2."""
from __future__ import annotations

from autocmr.cli.models import main


def test_pack_export_import_info(tiny_model_dir, tmp_path, capsys):
    models = ["--models-dir", str(tmp_path / "models")]
    assert main(["pack", str(tiny_model_dir), str(tmp_path / "shipped"), "--name", "tiny"]) == 0
    assert main(["export", str(tmp_path / "shipped"), str(tmp_path / "tiny.tar.gz")]) == 0
    assert main(models + ["import", str(tmp_path / "tiny.tar.gz"), "--name", "colleague"]) == 0
    capsys.readouterr()
    assert main(models + ["info", "colleague"]) == 0
    out = capsys.readouterr().out
    assert "# tiny" in out and "2 MYO" in out and "manifest: version 2, 1 checksum(s)" in out
    assert main(models + ["list"]) == 0
    assert "colleague" in capsys.readouterr().out
    assert main(models + ["verify", "colleague"]) == 0
    assert main(models + ["info", "nobody"]) == 2
    assert "neither a model folder nor the name" in capsys.readouterr().err
