"""Nothing lost, nothing silently wrong (issue 20): one test per class of fault that an attack run found.

Each test fails on the code before the fix; tiny models and a few images keep them fast.
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import nbformat
import pytest
import torch

from vaelib import checkpoints, data, evaluate, files, inference, models, registry, study, sweep, train, web
from vaelib.__main__ import main
from tests.conftest import REPO

CONFIG = {"kind": "vae", "latent_dim": 2, "beta": 1.0, "activation": "relu", "epochs": 1, "seed": 0,
          "batch_size": 128, "lr": 1e-3, "options": {"hidden_dim": 8}}
SHIPPED = REPO / "checkpoints"


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return models.VAE(latent_dim=2, hidden_dim=8)


def snapshot(folder):
    """Every file under `folder` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "unexpected" not in err, err
    return err


# 1. export-web replaces a file only with --overwrite, and only a file that it wrote
def test_export_web_never_replaces_a_users_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("notes")
    assert main(["export-web", str(tmp_path / "notes.txt")]) == 2
    assert "already exists" in one_line_error(capsys)
    assert main(["export-web", "--overwrite", str(tmp_path / "notes.txt")]) == 2
    assert "was not written by vaelib" in one_line_error(capsys)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vae-l2-b1.js").write_text("// my own explorer")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="vae-l2-b1.js"):
            web.export(tmp_path / "models.js", overwrite=overwrite)
    assert snapshot(tmp_path) == {"notes.txt": b"notes", "weights/vae-l2-b1.js": b"// my own explorer"}


# 2. train --out refuses before it touches the checkpoint, and a staged file rolls forward only if it checks out
def test_train_out_refuses_before_changing_a_checkpoint(tmp_path, capsys):
    stem = tmp_path / "mine"
    checkpoints.save(stem, tiny_vae(), CONFIG)
    sidecar = json.loads((tmp_path / "mine.json").read_text())
    junk = f".mine.safetensors.{dead_pid()}.x.tmp"
    (tmp_path / junk).write_bytes(b"junk")
    (tmp_path / "mine.json").write_text(json.dumps({**sidecar, "weights_file": junk}))  # outside the hash
    before = snapshot(tmp_path)
    assert main(["train", "--model", "autoencoder", "--epochs", "0", "--out", str(stem)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert snapshot(tmp_path) == before
    checkpoints.finish_interrupted_save(stem)  # junk whose SHA-256 is not the recorded one never rolls forward
    assert (tmp_path / "mine.safetensors").read_bytes() == before["mine.safetensors"]


# 3. checkpoints.save refuses (before writing) a checkpoint that could never load
@pytest.mark.parametrize("change", ["kind", "beta_nan", "int8", "nan_weights", "beyond_float16", "autoencoder", "tanh"])
def test_save_refuses_a_checkpoint_that_could_never_load(tmp_path, change):
    stem = tmp_path / "good"
    checkpoints.save(stem, tiny_vae(), CONFIG)
    before = snapshot(tmp_path)
    model, config, dtype = tiny_vae(1), dict(CONFIG), torch.float16
    if change == "kind":
        config["kind"] = "cvae"
    elif change == "beta_nan":
        config["beta"] = float("nan")
    elif change == "int8":
        dtype = torch.int8
    elif change == "nan_weights":
        with torch.no_grad():
            model.to_mu.weight[0, 0] = float("nan")
    elif change == "beyond_float16":
        with torch.no_grad():
            model.to_mu.weight[0, 0] = 1e6
    elif change == "tanh":
        config["activation"] = "tanh"  # no weights tell the two apart: loaded, it would compute another function
    else:
        model = models.Autoencoder(latent_dim=2, hidden_dim=8)
    with pytest.raises(ValueError, match="nothing was written|dtype must be"):
        checkpoints.save(stem, model, config, dtype=dtype)
    assert snapshot(tmp_path) == before
    checkpoints.load(stem)


# 4. sweep never replaces what is in --out without --overwrite, and checks every name before the first run
@pytest.fixture
def fake_papermill(monkeypatch):
    import papermill

    def execute_notebook(source, target, parameters, **kwargs):
        notebook = json.loads(open(source).read())
        notebook["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout",
                                            "text": "RESULTS " + json.dumps(parameters) + "\n"}]
        with open(target, "w") as out:
            out.write(json.dumps(notebook))

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)


