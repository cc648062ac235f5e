"""Nothing a user had is lost: a save killed at any moment, two saves racing, a read-only folder."""
import json
import os
import time

import pytest
import torch

from vaelib import checkpoints, models, registry

CONFIG = {"kind": "vae", "latent_dim": 2, "beta": 1.0, "activation": "relu", "epochs": 1, "seed": 0,
          "batch_size": 128, "lr": 1e-3}


def tiny_vae(seed):
    torch.manual_seed(seed)
    return models.VAE(latent_dim=2, hidden_dim=8)


def save_tiny(stem, seed, epochs, **kwargs):
    config = {**CONFIG, "epochs": epochs, "options": {"hidden_dim": 8}}
    return checkpoints.save(stem, tiny_vae(seed), config, **kwargs)


def save_dying_after(stem, n):
    """In a child process, save a new checkpoint at `stem` but exit (as if killed) after the n-th
    os.replace, os.rename or os.link. Returns True if the save finished before the n-th call came."""
    pid = os.fork()
    if pid == 0:
        try:
            calls = [0]

            def dying(real):
                def operation(*args, **kwargs):
                    if calls[0] == n:
                        os._exit(17)  # no cleanup runs: as good as SIGKILL
                    calls[0] += 1
                    return real(*args, **kwargs)
                return operation

            for name in ("replace", "rename", "link"):
                setattr(os, name, dying(getattr(os, name)))
            save_tiny(stem, seed=2, epochs=2)
            os._exit(0)
        except BaseException:
            os._exit(3)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the writer hung")
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(waited[1])
    assert code in (0, 17), code
    return code == 0


def test_a_save_killed_after_any_file_operation_leaves_a_loadable_checkpoint(tmp_path):
    old_weights = {k: v.half().float() for k, v in tiny_vae(1).state_dict().items()}
    new_weights = {k: v.half().float() for k, v in tiny_vae(2).state_dict().items()}
    seen = []
    for n in range(10):
        stem = tmp_path / f"run{n}" / "tiny"
        save_tiny(stem, seed=1, epochs=1)
        finished = save_dying_after(stem, n)
        model, sidecar = checkpoints.load(stem)  # old or new, never neither
        expected = old_weights if sidecar["epochs"] == 1 else new_weights
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, expected[name]), (n, name)
        seen.append(sidecar["epochs"])
        save_tiny(stem, seed=3, epochs=3)  # the next save finishes or removes what the killed one left
        assert sorted(p.name for p in stem.parent.iterdir()) == ["tiny.json", "tiny.safetensors"], n
        assert checkpoints.load(stem)[1]["epochs"] == 3
        if finished:
            break
    assert finished and n >= 3, "a save makes at least three renames; each was interrupted in turn"
    assert 1 in seen and 2 in seen  # killed early: the old checkpoint; killed after the commit: the new


def test_a_killed_save_after_its_commit_is_finished_by_the_next_look(tmp_path):
    stem = tmp_path / "tiny"
    save_tiny(stem, seed=1, epochs=1)
    save_dying_after(stem, 1)  # the sidecar was committed, the weights are still under their temporary name
    assert checkpoints.load(stem)[1]["epochs"] == 2
    checkpoints.finish_interrupted_save(stem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]
    assert checkpoints.read_sidecar(stem)["weights_file"] == "tiny.safetensors"
    assert checkpoints.load(stem)[1]["epochs"] == 2


