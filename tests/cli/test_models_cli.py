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


def test_missing_or_foreign_folders_and_existing_archives_are_refused(tiny_model_dir, tmp_path, capsys):
    assert main(["info", str(tmp_path / "nowhere" / "model")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()
    assert main(["info", str(tmp_path / "photos")]) == 2
    assert "not a model folder (no plans.json)" in capsys.readouterr().err
    archive = tmp_path / "site.tar.gz"
    archive.write_text("a colleague's archive")
    assert main(["export", str(tiny_model_dir), str(archive)]) == 2
    assert "pass --replace" in capsys.readouterr().err and archive.read_text() == "a colleague's archive"
    assert main(["export", str(tiny_model_dir), str(tmp_path / "site.zip")]) == 2
    assert "gzipped tar" in capsys.readouterr().err and not (tmp_path / "site.zip").exists()
    assert main(["export", str(tiny_model_dir), str(archive), "--replace"]) == 0
