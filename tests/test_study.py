"""The seed study: resumable after a kill, its table's format, the median seed, and its refusals."""
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch

from vaelib import checkpoints, models, registry, study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_training(spec, train_subset, iw_k, calls=None):
    """A stand-in for training: an untrained model and metrics that depend on the seed alone."""
    if calls is not None:
        calls.append(spec.seed)
    torch.manual_seed(spec.seed)
    model = models.build(spec.kind, spec.latent_dim)
    neg_elbo = 150.0 + (spec.seed * 7919 % 13) / 4  # distinct values, out of order
    metrics = {"neg_elbo": neg_elbo, "reconstruction": neg_elbo - 5.0, "kl": 5.0, "iw_nll": neg_elbo - 3.0,
               "iw_k": iw_k, "iw_images": min(spec.iw_images, 10_000), "active_units": 2}  # as the study's own settings
    return model, [{"epoch": 1, "precision": "float32"}], metrics


@pytest.fixture(params=[2, 16], ids=["2-cores", "16-cores"])
def cores(request, monkeypatch):
    """The study as it runs on a 2-core machine (one job by default) and on a 16-core one (eight)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(request.param)), raising=False)
    assert study.default_jobs() == request.param // 2
    return request.param


def slow_second_seed(spec, train_subset, iw_k):
    """Seed 1 waits for a file named by $STUDY_RELEASE (or 60 s), as if training long; the others are quick.

    Module-level, so that the worker processes of a parallel study can import it by name."""
    if spec.seed == 1:
        release = os.environ["STUDY_RELEASE"]
        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
    return fake_training(spec, train_subset, iw_k)


def rows_without_seconds(folder):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in study.load_table(folder)]


def test_a_study_interrupted_mid_seed_resumes_and_skips_finished_seeds(tmp_path, cores):
    """The serial path, chosen explicitly (jobs=1), as a local training function needs."""
    calls = []

    def interrupted(spec, train_subset, iw_k):
        if spec.seed == 2:
            raise KeyboardInterrupt  # as if killed while training seed 2
        return fake_training(spec, train_subset, iw_k, calls)

    with pytest.raises(KeyboardInterrupt):
        study.run("vae-l2-b1", "0-4", tmp_path / "a", progress=False, train_fn=interrupted, jobs=1)
    folder = tmp_path / "a" / "vae-l2-b1"
    assert calls == [0, 1]
    assert sorted(p.name for p in folder.glob("seed-*")) == [
        "seed-0-metrics.json", "seed-0.json", "seed-0.safetensors",
        "seed-1-metrics.json", "seed-1.json", "seed-1.safetensors"]  # nothing of seed 2, no temporaries
    assert [row["seed"] for row in study.load_table(folder)] == [0, 1]  # the table holds what finished
    kept = (folder / "seed-0-metrics.json").read_bytes()

    calls.clear()
    study.run("vae-l2-b1", "0-4", tmp_path / "a", progress=False, jobs=1,
              train_fn=lambda *args: fake_training(*args, calls=calls))
    assert calls == [2, 3, 4]  # the finished seeds are skipped
    assert (folder / "seed-0-metrics.json").read_bytes() == kept

    study.run("vae-l2-b1", "0-4", tmp_path / "b", progress=False, jobs=1, train_fn=fake_training)  # never interrupted
    assert rows_without_seconds(folder) == rows_without_seconds(tmp_path / "b" / "vae-l2-b1")
    calls.clear()
    study.run("vae-l2-b1", "0-4", tmp_path / "a", progress=False, jobs=1,
              train_fn=lambda *args: fake_training(*args, calls=calls))
    assert calls == []  # all done: nothing to train


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from vaelib import study
from test_study import slow_second_seed
study.run("vae-l2-b1", {seeds!r}, {out!r}, progress=False, train_fn=slow_second_seed, jobs={jobs})
"""


@pytest.mark.parametrize("jobs, seeds, finished_first", [(1, "0-2", [0]), (2, "0-3", [0, 2, 3])],
                         ids=["serial", "two-jobs"])
def test_a_study_killed_by_sigkill_loses_only_the_seed_in_training(tmp_path, jobs, seeds, finished_first):
    """A real SIGKILL of the study's process while seed 1 trains, on the serial path and on the parallel one
    (two worker processes, a module-level training function): every other seed is kept, seed 1 is not
    half-written, no orphaned worker writes it afterwards, and a re-run trains only what is missing."""
    release = tmp_path / "release"
    code = KILLED_RUN.format(tests=os.path.join(REPO, "tests"), out=str(tmp_path), seeds=seeds, jobs=jobs)
    process = subprocess.Popen([sys.executable, "-c", code],
                               env={**os.environ, "PYTHONPATH": REPO, "STUDY_RELEASE": str(release)})
    folder = tmp_path / "vae-l2-b1"
    markers = [folder / f"seed-{seed}-metrics.json" for seed in finished_first]
    deadline = time.monotonic() + 120
    while not all(m.exists() for m in markers) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the study ended before it could be killed"
    assert all(m.exists() for m in markers), "the quick seeds did not finish in 120 s"
    time.sleep(0.3)  # seed 1 is still waiting for its release
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    release.touch()  # an orphaned worker would now finish seed 1 and write its metrics
    time.sleep(1.0)
    assert not (folder / "seed-1-metrics.json").exists() and not (folder / "seed-1.safetensors").exists()
    calls = []
    study.run("vae-l2-b1", seeds, tmp_path, progress=False, jobs=1, train_fn=lambda *a: fake_training(*a, calls=calls))
    assert calls == [1] + ([] if jobs > 1 else [2])
    assert [row["seed"] for row in study.load_table(folder)] == list(range(len(calls) + len(finished_first)))