def test_save_without_overwrite_is_an_exclusive_create(tmp_path):
    stem = tmp_path / "tiny"
    save_tiny(stem, seed=1, epochs=1, overwrite=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match="tiny.safetensors already exists"):
        save_tiny(stem, seed=2, epochs=2, overwrite=False)
    (tmp_path / "tiny.safetensors").unlink()  # the weights gone: the sidecar still holds the name
    with pytest.raises(FileExistsError, match="tiny.json already exists"):
        save_tiny(stem, seed=2, epochs=2, overwrite=False)
    assert (tmp_path / "tiny.json").read_bytes() == before["tiny.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]  # no temporary file left


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path):
    stem = tmp_path / "tiny"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a process id that no longer runs
    stale = [tmp_path / f".tiny.safetensors.{dead}.abc123.tmp", tmp_path / f".tiny.json.{dead}.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    alive = tmp_path / f".tiny.json.{os.getppid()}.live.tmp"  # a writer still running: left alone
    alive.write_bytes(b"in progress")
    user = tmp_path / "notes.tmp"  # not ours: left alone
    user.write_bytes(b"mine")
    save_tiny(stem, seed=1, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tiny.json", "tiny.safetensors", alive.name, "notes.tmp"])


def test_a_failed_save_removes_its_temporary_files(tmp_path, monkeypatch):
    from vaelib import files

    stem = tmp_path / "tiny"
    real = files.commit

    def full_disk(temp, target, overwrite=True):
        temp.unlink()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "commit", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_tiny(stem, seed=1, epochs=1)
    monkeypatch.setattr(files, "commit", real)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved(tmp_path):
    stem = tmp_path / "tiny"
    save_tiny(stem, seed=1, epochs=1)
    return stem


@pytest.mark.parametrize("text, problem", [
    ("KIND_LIST", "kind must be one of"),
    ("[]", "holds a JSON list, not an object"),
    ("null", "holds a JSON NoneType, not an object"),
    ("KIND_OPTIONS", "options must be a JSON object"),
    ("UNKNOWN_OPTION", "options has nonsense=1"),
    ('{"latent_dim": ' + "9" * 5000 + "}", "not valid JSON"),
    ("HUGE_FLOAT", "beta must be a finite number"),
])
def test_a_sidecar_of_the_wrong_shape_is_refused_naming_the_file(saved, text, problem):
    sidecar = json.loads(saved.with_suffix(".json").read_text())
    text = {"KIND_LIST": json.dumps({**sidecar, "kind": ["vae"]}),
            "KIND_OPTIONS": json.dumps({**sidecar, "options": "fast"}),
            "UNKNOWN_OPTION": json.dumps({**sidecar, "options": {"nonsense": 1}}),
            "HUGE_FLOAT": json.dumps({**sidecar, "beta": 1e400})}.get(text, text)
    saved.with_suffix(".json").write_text(text)
    with pytest.raises(checkpoints.CheckpointError, match=problem) as error:
        checkpoints.load(saved)
    assert "tiny.json" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [("beta", 4.0), ("epochs", 20), ("lr", 0.01), ("history", [{"epoch": 9}])])
def test_an_edited_recipe_is_found(saved, key, value):
    path = saved.with_suffix(".json")
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(checkpoints.CheckpointError, match="tiny.json was edited after it was saved"):
        checkpoints.load(saved)


def test_a_sidecar_without_its_hash_is_refused_until_sealed(saved):
    path = saved.with_suffix(".json")
    sidecar = json.loads(path.read_text())
    del sidecar["recipe_sha256"]
    path.write_text(json.dumps(sidecar))
    with pytest.raises(checkpoints.CheckpointError, match=r"records no recipe_sha256 .* checkpoints.seal"):
        checkpoints.load(saved)
    checkpoints.seal(saved)
    assert checkpoints.load(saved)[1]["epochs"] == 1


def test_updated_metrics_keep_the_sidecar_valid(saved):
    sidecar = checkpoints.read_sidecar(saved)
    checkpoints.write_sidecar(saved, {**sidecar, "metrics": {"neg_elbo": 2.0}})  # what evaluate --save does
    assert checkpoints.load(saved)[1]["metrics"] == {"neg_elbo": 2.0}


def test_one_bad_sidecar_is_listed_as_invalid_and_the_list_goes_on(tmp_path, monkeypatch, capsys):
    from vaelib.__main__ import main

    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "vae-l2-b1.json").write_text("[]")
    (tmp_path / "vae-l2-b1.safetensors").write_bytes(b"")
    (tmp_path / "vae-l2-b4.json").write_text('{"kind": ["vae"], "options": 3}')
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in captured.out.splitlines()[1:] if line.strip()}
    assert rows["vae-l2-b1"] == "invalid" and rows["vae-l2-b4"] == "invalid" and rows["vae-l2-b0"] == "missing"
    assert "vae-l2-b1.json is not a valid checkpoint sidecar" in captured.err


def rewrite_weights(stem, convert):
    import hashlib

    import safetensors.torch

    weights = stem.with_suffix(".safetensors")
    tensors = {name: convert(t) for name, t in safetensors.torch.load(weights.read_bytes()).items()}
    payload = safetensors.torch.save(tensors)
    weights.write_bytes(payload)
    sidecar = checkpoints.read_sidecar(stem)
    checkpoints.write_sidecar(stem, {**sidecar, "weights_sha256": hashlib.sha256(payload).hexdigest()})


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.float64])
def test_weights_of_another_dtype_than_the_sidecar_says_are_refused(saved, dtype):
    rewrite_weights(saved, lambda t: t.to(dtype))
    with pytest.raises(checkpoints.CheckpointError, match=f"stores .* as {str(dtype)[6:]}, but its sidecar says float16"):
        checkpoints.load(saved)


def test_weights_holding_nan_are_refused(saved):
    rewrite_weights(saved, lambda t: torch.full_like(t, float("nan")))
    with pytest.raises(checkpoints.CheckpointError, match="holds NaN or infinite values"):
        checkpoints.load(saved)


def test_load_checks_the_device(saved, monkeypatch):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'mps' or None"):
        checkpoints.load(saved, device="nonsense")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device here: use device='cpu'"):
        checkpoints.load(saved, device="cuda")


def test_load_or_train_refuses_an_unknown_setting():
    with pytest.raises(ValueError, match="load_or_train has no setting 'nonsense': choose from latent_dim"):
        registry.load_or_train("vae-l2-b1", nonsense=3)
