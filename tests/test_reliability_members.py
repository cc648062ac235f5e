"""Issue 20, once more: other members of the classes of fault that tests/test_reliability.py covers.

Each test names its class by the issue's number, and fails on the code before its fix.
"""
import http.server
import json
import threading
import subprocess
import sys
import time

import pytest
import torch

from vaelib import checkpoints, data, evaluate, grid, inference, judge, losses, models, plots, registry, study, sweep, web
from vaelib.__main__ import main
from tests.conftest import REPO
from tests.test_reliability import CONFIG, one_line_error, snapshot, tiny_notebook, tiny_vae


def sparse_file(path, size=3 * 2**30):
    """A file of `size` bytes that takes no disk: a damaged file of gigabytes."""
    with open(path, "ab") as handle:
        handle.truncate(size)


# 1. a save with overwrite=True replaces a checkpoint that vaelib wrote, never a user's own file
@pytest.mark.parametrize("mine", ["notes.json", "weights.safetensors"])
def test_save_never_replaces_a_file_it_did_not_write(tmp_path, mine):
    (tmp_path / mine).write_text('{"my": "notes"}')
    stem = tmp_path / mine.split(".")[0]
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="never replaced, even with --overwrite"):
        checkpoints.save(stem, tiny_vae(), CONFIG)  # overwrite=True, the default
    assert snapshot(tmp_path) == before
    checkpoints.save(tmp_path / "mine", tiny_vae(), CONFIG)
    checkpoints.save(tmp_path / "mine", tiny_vae(1), CONFIG)  # a checkpoint of ours is replaced