def test_the_table_has_its_columns_in_csv_and_markdown_and_the_summary_lists_every_seed(tmp_path, cores):
    """The default number of jobs: one process on 2 cores, three worker processes (of eight) on 16."""
    table = study.run("vae-l2-b1", [0, 1, 2], tmp_path, progress=False, train_fn=fake_training)
    with open(table, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        body = list(reader)
    assert tuple(header) == study.COLUMNS and len(body) == 3
    rows = study.load_table(table)
    assert rows[1]["seed"] == 1 and isinstance(rows[1]["neg_elbo"], float) and rows[1]["train_subset"] is None
    assert rows[1]["precision"] == "float32" and rows[1]["active_units"] == 2
    markdown = (table.parent / "table.md").read_text().splitlines()
    assert markdown[0].startswith("| recipe | seed | -ELBO | BCE | KL | -IW bound")
    assert len(markdown) == 2 + 3 and all(line.count("|") == len(study.COLUMNS) + 1 for line in markdown)
    values = [row["neg_elbo"] for row in rows]
    summary = (table.parent / "summary.md").read_text()
    assert f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} | 3 |" in summary
    assert all(f"{row['seed']}: {row['neg_elbo']:.2f}" in summary for row in rows)
    median = study.median_seed(rows)
    assert f"median seed (-ELBO): {median}" in summary
    model, sidecar = checkpoints.load(study.median_checkpoint(table.parent))
    assert sidecar["seed"] == median and isinstance(model, models.VAE)
    record = json.loads((table.parent / "seed-2-metrics.json").read_text())
    assert record["config"]["seed"] == 2 and record["metrics"]["neg_elbo"] == rows[2]["neg_elbo"]


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0], [5.0, 1.0, 2.0, 4.0], [1.0, 1.0, 9.0, 9.0], [7.5]])
def test_median_seed_against_a_direct_computation(values):
    table = [{"recipe": "r", "seed": 10 + i, "neg_elbo": v} for i, v in enumerate(values)]
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    distances = [abs(v - median) for v in values]
    expected = 10 + distances.index(min(distances))  # the first (smallest) seed among the nearest
    assert study.median_seed(table) == expected


def test_median_seed_of_another_metric_and_a_missing_one():
    table = [{"recipe": "r", "seed": s, "neg_elbo": 1.0, "kl": k} for s, k in [(0, 9.0), (1, 2.0), (2, 5.0)]]
    assert study.median_seed(table, "kl") == 2
    with pytest.raises(ValueError, match="no values of 'iw_nll'"):
        study.median_seed(table, "iw_nll")


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("0,2,5", [0, 2, 5]),
                                         ("0-2,7", [0, 1, 2, 7])])
def test_seed_ranges(text, seeds):
    assert study.parse_seeds(text) == seeds


def test_default_jobs_is_one_per_two_cores():
    assert [study.default_jobs(c) for c in (1, 2, 3, 16)] == [1, 1, 1, 8]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vaelib", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": REPO})