def tiny_notebook(path, names=("x",)):
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    notebook.cells = [nbformat.v4.new_code_cell("\n".join(f"{n} = 1" for n in names), metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("print('RESULTS {}')", metadata={"tags": ["results"]})]
    nbformat.write(notebook, path)
    return path


def test_sweep_never_replaces_a_users_files(tmp_path, fake_papermill, capsys):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tiny__x=2.ipynb").write_text("my notebook")  # the second run's name: refused before the first run
    (mine / "tiny_sweep.md").write_text("my table")
    before = snapshot(mine)
    assert main(["sweep", str(notebook), "-p", "x", "1", "2", "--out", str(mine)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert snapshot(mine) == before
    assert main(["sweep", str(notebook), "-p", "x", "1", "2", "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "tiny_sweep.md").read_text() != "my table"


# 5. export-web takes only the recipe's own checkpoint: a swapped copy is refused, whatever its kind
@pytest.mark.parametrize("impostor", ["vae-l2-b4", "convvae-l2-b1"])
def test_export_web_refuses_a_swapped_model(tmp_path, monkeypatch, impostor):
    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED / f"{impostor}{suffix}", tmp_path / f"vae-l2-b0{suffix}")
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="expected"):
        web.map_model("vae-l2-b0", torch.zeros(4, 784))


# 6. a bare name is a registry checkpoint, whatever the current folder holds
def test_a_bare_name_never_means_a_file_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vae-l2-b1").mkdir()  # as in results/studies/
    assert checkpoints.paths("vae-l2-b1")[1] == checkpoints.CHECKPOINT_DIR / "vae-l2-b1.json"
    assert registry.status("vae-l2-b1") == "valid"
    shutil.rmtree(tmp_path / "vae-l2-b1")
    (tmp_path / "vae-l2-b1").write_text("")  # a file of that name, and another model's pair beside it
    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED / f"vae-l2-b4{suffix}", tmp_path / f"vae-l2-b1{suffix}")
    assert checkpoints.read_sidecar("vae-l2-b1")["beta"] == 1.0
    assert checkpoints.load("./vae-l2-b1")[1]["beta"] == 4.0  # ./ names a checkpoint here


# 7. a resumed study refuses a folder whose seeds were scored with other settings
def fake_training(spec, train_subset, iw_k):
    torch.manual_seed(spec.seed)
    metrics = {"neg_elbo": 150.0 + spec.seed, "reconstruction": 140.0, "kl": 10.0, "iw_nll": 148.0,
               "iw_k": iw_k, "iw_images": min(spec.iw_images, 10_000), "active_units": 2}
    return models.build(spec.kind, spec.latent_dim), [{"epoch": 1, "precision": "float32"}], metrics


@pytest.mark.parametrize("changed", [{"iw_k": 500}, {"iw_images": 200}])
def test_a_resumed_study_refuses_other_settings(tmp_path, changed):
    study.run("vae-l2-b1", "0", tmp_path, iw_k=5, iw_images=100, progress=False, train_fn=fake_training)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        study.run("vae-l2-b1", "1", tmp_path, **{"iw_k": 5, "iw_images": 100, **changed}, progress=False,
                  train_fn=fake_training)
    assert snapshot(tmp_path) == before
    study.run("vae-l2-b1", "1", tmp_path, iw_k=5, iw_images=100, progress=False, train_fn=fake_training)


# 8. every scoring function checks its images at its door
SCORERS = {
    "evaluate": lambda m, x: evaluate.evaluate(m, x),
    "train.evaluate": lambda m, x: train.evaluate(m, x),
    "importance_weighted_bound": lambda m, x: evaluate.importance_weighted_bound(m, x, k=2),
    "test_metrics": lambda m, x: registry.test_metrics(m, x, iw_images=2, k=2),
    "elbo": lambda m, x: evaluate.elbo(m, x),
    "encode_dataset": lambda m, x: evaluate.encode_dataset(m, x),
    "active_units": lambda m, x: evaluate.active_units(m, x),
    "refine_posterior": lambda m, x: inference.refine_posterior(m, x, steps=1),
}


@pytest.mark.parametrize("bad", ["times 255", "negative", "nan", "float64"])
@pytest.mark.parametrize("scorer", SCORERS)
def test_scoring_functions_check_their_images(scorer, bad):
    x = torch.rand(4, 784)
    x = {"times 255": x * 255, "negative": -x, "nan": x.masked_fill(x > 0.5, float("nan")), "float64": x.double()}[bad]
    with pytest.raises(ValueError, match="x must|NaN"):
        SCORERS[scorer](tiny_vae(), x)


# 9. a run whose last step breaks the weights is a divergence, not a result
def test_a_diverged_run_raises():
    with pytest.raises(train.TrainingDiverged):
        train.fit(tiny_vae(), torch.rand(64, 784), torch.rand(8, 784), epochs=1, lr=1e300, batch_size=64,
                  progress=False)


# 10. a reader sees the old model or the new one while another process saves, never "damaged"
def test_loads_during_saves_see_the_old_or_the_new_model(tmp_path):
    stem = tmp_path / "busy"
    checkpoints.save(stem, tiny_vae(0), CONFIG)
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time, torch
from vaelib import checkpoints, models
config = {CONFIG!r}
seed, end = 0, None
while end is None or time.monotonic() < end:
    seed += 1
    torch.manual_seed(seed % 2)
    checkpoints.save({str(stem)!r}, models.VAE(latent_dim=2, hidden_dim=8), config)
    if end is None:
        end = time.monotonic() + 4
        print("saving", flush=True)
"""], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "saving"
        loads = 0
        while writer.poll() is None:
            checkpoints.load(stem)  # never CheckpointError
            loads += 1
        assert loads >= 20
    finally:
        writer.kill()
        writer.wait()


# 11. a huge damaged weights file is refused by its size, before it is read
def test_a_huge_weights_file_is_refused_by_its_size(tmp_path, monkeypatch):
    stem = tmp_path / "big"
    checkpoints.save(stem, tiny_vae(), CONFIG)
    with open(tmp_path / "big.safetensors", "r+b") as handle:
        handle.truncate(3 * 2**30)  # sparse: takes no disk
    real = type(tmp_path).read_bytes

    def read_bytes(self):
        assert self.suffix != ".safetensors", "read the weights whole"
        return real(self)

    monkeypatch.setattr(type(tmp_path), "read_bytes", read_bytes)
    with pytest.raises(checkpoints.CheckpointError, match="more than the .* bytes"):
        checkpoints.load(stem)


# 12. a sweep's grid is bounded before it is built
def test_a_huge_sweep_grid_is_refused_first(tmp_path, fake_papermill):
    names = [f"p{i}" for i in range(9)]
    notebook = tiny_notebook(tmp_path / "grid.ipynb", names)
    with pytest.raises(ValueError, match="at most 1000"):
        sweep.run(str(notebook), [["p0", *map(str, range(40))], ["p1", *map(str, range(40))]], out=str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="at most 1000"):
        sweep.run(str(notebook), [[name, *map(str, range(10))] for name in names], out=str(tmp_path / "b"))
    assert time.perf_counter() - start < 5


# 13. files of the wrong shape are one clear error, not a crash
@pytest.mark.parametrize("record", [{"row": {}}, "text", {"row": {"recipe": "vae-l2-b1", "seed": "0"}, "config": {},
                                                            "metrics": {}},
                                    {"row": {"recipe": "vae-l2-b1", "seed": 0, "neg_elbo": float("nan")}, "config": {},
                                     "metrics": {}}])
def test_a_study_metrics_file_of_the_wrong_shape_is_named(tmp_path, record):
    (tmp_path / "seed-0-metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="seed-0-metrics.json is damaged"):
        study.finished_rows(tmp_path)


def test_a_notebook_without_metadata_is_refused(tmp_path, capsys):
    notebook = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])))
    del notebook["metadata"]
    (tmp_path / "bare.ipynb").write_text(json.dumps(notebook))
    assert main(["sweep", str(tmp_path / "bare.ipynb"), "-p", "x", "1", "--out", str(tmp_path / "o")]) == 2
    assert "is not a Jupyter notebook" in one_line_error(capsys)


# 14. a failed download is a failure of the machine (exit 1); only http(s) is followed; the reply is bounded
class Attacks(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        kind = self.path.split("/")[1]
        if kind == "missing":
            self.send_error(404)
        elif kind == "wrong":
            body = b"\x1f\x8b" + bytes(100)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif kind == "ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x")
            self.end_headers()
        elif kind == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()
        elif kind == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(70 * 2**20))
            self.end_headers()
            try:
                for _ in range(70):
                    self.wfile.write(bytes(2**20))
            except OSError:
                pass


@pytest.fixture(scope="module")
def attack_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("kind", ["missing", "wrong", "file", "ftp", "loop", "huge"])
def test_a_failed_download_exits_1(tmp_path, attack_server, kind, capsys):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in data.DATASETS["mnist"].sha256:
        if name != "t10k-labels-idx1-ubyte":
            os.symlink(data.raw_folder("mnist") / f"{name}.gz", folder / f"{name}.gz")
    assert main(["download", "--root", str(tmp_path), "--mirror", f"{attack_server}/{kind}/"]) == 1
    err = one_line_error(capsys)
    assert "could not download t10k-labels-idx1-ubyte.gz" in err and "root:" not in err
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in data.DATASETS["mnist"].sha256
                                                             if n != "t10k-labels-idx1-ubyte")
    with pytest.raises(data.DownloadError):
        data.download("mnist", tmp_path, mirrors=(f"{attack_server}/{kind}/",))


def test_a_mirror_that_is_not_http_is_a_bad_argument(tmp_path, capsys):
    assert main(["download", "--root", str(tmp_path), "--mirror", "file:///etc/"]) == 2
    assert "must be an http:// or https:// address" in one_line_error(capsys)


# 15. a True/False argument takes True or False, never a string read as truthy
FLAGS = {
    "fit(progress)": lambda: train.fit(tiny_vae(), torch.rand(8, 784), epochs=0, progress="no"),
    "importance_weighted_bound(progress)": lambda: evaluate.importance_weighted_bound(
        tiny_vae(), torch.rand(2, 784), k=2, progress="no"),
    "test_metrics(progress)": lambda: registry.test_metrics(tiny_vae(), torch.rand(2, 784), 2, 2, progress="no"),
    "load_mnist(download_missing)": lambda: data.load_mnist("test", download_missing="no"),
    "Batches(shuffle)": lambda: data.Batches(torch.zeros(4, 2), shuffle="no"),
    "save(overwrite)": lambda: checkpoints.save("/nonexistent/x", tiny_vae(), CONFIG, overwrite="no"),
    "save_trained(overwrite)": lambda: registry.save_trained("/nonexistent/x", registry.recipe("vae-l2-b1"),
                                                             tiny_vae(), [], {}, overwrite="no"),
    "load_or_train(progress)": lambda: registry.load_or_train("vae-l2-b1", progress="no"),
    "train_recipe(progress)": lambda: registry.train_recipe(registry.recipe("vae-l2-b1"), progress="no"),
    "retrain_and_save(progress)": lambda: registry.retrain_and_save("vae-l2-b1", progress="no"),
    "test_images(binarized)": lambda: registry.test_images(binarized="no"),
    "Autoencoder(bottleneck_relu)": lambda: models.Autoencoder(bottleneck_relu="no"),
    "ConvVAE(fast)": lambda: models.ConvVAE(fast="no"),
    "export(overwrite)": lambda: web.export("/nonexistent/models.js", overwrite="no"),
    "study.run(progress)": lambda: study.run("vae-l2-b1", "0", "/nonexistent", progress="no"),
    "sweep.run(overwrite)": lambda: sweep.run(str(REPO / "chapters" / "01_data.ipynb"), [["x", "1"]],
                                              "/nonexistent", overwrite="no"),
}


@pytest.mark.parametrize("call", FLAGS)
def test_a_string_flag_is_refused(call):
    with pytest.raises(ValueError, match="must be True or False"):
        FLAGS[call]()


# 16. a wrong library input is one clear ValueError at the door
x4 = torch.rand(4, 784)
INPUTS = {
    "load_mnist(root=123)": lambda: data.load_mnist("test", root=123),
    "load_mnist(dataset=list)": lambda: data.load_mnist("test", dataset=["mnist"]),
    "binarize(x * 5)": lambda: data.binarize(x4 * 5),
    "Batches(batch_size=True)": lambda: data.Batches(x4, batch_size=True),
    "Batches(seed=-1)": lambda: data.Batches(x4, seed=-1),
    "fit(meta images)": lambda: train.fit(tiny_vae(), torch.empty(4, 784, device="meta"), epochs=0, progress=False),
    "fit(a string)": lambda: train.fit("vae", x4, epochs=0, progress=False),
    "fit(float64 model)": lambda: train.fit(tiny_vae().double(), x4, epochs=0, progress=False),
    "fit(sparse images)": lambda: train.fit(tiny_vae(), x4.to_sparse(), epochs=0, progress=False),
    "evaluate(float64 images)": lambda: train.evaluate(tiny_vae(), x4.double()),
    "evaluate(batch_size=0)": lambda: train.evaluate(tiny_vae(), x4, batch_size=0),
    "iw(images_per_chunk=-1)": lambda: train.importance_weighted_bound(tiny_vae(), x4, k=2, images_per_chunk=-1),
    "VAE(hidden_dim=-5)": lambda: models.VAE(hidden_dim=-5),
    "VAE(hidden_dim=2.5)": lambda: models.VAE(hidden_dim=2.5),
    "Autoencoder(hidden_dim=0)": lambda: models.Autoencoder(hidden_dim=0),
    "ConditionalVAE(hidden_dim=-1)": lambda: models.ConditionalVAE(hidden_dim=-1),
    "load_or_train(directory=123)": lambda: registry.load_or_train("vae-l2-b1", directory=123),
    "checkpoints.load(123)": lambda: checkpoints.load(123),
    "checkpoints.load(None)": lambda: checkpoints.load(None),
    "load(expected='beta')": lambda: checkpoints.load("vae-l2-b1", expected="beta"),
    "build(kind=list)": lambda: models.build(["vae"]),
    "recipe(list)": lambda: registry.recipe(["vae-l2-b1"]),
    "parse_seeds(a range cut short)": lambda: study.parse_seeds("0-99999999"),
    "custom_recipe(kind=list)": lambda: registry.custom_recipe(kind=["vae"]),
    "load extra tensor: one line": lambda: checkpoints.load(extra_tensor_checkpoint()),
}


def extra_tensor_checkpoint():
    """A checkpoint, sealed, whose weights hold one tensor too many: torch's message has several lines."""
    import hashlib
    import safetensors.torch
    import pathlib
    import tempfile
    folder = pathlib.Path(tempfile.mkdtemp())
    stem = folder / "extra"
    checkpoints.save(stem, tiny_vae(), CONFIG)
    tensors = {**safetensors.torch.load_file(folder / "extra.safetensors"), "extra": torch.zeros(3).half()}
    payload = safetensors.torch.save(tensors)
    (folder / "extra.safetensors").write_bytes(payload)
    sidecar = json.loads((folder / "extra.json").read_text())
    checkpoints.write_sidecar(stem, {**sidecar, "weights_sha256": hashlib.sha256(payload).hexdigest()})
    return stem


@pytest.mark.parametrize("call", INPUTS)
def test_a_wrong_library_input_is_one_value_error(call):
    with pytest.raises(ValueError) as error:
        INPUTS[call]()
    assert "\n" not in str(error.value)
    if "=" in call:  # the message names the argument
        assert call.split("(")[1].split("=")[0] in str(error.value)


def test_a_directory_given_as_a_string_works(tmp_path):
    checkpoints.save(tmp_path / "vae-l2-b1", *checkpoints.load("vae-l2-b1")[:1],
                     checkpoints.saved_config(checkpoints.read_sidecar("vae-l2-b1")))
    assert registry.load_or_train("vae-l2-b1", directory=str(tmp_path), progress=False).latent_dim == 2


# 17. a command checks what would make it fail before it does any work
def test_evaluate_save_checks_the_folder_first(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    checkpoints.save(locked / "mine", tiny_vae(), CONFIG)
    real = files.write_temporary

    def write_temporary(target, payload, suffix=".tmp"):
        if target.parent == locked:  # a read-only folder (chmod does not stop root)
            raise PermissionError(13, "Permission denied", str(target))
        return real(target, payload, suffix)

    monkeypatch.setattr(files, "write_temporary", write_temporary)
    monkeypatch.setattr(registry, "test_metrics", lambda *a, **k: pytest.fail("scored before checking --save"))
    assert main(["evaluate", "--save", str(locked / "mine")]) == 2
    assert "Permission denied" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="float16 trains on CUDA")
def test_a_float16_study_on_a_cpu_is_refused_first(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="float16"):
        study.run("vae-l2-b1", "0", tmp_path, precision="float16", progress=False, train_fn=fake_training)
    assert list(tmp_path.iterdir()) == [] and time.perf_counter() - start < 5
