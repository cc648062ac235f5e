"""The command line: arguments checked before any work, one line per refusal, nothing of the user's lost."""
import shutil

import pytest

from vaelib import checkpoints, models, registry
from vaelib.__main__ import main

TINY = ["train", "--model", "vae", "--epochs", "0"]


@pytest.fixture
def quick_training(monkeypatch):
    """train_recipe without MNIST: a freshly built model, as 0 epochs would give."""
    def train_recipe(spec, device=None, progress=True, **kwargs):
        return models.build(spec.kind, spec.latent_dim, spec.activation, **spec.options()), [], {}

    monkeypatch.setattr(registry, "train_recipe", train_recipe)


@pytest.fixture
def package_checkpoints(tmp_path, monkeypatch):
    """A copy of one shipped checkpoint as the package's checkpoints folder."""
    folder = tmp_path / "package"
    folder.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(checkpoints.CHECKPOINT_DIR / f"vae-l2-b1{suffix}", folder)
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", folder)
    return folder


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_out_is_a_path_from_the_current_folder_not_into_the_package(tmp_path, monkeypatch, capsys,
                                                                   quick_training, package_checkpoints):
    shipped = {p.name: p.read_bytes() for p in package_checkpoints.iterdir()}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main([*TINY, "--out", "vae-l2-b1", "--overwrite"]) == 0, capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in package_checkpoints.iterdir()} == shipped
    assert checkpoints.load(work / "vae-l2-b1")[1]["epochs"] == 0


def test_a_second_training_to_the_same_out_keeps_the_first_and_its_own_model(tmp_path, monkeypatch, capsys,
                                                                            quick_training):
    out = tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    real = registry.train_recipe

    def meanwhile_another_run_saves(spec, **kwargs):
        result = real(spec, **kwargs)
        monkeypatch.setattr(registry, "train_recipe", real)
        assert main([*TINY, "--seed", "1", "--out", str(out)]) == 0  # the other run finishes first
        return result

    monkeypatch.setattr(registry, "train_recipe", meanwhile_another_run_saves)
    assert main([*TINY, "--out", str(out)]) == 1
    first = {p.name: p.read_bytes() for p in tmp_path.glob("mine.*")}
    err = one_line_error(capsys)
    assert "mine.safetensors appeared while this model trained: the trained model is kept at" in err
    kept = err.split("kept at ")[1].split(" ")[0]
    assert checkpoints.load(kept)[1]["seed"] == 0 and checkpoints.load(out)[1]["seed"] == 1
    assert {p.name: p.read_bytes() for p in tmp_path.glob("mine.*")} == first


def test_an_unwritable_out_folder_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from vaelib import files

    locked = tmp_path / "locked"
    locked.mkdir()
    real = files.write_temporary

    def write_temporary(target, payload, suffix=".tmp"):
        if target.parent == locked:  # a read-only folder (chmod does not stop root, who runs CI)
            raise PermissionError(13, "Permission denied", str(target))
        return real(target, payload, suffix)

    monkeypatch.setattr(files, "write_temporary", write_temporary)
    monkeypatch.setattr(registry, "train_recipe", lambda *a, **k: pytest.fail("trained before checking --out"))
    assert main([*TINY, "--out", str(locked / "mine")]) == 2
    assert f"cannot write to {locked} (Permission denied)" in one_line_error(capsys)
    (tmp_path / "file").write_text("a file")
    assert main([*TINY, "--out", str(tmp_path / "file" / "mine")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)


def test_a_save_that_fails_after_training_keeps_the_model(tmp_path, monkeypatch, capsys, quick_training):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "mine"
    real = checkpoints.save

    def full_disk(stem, *args, **kwargs):
        if stem == out:
            raise OSError(28, "No space left on device")
        return real(stem, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", full_disk)
    assert main([*TINY, "--out", str(out)]) == 1
    err = one_line_error(capsys)
    assert "(No space left on device): the trained model is kept at" in err
    kept = err.split("kept at ")[1].split(" ")[0]
    assert checkpoints.load(kept)[1]["kind"] == "vae"
    assert list(out.parent.iterdir()) == []  # no temporary file left


@pytest.mark.parametrize("args, message", [
    ([*TINY, "--latent-dim", "100000000000", "--out", "x"], "latent_dim must be an integer <= 4096"),
    ([*TINY, "--seed", "99999999999999999999999", "--out", "x"], "seed must be an integer <= 9223372036854775807"),
    (["evaluate", "vae-l2-b1", "--k", "1000000000000"], "--k must be an integer <= 100000"),
    (["evaluate", "vae-l2-b1", "--iw-images", "-9990"], "--iw-images must be an integer >= 1"),
    (["evaluate", "vae-l2-b1", "--iw-images", "20000"], "--iw-images must be an integer <= 10000"),
])
def test_numbers_are_bounded_before_anything_is_allocated(args, message, capsys, monkeypatch):
    monkeypatch.setattr(registry, "train_recipe", lambda *a, **k: pytest.fail("trained with a bad argument"))
    monkeypatch.setattr(registry, "test_metrics", lambda *a, **k: pytest.fail("evaluated with a bad argument"))
    assert main(args) == 2
    assert message in one_line_error(capsys)


def test_evaluate_labels_the_bound_with_its_k(capsys):
    assert main(["evaluate", "vae-l2-b1", "--k", "3", "--iw-images", "5", "--markdown"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "-IW bound k=3 " in header and "k=1000" not in header


def test_export_web_under_a_file_or_onto_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    from vaelib import data

    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: pytest.fail("worked before checking the path"))
    (tmp_path / "file").write_text("a file")
    assert main(["export-web", str(tmp_path / "file" / "models.js")]) == 2
    assert "file is a file, not a folder" in one_line_error(capsys)
    assert main(["export-web", str(tmp_path)]) == 2
    assert "is a folder: give the JavaScript file to write" in one_line_error(capsys)
