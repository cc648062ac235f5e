import subprocess
import sys

import pytest

from vaelib import registry


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vaelib", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["list"], ["download"], ["sweep"]])
def test_help_everywhere(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "many"], "invalid int value: 'many'"),
    (["train", "--model", "gan"], "invalid choice: 'gan'"),
    (["train", "no-such-model"], "unknown model name 'no-such-model': choose one of autoencoder-l2"),
    (["train", "--model", "vae", "--latent-dim", "0", "--out", "x"], "latent_dim must be an integer >= 1"),
    (["train", "--model", "vae", "--beta", "-1", "--out", "x"], "beta must be a finite number >= 0"),
    (["train", "--model", "vae", "--beta", "nan", "--out", "x"], "beta must be a finite number >= 0"),
    (["train", "--model", "vae", "--epochs", "-2", "--out", "x"], "epochs must be an integer >= 0"),
    (["train", "--model", "vae", "--batch-size", "0", "--out", "x"], "batch_size must be an integer >= 1"),
    (["train", "--model", "vae"], "give --out PATH"),
    (["evaluate", "no-such-model"], "no checkpoint sidecar"),
    (["train", "--model", "vae", "--latent-dim", "100000000000", "--out", "x"], "latent_dim must be an integer <= 4096"),
    (["evaluate", "vae-l2-b1", "--k", "1000000000000"], "--k must be an integer <= 100000"),
    (["export-web", "README.md/models.js"], "README.md is a file, not a folder"),
    (["sweep", "README.md", "-p", "beta", "1"], "README.md is not a Jupyter notebook"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_list_shows_every_registry_model_as_valid():
    result = run_cli("list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name in registry.REGISTRY:
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.split()[1] == "valid", row


def test_evaluate_prints_the_metrics_of_a_checkpoint():
    result = run_cli("evaluate", "vae-l2-b1", "--k", "10", "--iw-images", "100", "--markdown")
    assert result.returncode == 0, result.stderr
    header, rule, row = result.stdout.strip().splitlines()
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "vae-l2-b1" and cells[4] == "100"
    neg_elbo, bce, kl = map(float, cells[1:4])
    neg_elbo_there, iw = map(float, cells[5:7])  # on the same 100 images
    assert abs(neg_elbo - (bce + kl)) < 0.02 and 100 < iw < neg_elbo_there


def test_a_custom_model_never_replaces_a_file_already_at_out(tmp_path):
    """(An autoencoder with 0 epochs: no importance-weighted bound to compute, so the test stays quick.)"""
    out = tmp_path / "mine"
    ours = run_cli("train", "--model", "autoencoder", "--epochs", "0", "--out", str(out))
    assert ours.returncode == 0, ours.stderr
    weights = (tmp_path / "mine.safetensors").read_bytes()
    again = run_cli("train", "--model", "autoencoder", "--epochs", "0", "--seed", "1", "--out", str(out))
    assert again.returncode == 2
    assert "mine.safetensors already exists: choose another --out, or add --overwrite" in again.stderr
    assert (tmp_path / "mine.safetensors").read_bytes() == weights  # untouched
    replaced = run_cli("train", "--model", "autoencoder", "--epochs", "0", "--seed", "1", "--out", str(out),
                       "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert (tmp_path / "mine.safetensors").read_bytes() != weights  # seed 1 initialises other weights