def test_train_out_overwrite_refuses_a_users_file_before_training(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.json").write_text('{"my": "notes"}')
    monkeypatch.setattr(registry, "train_recipe", lambda *a, **k: pytest.fail("trained before refusing"))
    assert main(["train", "--model", "vae", "--out", str(tmp_path / "notes"), "--overwrite"]) == 2
    assert "was not written by vaelib" in one_line_error(capsys)
    assert snapshot(tmp_path) == {"notes.json": b'{"my": "notes"}'}


# 10. a reader of the judge sees the old classifier or the new one while another process saves it
def test_judge_loads_during_saves_see_the_old_or_the_new_model(tmp_path):
    shipped = judge.load()
    judge.save(shipped, judge.JudgeRecipe(), shipped.record["history"], shipped.record["metrics"], tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", f"""
import pathlib, time, torch
from vaelib import judge
model, folder = judge.load(), pathlib.Path({str(tmp_path)!r})
seed, end = 0, None
while end is None or time.monotonic() < end:
    seed += 1
    with torch.no_grad():
        model.out.bias.fill_(seed % 2)  # two different classifiers, saved in turn
    judge.save(model, judge.JudgeRecipe(), model.record["history"], model.record["metrics"], folder)
    if end is None:
        end = time.monotonic() + 4
        print("saving", flush=True)
"""], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "saving"
        loads = 0
        while writer.poll() is None:
            judge.load(tmp_path)  # never CheckpointError
            loads += 1
        assert loads >= 10
    finally:
        writer.kill()
        writer.wait()


# 11. no file is read whole before its size is checked: sidecars, the judge's, a seed's metrics, notebooks
def test_a_huge_sidecar_is_refused_by_its_size(tmp_path):
    checkpoints.save(tmp_path / "big", tiny_vae(), CONFIG)
    sparse_file(tmp_path / "big.json")
    with pytest.raises(checkpoints.CheckpointError, match="more than the"):
        checkpoints.read_sidecar(tmp_path / "big")
    with pytest.raises(checkpoints.CheckpointError, match="more than the"):
        checkpoints.load(tmp_path / "big")


def test_a_huge_judge_sidecar_is_refused_by_its_size(tmp_path):
    for suffix in (".json", ".safetensors"):
        (tmp_path / f"{judge.NAME}{suffix}").write_bytes((REPO / "checkpoints" / f"{judge.NAME}{suffix}").read_bytes())
    sparse_file(tmp_path / f"{judge.NAME}.json")
    with pytest.raises(checkpoints.CheckpointError, match="more than the"):
        judge.load(tmp_path)


def test_a_huge_study_file_is_refused_by_its_size(tmp_path):
    sparse_file(tmp_path / "seed-0-metrics.json")
    with pytest.raises(ValueError, match="seed-0-metrics.json is damaged .*more than the"):
        study.finished_rows(tmp_path)
    sparse_file(tmp_path / "table.csv")
    with pytest.raises(ValueError, match="more than the"):
        study.load_table(tmp_path)


def test_a_huge_notebook_is_refused_by_its_size(tmp_path, capsys):
    notebook = tiny_notebook(tmp_path / "huge.ipynb")
    sparse_file(notebook)
    start = time.perf_counter()
    assert main(["sweep", str(notebook), "-p", "x", "1", "--out", str(tmp_path / "o")]) == 2
    assert "more than the" in one_line_error(capsys) and time.perf_counter() - start < 5
    with pytest.raises(ValueError, match="more than the"):
        sweep.notebook_results(notebook)


# 8. every function that scores, completes or shows images checks them at its door (not only the scorers)
x4 = torch.rand(4, 784)
top_half = torch.arange(784) < 392  # (784,)
IMAGE_TAKERS = {
    "effective_sample_size": lambda m, x: evaluate.effective_sample_size(m, x, k=2),
    "log_likelihood_grid": lambda m, x: evaluate.log_likelihood_grid(m, x, step=0.5),
    "grid.posterior_sums": lambda m, x: grid.posterior_sums(m, x, step=0.5),
    "complete_on_grid": lambda m, x: inference.complete_on_grid(m, x, top_half, step=0.5),
    "complete_by_sampling": lambda m, x: inference.complete_by_sampling(m, x, top_half, k=2, steps=1),
    "complete_by_loop": lambda m, x: inference.complete_by_loop(m, x, top_half, iterations=1),
    "neighbour_completion(x)": lambda m, x: inference.neighbour_completion(x, top_half, x4),
    "neighbour_completion(train_x)": lambda m, x: inference.neighbour_completion(x4, top_half, x),
    "choose_neighbours": lambda m, x: inference.choose_neighbours(x, top_half, candidates=(1,), queries=2),
    "show_reconstructions": lambda m, x: plots.show_reconstructions(m, x),
    "interpolate": lambda m, x: plots.interpolate(m, x[0], x[1], steps=2),
    "binary_entropy_floor": lambda m, x: losses.binary_entropy_floor(x),
}


@pytest.mark.parametrize("bad", ["times 255", "negative", "nan"])
@pytest.mark.parametrize("taker", IMAGE_TAKERS)
def test_every_image_taker_checks_its_images(taker, bad):
    x = {"times 255": x4 * 255, "negative": -x4, "nan": x4.masked_fill(x4 > 0.5, float("nan"))}[bad]
    with pytest.raises(ValueError, match="must hold pixels in|NaN"):
        IMAGE_TAKERS[taker](tiny_vae(), x)


# 9. a per-image fit that diverges raises, even when its last step is the one that breaks it
@pytest.mark.parametrize("lr", [1e300, 1e30])
def test_a_diverged_posterior_fit_raises(lr):
    with pytest.raises(inference.FitDiverged, match="lower lr"):
        inference.refine_posterior(tiny_vae(), x4, steps=2, lr=lr)


# 15. the judge's True/False arguments take True or False
@pytest.mark.parametrize("call", ["load_or_train", "train_judge"])
def test_the_judges_string_flags_are_refused(call, monkeypatch):
    monkeypatch.setattr(judge.data, "load_mnist", lambda *a, **k: pytest.fail("worked before checking"))
    with pytest.raises(ValueError, match="progress must be True or False"):
        judge.load_or_train(progress="no") if call == "load_or_train" else judge.train_judge(progress="no")


# 16. a mask of visible pixels is checked like the images: one clear ValueError, never torch's error
@pytest.mark.parametrize("visible", [top_half[:10], top_half.float() * 3, top_half.tolist(), top_half[None, None]])
@pytest.mark.parametrize("taker", ["complete_on_grid", "complete_by_loop", "complete_by_sampling", "refine_posterior",
                                   "neighbour_completion", "grid.posterior_sums"])
def test_a_wrong_visible_mask_is_one_value_error(taker, visible):
    call = {"complete_on_grid": lambda: inference.complete_on_grid(tiny_vae(), x4, visible, step=0.5),
            "complete_by_loop": lambda: inference.complete_by_loop(tiny_vae(), x4, visible),
            "complete_by_sampling": lambda: inference.complete_by_sampling(tiny_vae(), x4, visible, k=2, steps=1),
            "refine_posterior": lambda: inference.refine_posterior(tiny_vae(), x4, steps=1, visible=visible),
            "neighbour_completion": lambda: inference.neighbour_completion(x4, visible, x4),
            "grid.posterior_sums": lambda: grid.posterior_sums(tiny_vae(), x4, visible=visible, step=0.5)}[taker]
    with pytest.raises(ValueError, match="visible must") as error:
        call()
    assert "\n" not in str(error.value)


def test_a_visible_mask_of_zeros_and_ones_still_works():
    completed = inference.complete_by_loop(tiny_vae(), x4, top_half.float(), iterations=1)
    assert torch.equal(completed[:, :392], x4[:, :392])


# 17. a command with several targets checks every one of them before it scores the first
def test_evaluate_checks_every_target_before_scoring(tmp_path, monkeypatch, capsys):
    checkpoints.save(tmp_path / "good", tiny_vae(), CONFIG)
    monkeypatch.setattr(registry, "test_metrics", lambda *a, **k: pytest.fail("scored before checking every target"))
    assert main(["evaluate", str(tmp_path / "good"), str(tmp_path / "missing")]) == 2
    assert "missing" in one_line_error(capsys)


def test_export_web_checks_every_checkpoint_before_any_work(tmp_path, monkeypatch):
    real = checkpoints.load

    def load(stem, expected=None, device="cpu"):
        if str(stem) == "convvae-l10-b4":  # the last one it exports
            raise checkpoints.CheckpointError("convvae-l10-b4.safetensors is damaged")
        return real(stem, expected, device)

    monkeypatch.setattr(checkpoints, "load", load)
    monkeypatch.setattr(web.train, "encode_dataset", lambda *a, **k: pytest.fail("worked before checking"))
    with pytest.raises(checkpoints.CheckpointError, match="convvae-l10-b4"):
        web.export(tmp_path / "site" / "models.js")
    assert not (tmp_path / "site").exists()


# 5. a registry checkpoint is held to its recipe however its name is spelled
@pytest.mark.parametrize("spelling", ["vae-l2-b0.json", "vae-l2-b0.safetensors", "{dir}/vae-l2-b0", "./vae-l2-b0"])
def test_evaluate_refuses_a_swapped_model_by_any_spelling(tmp_path, monkeypatch, spelling, capsys):
    import shutil
    for suffix in (".json", ".safetensors"):
        shutil.copy(REPO / "checkpoints" / f"vae-l2-b4{suffix}", tmp_path / f"vae-l2-b0{suffix}")
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "test_metrics", lambda *a, **k: pytest.fail("scored a swapped model"))
    assert main(["evaluate", spelling.format(dir=tmp_path)]) == 2
    assert "expected" in one_line_error(capsys)


# 12. a latent map or walk is bounded before it is built (steps^2 decoded digits)
WALKS = {
    "plane_grid": lambda steps: plots.plane_grid(steps=steps),
    "latent_grid": lambda steps: models.latent_grid(steps=steps),
    "decode_latent_grid": lambda steps: plots.decode_latent_grid(tiny_vae(), steps=steps),
    "traversals": lambda steps: plots.traversals(tiny_vae(), steps=steps),
    "show_latent_walk": lambda steps: plots.show_latent_walk(tiny_vae(), steps=steps),
    "interpolate": lambda steps: plots.interpolate(tiny_vae(), x4[0], x4[1], steps=steps * 100),
}


@pytest.mark.parametrize("walk", WALKS)
def test_a_huge_latent_walk_is_refused_first(walk):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="steps must be an integer <="):
        WALKS[walk](10**6)
    assert time.perf_counter() - start < 2


def test_a_walk_from_high_to_low_is_refused():
    with pytest.raises(ValueError, match="low must be below high"):
        plots.plane_grid(3.0, -3.0)


# 14. a mirror that sends a byte now and then is a failed download (exit 1), not a download that never ends
class Drip(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        try:
            for _ in range(5000):
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass


def test_a_dripping_mirror_is_a_failed_download(tmp_path, monkeypatch, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(data, "TOTAL_TIMEOUTS", 4, raising=False)  # with timeout=0.5: the whole reply within 2 s
        start = time.perf_counter()
        with pytest.raises(data.DownloadError, match="took more than 2 s"):
            data.download("mnist", tmp_path, mirrors=(f"http://127.0.0.1:{server.server_address[1]}/",), timeout=0.5)
        assert time.perf_counter() - start < 10
        assert not list((tmp_path / "MNIST" / "raw").iterdir())
    finally:
        server.shutdown()


# 16. the scalar settings of the losses, the grid, the ELBO and the plots: one clear ValueError, not torch's error
SETTINGS = {
    "posterior_sums(margin='x')": lambda: grid.posterior_sums(tiny_vae(), x4, margin="x"),
    "posterior_sums(means='no')": lambda: grid.posterior_sums(tiny_vae(), x4, means="no"),
    "posterior_sums(sample_seed=2.5)": lambda: grid.posterior_sums(tiny_vae(), x4, sample_seed=2.5),
    "complete_on_grid(seed='x')": lambda: inference.complete_on_grid(tiny_vae(), x4, top_half, seed="x"),
    "elbo(logvar=1)": lambda: evaluate.elbo(tiny_vae(), x4, logvar=1),
    "elbo(visible=[1])": lambda: evaluate.elbo(tiny_vae(), x4, visible=[1]),
    "bce(eps=None)": lambda: losses.bce(x4, x4, eps=None),
    "bits_per_dim(dims='x')": lambda: losses.bits_per_dim(100.0, dims="x"),
    "log_likelihood_per_image(visible=1)": lambda: losses.log_likelihood_per_image(x4, x4, visible=1),
    "vae_loss(beta=None)": lambda: losses.vae_loss(x4, x4, torch.zeros(4, 2), torch.zeros(4, 2), beta=None),
    "vae_loss(free_bits='x')": lambda: losses.vae_loss(x4, x4, torch.zeros(4, 2), torch.zeros(4, 2), free_bits="x"),
    "show_images(nrow=None)": lambda: plots.show_images(x4, nrow=None),
    "show_images(padding='x')": lambda: plots.show_images(x4, padding="x"),
    "default_jobs(cores='x')": lambda: study.default_jobs(cores="x"),
}


@pytest.mark.parametrize("call", SETTINGS)
def test_a_wrong_setting_is_one_value_error(call):
    with pytest.raises(ValueError) as error:
        SETTINGS[call]()
    assert "\n" not in str(error.value)
