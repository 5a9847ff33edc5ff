"""Import and export of model archives under hostile or unlucky conditions: oversized, sparse, truncated or
corrupt archives, forged manifests, concurrent imports, interrupted replacements, links in the exported folder."""
from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import shutil
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import torch

from autocmr.cli.models import main
from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest
from autocmr.errors import DocumentError, InputFileError, PlansError
from autocmr.models import archive as archive_module
from autocmr.models import store
from autocmr.models.archive import export_model, import_model
from autocmr.models.commands import list_text, verify_text
from autocmr.models.folder import ModelFolder
from autocmr.models.registry import resolve_model
from autocmr.models.store import pack_model

FINAL = layout.checkpoint_relpath("0", "final")


@pytest.fixture(scope="module")
def packed(tiny_model_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("packed") / "tiny"
    pack_model(tiny_model_dir, dest, name="tiny")
    return dest


@pytest.fixture(scope="module")
def exported(packed, tmp_path_factory):
    return export_model(packed, tmp_path_factory.mktemp("exported") / "site_x.tar.gz", name="site_x")


def _files_of(folder: Path, top: str = "m") -> dict[str, bytes]:
    return {f"{top}/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _write_archive(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            info = tarfile.TarInfo(member[0])
            info.size = len(member[1])
            tar.addfile(info, io.BytesIO(member[1]))
    return path


def _leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []


def _never_written(monkeypatch):
    def fail(dest):
        raise AssertionError(f"{dest}: a staging folder was written for an archive that should have been refused")
    monkeypatch.setattr(archive_module, "staging_folder", fail)


def test_sparse_oversized_or_overlong_archives_are_refused_before_anything_is_written(packed, exported, tmp_path,
                                                                                       monkeypatch, capsys):
    models = tmp_path / "models"
    _never_written(monkeypatch)
    sparse = tarfile.TarInfo("m/fold_0/checkpoint_final.pth")
    sparse.type = tarfile.GNUTYPE_SPARSE  # expands to more than it declares
    files = list(_files_of(packed).items())
    with pytest.raises(InputFileError, match=r"checkpoint_final.pth' is a sparse file"):
        import_model(_write_archive(tmp_path / "sparse.tar.gz", [*files[:2], sparse]), models_dir=models)
    contiguous = tarfile.TarInfo("m/plans.json")
    contiguous.type = tarfile.CONTTYPE  # isfile() says yes; only plain files are accepted
    with pytest.raises(InputFileError, match="link or special file"):
        import_model(_write_archive(tmp_path / "cont.tar.gz", [contiguous]), models_dir=models)

    with pytest.raises(InputFileError, match=r"add up to .* MiB, more than the import limit of 0.0 MiB"):
        import_model(exported, models_dir=models, max_bytes=1000)
    assert main(["--models-dir", str(models), "import", str(exported), "--max-gib", "0.000001"]) == 2
    assert "more than the import limit" in capsys.readouterr().err
    monkeypatch.setattr(archive_module, "_free_bytes", lambda folder: archive_module.FREE_SPACE_MARGIN + 1000)
    with pytest.raises(InputFileError, match=r"more than the free space of .*models less a 1.00 GiB margin"):
        import_model(exported, models_dir=models)
    monkeypatch.undo()
    _never_written(monkeypatch)

    bomb = _write_archive(tmp_path / "bomb.tar.gz", [("m/fold_0/checkpoint_final.pth", bytes(8 << 20))])
    with pytest.raises(InputFileError, match=r"bomb.tar.gz: its files add up to at least 8.0 MiB, over 50 times"):
        import_model(bomb, models_dir=models)
    monkeypatch.setattr(archive_module, "MAX_MEMBERS", 3)
    many = _write_archive(tmp_path / "many.tar.gz", [(f"m/f{i}.json", b"{}") for i in range(4)])
    with pytest.raises(InputFileError, match="more than 3 members"):
        import_model(many, models_dir=models)
    assert _leftovers(models) == []


def test_an_import_checks_and_installs_under_the_models_folders_lock(exported, tmp_path, monkeypatch):
    """Two imports of one name: the one that finishes second fails (it used to replace the first silently)."""
    models = tmp_path / "models"
    verify = archive_module._verify_imported
    started: list[str] = []

    def another_import_finishes_meanwhile(folder, archive):
        verify(folder, archive)
        if not started:
            started.append("the other import")
            (import_model(exported, models_dir=models) / "MARK").write_text("the other import's model")
    monkeypatch.setattr(archive_module, "_verify_imported", another_import_finishes_meanwhile)
    with pytest.raises(PlansError, match="already installed .by another import, while this one was unpacking"):
        import_model(exported, models_dir=models)
    assert (models / "site_x" / "MARK").is_file() and _leftovers(models) == ["site_x"]

    from autocmr.io.locks import held

    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    with held(models / store.MODELS_LOCK, RuntimeError):
        with pytest.raises(PlansError, match=r"held by process \d+ .*another import or replacement"):
            import_model(exported, models_dir=models, name="site_y", replace=True)
    assert not (models / "site_y").exists()


def test_a_distributed_model_loads_exactly_the_folds_its_manifest_lists(packed, tiny_model_dir, tmp_path):
    extra = shutil.copytree(packed, tmp_path / "extra")
    shutil.copytree(extra / "fold_0", extra / "fold_1")  # copied in from another model: not listed
    with pytest.raises(DocumentError, match=r"fold_1/checkpoint_final\.pth: not listed in .*model.json"):
        ModelFolder.open(extra).load_networks_and_headers(None, "final", torch.device("cpu"))
    with pytest.raises(DocumentError, match=r"fold_1/checkpoint_final\.pth: not listed"):
        ModelFolder.open(extra).load_networks_and_headers(["0"], "final", torch.device("cpu"))

    lost = shutil.copytree(packed, tmp_path / "lost")
    manifest = json.loads((lost / layout.MODEL_MANIFEST).read_text())
    manifest["weights"]["fold_1/checkpoint_final.pth"] = manifest["weights"][FINAL]  # an interrupted copy lost it
    (lost / layout.MODEL_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DocumentError, match=r"fold_1/checkpoint_final\.pth: listed in .*model.json but missing"):
        ModelFolder.open(lost).available_folds()

    training = shutil.copytree(tiny_model_dir, tmp_path / "training")  # no document checksums: still training
    shutil.copytree(training / "fold_0", training / "fold_1")
    assert ModelFolder.open(training).available_folds() == ["0", "1"]
    assert len(ModelFolder.open(packed).load_networks_and_headers(None, "final", torch.device("cpu"))) == 1


def test_export_stores_linked_files_as_plain_files_that_import_accepts(packed, tmp_path):
    model = shutil.copytree(packed, tmp_path / "linked")
    outside = tmp_path / "plans_elsewhere.json"
    shutil.move(model / layout.PLANS, outside)
    os.symlink(outside, model / layout.PLANS)
    best = layout.checkpoint_relpath("0", "best")
    os.link(model / FINAL, model / best)  # one inode under two names: tarfile would store a hard link
    manifest = ModelManifest.load(model)
    manifest.with_weights({**manifest.weights, best: manifest.weights[FINAL]}).save(model)
    archive = export_model(model, tmp_path / "linked.tar.gz", checkpoints=("final", "best"), name="linked")
    with tarfile.open(archive) as tar:
        assert all(member.type == tarfile.REGTYPE for member in tar.getmembers())
    installed = import_model(archive, models_dir=tmp_path / "models")
    assert (installed / layout.PLANS).read_bytes() == outside.read_bytes()
    assert not (installed / layout.PLANS).is_symlink()
    assert (installed / best).read_bytes() == (packed / FINAL).read_bytes()


def _corruptions() -> dict[type, bytes]:
    """A compressed archive damaged at one byte, for each kind of error reading it raises (past the first
    compressed chunk, which opening the archive already reads)."""
    rng = random.Random(0)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in ("m/plans.json", "m/fold_0/checkpoint_final.pth"):
            data = "".join(rng.choices("abcdefgh", k=100_000)).encode()  # Huffman-coded: damage breaks the codes
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data, found = buffer.getvalue(), {}
    for position in range(20, len(data) - 8, 41):
        damaged = bytearray(data)
        damaged[position] ^= 0x55
        try:
            tar = tarfile.open(fileobj=io.BytesIO(bytes(damaged)), mode="r:gz")
        except tarfile.TarError:
            continue  # refused at once as "not a readable model archive"
        try:
            with tar:
                for member in tar:
                    if member.isfile():
                        tar.extractfile(member).read()
        except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as exc:
            found.setdefault(type(exc), bytes(damaged))
        if {tarfile.ReadError, zlib.error, gzip.BadGzipFile} <= set(found):
            break
    found[EOFError] = data[:len(data) // 2]  # a download cut short
    return found


def test_a_truncated_or_corrupt_archive_is_an_error_naming_it_and_installs_nothing(tmp_path):
    models = tmp_path / "models"
    corruptions = _corruptions()
    assert {EOFError, zlib.error} <= set(corruptions), set(corruptions)
    for kind, data in corruptions.items():
        path = tmp_path / f"{kind.__name__}.tar.gz"
        path.write_bytes(data)
        with pytest.raises(InputFileError, match="truncated or corrupt archive .*copy it again") as info:
            import_model(path, models_dir=models, name="m")
        assert info.value.path == path, kind
        assert _leftovers(models) == []


def test_a_replaced_model_is_deleted_under_a_trash_name_never_put_back(exported, tmp_path, monkeypatch):
    """A deletion cut short (killed) leaves a trash folder: it is not restored as the model, and the next
    import removes it, with staging folders of imports killed over an hour ago (not younger ones)."""
    models = tmp_path / "models"
    import_model(exported, models_dir=models)
    rmtree = shutil.rmtree

    def killed_while_deleting_the_old_model(path, *args, **kwargs):
        if not Path(path).name.startswith((".tmp_old_", ".tmp_trash_")):
            rmtree(path, *args, **kwargs)
    monkeypatch.setattr(shutil, "rmtree", killed_while_deleting_the_old_model)
    import_model(exported, models_dir=models, replace=True)
    monkeypatch.undo()
    left = [name for name in _leftovers(models) if name != "site_x"]
    assert len(left) == 1 and left[0].startswith(".tmp_trash_") and left[0].endswith("_site_x")
    shutil.rmtree(models / "site_x")  # uninstalled by hand
    with pytest.raises(PlansError, match="neither a model folder nor the name of an installed model"):
        resolve_model("site_x", models_dir=models)

    stale, fresh = models / ".tmp_0123abcd_site_z", models / ".tmp_89abcdef_site_w"
    for folder in (stale, fresh):
        (folder / "fold_0").mkdir(parents=True)
        (folder / FINAL).write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    for path in (stale / FINAL, stale / "fold_0", stale):
        os.utime(path, (hours_ago, hours_ago))
    import_model(exported, models_dir=models, name="site_v")
    assert _leftovers(models) == [fresh.name, "site_v"]


def test_list_shows_a_model_it_cannot_read_and_the_others(exported, tmp_path, capsys):
    models = tmp_path / "models"
    import_model(exported, models_dir=models, name="good")
    bad = import_model(exported, models_dir=models, name="newer")
    manifest = json.loads((bad / layout.MODEL_MANIFEST).read_text())
    manifest["schema_version"] = 99  # written by a newer autocmr
    (bad / layout.MODEL_MANIFEST).write_text(json.dumps(manifest))
    text = list_text(models)
    assert "good " in text and "2d" in text
    assert "newer " in text and "cannot be used:" in text and "schema version 99" in text
    assert main(["--models-dir", str(models), "list"]) == 0
    assert "newer" in capsys.readouterr().out


@pytest.mark.parametrize("field, key, message", [
    ("documents", "/etc/shadow", "'/etc/shadow' is not a model document"),
    ("documents", "../plans.json", "'../plans.json' is not a model document"),
    ("weights", "../x.pth", r"'../x.pth' is not a weight file a model manifest may list"),
    ("weights", "fold_0/../../../x/checkpoint_final.pth", "is not a weight file"),
])
def test_manifest_keys_from_an_archive_are_checked_before_any_file_is_read(packed, tmp_path, monkeypatch, field,
                                                                           key, message):
    files = _files_of(packed)
    manifest = json.loads(files["m/model.json"])
    manifest[field][key] = "0" * 64
    files["m/model.json"] = json.dumps(manifest).encode()
    hashed = []
    import autocmr.documents.manifest as manifest_module

    real = manifest_module.sha256_of
    monkeypatch.setattr(manifest_module, "sha256_of", lambda path: hashed.append(path) or real(path))
    with pytest.raises(InputFileError, match=message):
        import_model(_write_archive(tmp_path / "forged.tar.gz", list(files.items())), models_dir=tmp_path / "m")
    assert hashed == []
    with pytest.raises(DocumentError, match=message):
        ModelManifest.from_dict(manifest, tmp_path / "model.json")


def test_duplicate_members_or_a_file_standing_for_a_folder_are_refused(packed, tmp_path, monkeypatch):
    _never_written(monkeypatch)
    files = list(_files_of(packed).items())
    twice = _write_archive(tmp_path / "twice.tar.gz", [*files, ("m/./plans.json", b"{}")])
    with pytest.raises(InputFileError, match=r"twice.tar.gz: 'm/./plans.json' appears twice"):
        import_model(twice, models_dir=tmp_path / "models")
    clash = _write_archive(tmp_path / "clash.tar.gz", [("m/fold_0", b"x"), ("m/fold_0/checkpoint_final.pth", b"y")])
    with pytest.raises(InputFileError, match=r"'m/fold_0' is a file and also the folder of 'm/fold_0/checkpoint"):
        import_model(clash, models_dir=tmp_path / "models")


class _Killed(BaseException):
    """The process killed at that instant: nothing after it runs (not even cleanup, see _killed_at)."""


def _killed_at(monkeypatch, is_fatal_rename) -> None:
    """Kill the process at the first rename ``is_fatal_rename(source, target)`` picks: the rename is not made,
    and the import's cleanup of its staging folder (which a real kill never reaches) does not run."""
    real_rename, real_rmtree, killed = Path.rename, shutil.rmtree, []

    def rename(self, target):
        if not killed and is_fatal_rename(Path(self), Path(target)):
            killed.append(self)
            raise _Killed()
        return real_rename(self, target)

    def rmtree(path, *args, **kwargs):
        if not killed:
            real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)


def _replace_killed_between(exported, models, monkeypatch, moment: str) -> None:
    """Install site_x (marked OLD), then replace it by a process killed ``moment``: "after the new is in" (before
    the old one is renamed to the trash) or "before the new is in" (the old one moved aside)."""
    (import_model(exported, models_dir=models) / "OLD").write_text("the replaced model")
    if moment == "after the new is in":
        _killed_at(monkeypatch, lambda source, target: target.name.startswith(store.TRASH_PREFIX))
    else:
        _killed_at(monkeypatch, lambda source, target: target.name == "site_x")
    with pytest.raises(_Killed):
        import_model(exported, models_dir=models, replace=True)
    monkeypatch.undo()


def test_a_model_replaced_before_a_kill_is_removed_and_never_comes_back(exported, tmp_path, monkeypatch):
    """Killed between the new model's rename into place and the old one's rename to the trash: the old model,
    left as .tmp_old_*_site_x, is garbage; the next import removes it, and it is not put back when site_x is
    uninstalled by hand (it used to be, with only a warning)."""
    models = tmp_path / "models"
    _replace_killed_between(exported, models, monkeypatch, "after the new is in")
    old = [name for name in _leftovers(models) if name.startswith(store.OLD_PREFIX)]
    assert len(old) == 1 and not (models / "site_x" / "OLD").exists()  # the new model is in place
    import_model(exported, models_dir=models, name="site_y")
    assert _leftovers(models) == ["site_x", "site_y"]

    models = tmp_path / "models_2"
    _replace_killed_between(exported, models, monkeypatch, "after the new is in")
    shutil.rmtree(models / "site_x")  # uninstalled by hand before any import tidied up
    with pytest.raises(PlansError, match="neither a model folder nor the name of an installed model"):
        resolve_model("site_x", models_dir=models)
    assert not (models / "site_x").exists()
    import_model(exported, models_dir=models, name="site_y")
    assert _leftovers(models) == ["site_y"]


def test_a_replacement_killed_before_the_new_model_is_in_keeps_the_old_one(exported, tmp_path, monkeypatch):
    """Killed between the old model's rename aside and the new one's rename into place: the old model, complete,
    is put back, by the next use of the name or by the next import."""
    for models, next_use in ((tmp_path / "a", "resolve"), (tmp_path / "b", "import")):
        _replace_killed_between(exported, models, monkeypatch, "before the new is in")
        assert not (models / "site_x").exists()
        if next_use == "resolve":
            assert resolve_model("site_x", models_dir=models) == models / "site_x"
        else:
            import_model(exported, models_dir=models, name="site_y")
        assert (models / "site_x" / "OLD").is_file() and (models / "site_x" / layout.PLANS).is_file()
        assert not [name for name in _leftovers(models) if name.startswith(store.OLD_PREFIX)]


def test_headers_are_not_read_past_a_size_limit(packed, tmp_path, monkeypatch):
    """Sizes are added up as each header is read: reading the next one would decompress the data before it,
    all of a bomb's before the check (it used to run after every header had been read)."""
    _never_written(monkeypatch)
    headers: list[str] = []
    real_next = tarfile.TarFile.next

    def counting_next(self):
        member = real_next(self)
        headers.append(member.name if member is not None else "end")
        return member
    monkeypatch.setattr(tarfile.TarFile, "next", counting_next)
    zeros = [(f"m/fold_{i}/checkpoint_final.pth", bytes(4 << 20)) for i in range(4)]  # a few KiB gzipped
    bomb = _write_archive(tmp_path / "bomb.tar.gz", zeros)
    with pytest.raises(InputFileError, match=r"at least 4.0 MiB, over 50 times .*decompression bomb"):
        import_model(bomb, models_dir=tmp_path / "models")
    assert set(headers) == {"m/fold_0/checkpoint_final.pth"}  # (opening reads the first one too)

    headers.clear()
    noise = [(f"m/fold_{i}/checkpoint_final.pth", os.urandom(1 << 20)) for i in range(4)]  # does not compress
    with pytest.raises(InputFileError, match=r"at least 2.0 MiB, more than the import limit of 1.5 MiB"):
        import_model(_write_archive(tmp_path / "big.tar.gz", noise), models_dir=tmp_path / "models",
                     max_bytes=3 << 19)
    assert set(headers) == {"m/fold_0/checkpoint_final.pth", "m/fold_1/checkpoint_final.pth"}


@pytest.mark.parametrize("names, message", [
    (["m/..\\..\\evil.txt"], r"unsafe path 'm/\.\.\\\\\.\.\\\\evil.txt' .*backslash or a colon"),
    (["m/C:\\Users\\x\\evil.txt"], r"unsafe path 'm/C:\\\\Users.*backslash or a colon"),
    (["m/C:evil.txt"], r"unsafe path 'm/C:evil.txt'"),
    (["m/plans.json", "m/Plans.json"], r"'m/Plans.json' and 'm/plans.json' differ only by letter case"),
    (["m/Fold_0", "m/fold_0/checkpoint_final.pth"], r"'m/Fold_0' is a file and also the folder of 'm/fold_0/"),
])
def test_names_unsafe_on_windows_or_a_case_insensitive_disk_are_refused(tmp_path, monkeypatch, names, message):
    _never_written(monkeypatch)
    archive = _write_archive(tmp_path / "names.tar.gz", [(name, b"{}") for name in names])
    with pytest.raises(InputFileError, match=message) as info:
        import_model(archive, models_dir=tmp_path / "models")
    assert info.value.path == archive


def _with_manifest(packed: Path, tmp_path: Path, edit, name: str = "edited") -> Path:
    """A copy of ``packed`` whose manifest ``edit`` (a function of the manifest's dict) changed."""
    folder = shutil.copytree(packed, tmp_path / name)
    manifest = json.loads((folder / layout.MODEL_MANIFEST).read_text())
    edit(manifest)
    (folder / layout.MODEL_MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("field, value, message", [
    ("weights", [FINAL], r"field 'weights' must map file names to sha256 strings, not \['fold_0"),
    ("documents", "plans.json", r"field 'documents' must map file names to sha256 strings"),
    ("name", 7, r"field 'name' must be a non-empty string, not 7"),
    ("dataset", None, r"field 'dataset' must be a non-empty string, not None"),
])
def test_a_malformed_manifest_is_a_document_error_naming_it_everywhere(packed, exported, tmp_path, capsys, field,
                                                                      value, message):
    """Loading, listing, exporting and importing a model whose manifest has a field of the wrong type: the
    document error names the file and the field (they used to raise AttributeError or TypeError, and one such
    model stopped `autocmr_models list` for every model)."""
    folder = _with_manifest(packed, tmp_path, lambda manifest: manifest.update({field: value}))
    with pytest.raises(DocumentError, match=rf"edited.model.json: model manifest {message}"):
        ModelFolder.open(folder)
    with pytest.raises(DocumentError, match=message):
        export_model(folder, tmp_path / "out.tar.gz")

    models = tmp_path / "models"
    import_model(exported, models_dir=models, name="good")
    shutil.copytree(folder, models / "broken")
    text = list_text(models)
    assert "good " in text and "broken " in text and re.search(rf"cannot be used: .*{message}", text)
    assert main(["--models-dir", str(models), "list"]) == 0
    assert "good" in capsys.readouterr().out

    files = _files_of(folder)
    archive = _write_archive(tmp_path / "malformed.tar.gz", list(files.items()))
    with pytest.raises(InputFileError, match=rf"malformed.tar.gz: model.json: model manifest {message}"):
        import_model(archive, models_dir=models)


def _older_export(packed: Path, tmp_path: Path) -> Path:
    """An archive exported before manifests listed the documents' checksums (weights only)."""
    files = _files_of(packed, top="site_old")
    manifest = json.loads(files["site_old/model.json"])
    del manifest["documents"]
    files["site_old/model.json"] = json.dumps(manifest).encode()
    return _write_archive(tmp_path / "site_old.tar.gz", list(files.items()))


def test_an_installed_model_from_an_older_export_loads_only_the_weights_it_lists(packed, tiny_model_dir, tmp_path,
                                                                                 caplog):
    """Its manifest lists weights but no documents, like a training folder's: it is still installed, with a
    warning that its documents are unchecked, and it is a finished model all the same: a weight file copied
    into it that the manifest does not list is refused, naming it (it used to join the ensemble)."""
    models = tmp_path / "models"
    with caplog.at_level("WARNING", logger="autocmr.models.archive"):
        installed = import_model(_older_export(packed, tmp_path), models_dir=models)
    assert re.search(r"site_old.tar.gz: .*no checksums of the model's documents.*'plans.json'.* installed "
                     r"UNCHECKED, only the weight files were verified", caplog.text)
    assert ModelFolder.open(installed).available_folds() == ["0"]

    (installed / "fold_1").mkdir()
    shutil.copyfile(installed / FINAL, installed / "fold_1" / "checkpoint_final.pth")
    unlisted = r"site_old/fold_1/checkpoint_final\.pth: not listed in"
    with pytest.raises(DocumentError, match=unlisted):
        ModelFolder.open(installed).available_folds()
    with pytest.raises(DocumentError, match=unlisted):
        ModelFolder.open(installed).load_networks_and_headers(["0"], "final", torch.device("cpu"))
    with pytest.raises(DocumentError, match=unlisted):
        verify_text("site_old", models_dir=models)

    training = shutil.copytree(tiny_model_dir, tmp_path / "training")  # weights only too, but trained here
    shutil.copytree(training / "fold_0", training / "fold_1")
    assert ModelFolder.open(training).available_folds() == ["0", "1"]


def test_a_forged_long_header_is_refused_before_it_is_read_into_memory(exported, tmp_path, monkeypatch):
    """A pax header declaring 8 MiB (8 KiB gzipped) was read whole into memory by tarfile before any of the
    import's checks saw a member; now no single read of the unpacked stream may exceed 1 MiB."""
    import tracemalloc

    _never_written(monkeypatch)
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 8 << 20
    forged = tmp_path / "forged.tar.gz"
    with gzip.open(forged, "wb", compresslevel=1) as out:
        out.write(pax.tobuf(tarfile.USTAR_FORMAT))
        out.write(bytes(pax.size))
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError, match=r"forged.tar.gz: holds a header that reads 8.0 MiB at once"):
            import_model(forged, models_dir=tmp_path / "models")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak

    monkeypatch.undo()
    # a model archive tar'ed by hand with another compression (or none) still imports
    plain = gzip.decompress(exported.read_bytes())
    import bz2
    import lzma

    for suffix, data in ((".tar", plain), (".tar.bz2", bz2.compress(plain)), (".tar.xz", lzma.compress(plain))):
        path = tmp_path / f"site_x{suffix}"
        path.write_bytes(data)
        assert import_model(path, name=f"site_x_{suffix.strip('.').replace('.', '_')}",
                            models_dir=tmp_path / "models").is_dir()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"site_x.tar.xz: (truncated or corrupt|not a readable)"):
        import_model(path, name="cut", models_dir=tmp_path / "models")