@pytest.mark.parametrize("args, message", [
    (["no-such"], "unknown model name 'no-such': choose one of autoencoder-l2"),
    (["vae-l2-b1", "--seeds", "4-0"], "--seeds 4-0 runs backwards: write 0-4"),
    (["vae-l2-b1", "--seeds", "a-b"], "--seeds must be a range or a list of seeds such as 0-4"),
    (["vae-l2-b1", "--seeds", "1,1"], "names a seed twice"),
    (["vae-l2-b1", "--out", "README.md"], "README.md is a file, not a folder"),
    (["vae-l2-b1", "--jobs", "0"], "--jobs must be an integer >= 1"),
    (["vae-l2-b1", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["vae-l2-b1", "--train-subset", "70000"], "--train-subset must be an integer <= 60000"),
    (["vae-l2-b1", "--epochs", "two"], "invalid int value: 'two'"),
])
def test_bad_study_arguments_give_one_line_and_exit_2_before_any_work(tmp_path, args, message):
    result = run_cli("study", *args, cwd=REPO if "README.md" in args else tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_a_tiny_real_study_from_the_command_line(tmp_path):
    """One seed of the real recipe on 256 images for one epoch, then a re-run that trains nothing."""
    args = ("study", "vae-l2-b1", "--seeds", "0", "--epochs", "1", "--train-subset", "256", "--iw-k", "10",
            "--iw-images", "100", "--out", str(tmp_path))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    [row] = study.load_table(tmp_path / "vae-l2-b1-e1-n256")
    assert row["epochs"] == 1 and row["train_subset"] == 256 and row["iw_k"] == 10 and row["iw_images"] == 100
    assert abs(row["neg_elbo"] - (row["bce"] + row["kl"])) < 1e-3 and row["precision"] == "float32"
    weights = tmp_path / "vae-l2-b1-e1-n256" / "seed-0.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_cli(*args)
    assert again.returncode == 0 and weights.stat().st_mtime_ns == stamp


def test_two_jobs_give_the_same_table_as_one(tmp_path):
    study.run("vae-l2-b1", "0-2", tmp_path / "one", jobs=1, progress=False, train_fn=fake_training)
    study.run("vae-l2-b1", "0-2", tmp_path / "two", jobs=2, progress=False, train_fn=fake_training)
    assert rows_without_seconds(tmp_path / "one" / "vae-l2-b1") == rows_without_seconds(tmp_path / "two" / "vae-l2-b1")


def test_a_parallel_study_refuses_a_training_function_its_workers_cannot_import(tmp_path):
    def local(spec, train_subset, iw_k):
        return fake_training(spec, train_subset, iw_k)

    with pytest.raises(ValueError, match="with jobs=2, train_fn must be a module-level function"):
        study.run("vae-l2-b1", "0-1", tmp_path, jobs=2, progress=False, train_fn=local)


def test_a_precision_override_trains_every_seed_in_it_in_its_own_folder(tmp_path, cores):
    asked = []

    def training(spec, train_subset, iw_k):
        asked.append(spec.mixed_precision)
        return fake_training(spec, train_subset, iw_k)

    study.run("vae-l2-b1", "0-1", tmp_path, progress=False, jobs=1, train_fn=training, precision="bfloat16")
    assert asked == ["bfloat16", "bfloat16"] and (tmp_path / "vae-l2-b1-bfloat16" / "table.csv").is_file()
    with pytest.raises(ValueError, match="--precision must be one of float32, bfloat16, float16"):
        study.run("vae-l2-b1", "0-1", tmp_path, progress=False, jobs=1, train_fn=training, precision="fp8")


def test_ship_median_copies_the_median_seed_and_its_sidecar_says_so(tmp_path):
    study.run("vae-l2-b1", "0-4", tmp_path, progress=False, train_fn=fake_training)
    folder = tmp_path / "vae-l2-b1"
    values = {row["seed"]: row["neg_elbo"] for row in study.load_table(folder)}
    middle = sorted(values.values())[2]  # five distinct values: the median is one of them
    seed = study.ship_median(folder, tmp_path / "shipped")
    assert values[seed] == middle
    shipped, sidecar = checkpoints.load(tmp_path / "shipped")
    chosen, _ = checkpoints.load(folder / f"seed-{seed}")
    assert sidecar["seed"] == seed and sidecar["chosen"].startswith(f"seed {seed}: of the study's seeds (0, 1, 2, 3, 4")
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), chosen.state_dict().values()))


def test_code_collapse_counts_dead_coordinates_and_clipped_images():
    torch.manual_seed(0)
    model = models.Autoencoder(2)
    x = torch.rand(50, 784)
    with torch.no_grad():
        model.encoder[2].bias[0] = -1e4  # coordinate 0 is below zero for every image: dead after the ReLU
        model.encoder[2].bias[1] = 1e4  # coordinate 1 is always positive
    assert registry.code_collapse(model, x) == {"dead_units": 1, "clipped_share": 1.0}
    with torch.no_grad():
        model.encoder[2].bias[0] = 1e4
    assert registry.code_collapse(model, x) == {"dead_units": 0, "clipped_share": 0.0}


def test_show_seeds_draws_every_seed_and_the_mean_and_sd_of_each_study():
    import matplotlib

    matplotlib.use("Agg")
    from vaelib import plots

    tables = {"a": [{"seed": s, "neg_elbo": v} for s, v in enumerate([150.0, 152.0, 157.0])],
              "b": [{"seed": s, "neg_elbo": v} for s, v in enumerate([160.0, 161.0])]}
    ax = plots.show_seeds(tables, "neg_elbo", shipped={"a": 1})
    points = [c.get_offsets()[:, 1].tolist() for c in ax.collections if len(c.get_offsets())]
    assert [150.0, 152.0, 157.0] in points and [160.0, 161.0] in points and [152.0] in points  # the ring: seed 1
    bars = {}
    for container in ax.containers:  # one errorbar per study: the mean, and a bar from mean - sd to mean + sd
        (low, high), = [segment[:, 1] for segment in container.lines[2][0].get_segments()]
        bars[round(float(container.lines[0].get_ydata()[0]), 6)] = (high - low) / 2
    expected = {153.0: statistics.stdev([150, 152, 157]), 160.5: statistics.stdev([160, 161])}
    assert sorted(bars) == pytest.approx(sorted(expected))
    assert [bars[key] for key in sorted(bars)] == pytest.approx([expected[key] for key in sorted(expected)])
