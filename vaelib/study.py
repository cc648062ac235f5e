"""A recipe trained over several seeds, resumably, and the results table that chapters read.

One seed is one draw: `vae-l2-b1` gives a test -ELBO of 154.1 with seed 0 and 150.8 with seed 2. A
study trains a registry recipe once per seed and reports every seed and their mean +- sd.

    python -m vaelib study vae-l2-b1 --seeds 0-4          # -> results/studies/vae-l2-b1/

The study folder holds, per finished seed, its checkpoint (`seed-3.safetensors` and `seed-3.json`,
as `checkpoints.save` writes them) and then its metrics (`seed-3-metrics.json`), each written
atomically. The metrics file is written last: it marks the seed as finished, so a re-run skips it,
and a run killed at any moment loses only the seed in training. After each seed the folder's
`table.csv`, `table.md` and `summary.md` are rewritten from the metrics files of every finished seed.
Introduced in: 04_beta
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
import pickle
import re
import signal
import statistics
import time
from pathlib import Path

import scipy.stats
import torch
from tqdm.auto import tqdm

from . import checkpoints, checks, data, device, files, registry, train

COLUMNS = ("recipe", "seed", "neg_elbo", "bce", "kl", "iw_nll", "iw_k", "iw_images", "exact_nll", "neg_elbo_exact",
           "iw_nll_exact", "exact_images", "active_units", "dead_units", "clipped_share", "precision", "epochs",
           "train_subset", "seconds")
HEADINGS = ("recipe", "seed", "-ELBO", "BCE", "KL", "-IW bound", "IW k", "IW images", "-log p(x), exact",
            "-ELBO (exact images)", "-IW (exact images)", "exact images", "active units", "dead units",
            "clipped share", "precision", "epochs", "train images", "seconds")
INTS = ("seed", "iw_k", "iw_images", "exact_images", "active_units", "dead_units", "epochs", "train_subset")
TEXT = ("recipe", "precision")
SUMMARISED = ("neg_elbo", "bce", "kl", "iw_nll", "exact_nll", "neg_elbo_exact", "iw_nll_exact", "active_units",
              "dead_units", "clipped_share", "seconds")
PRECISIONS = ("float32", "bfloat16", "float16")  # --precision: the study's own folder, `<recipe>-<precision>`


MAX_SEEDS = 10_000  # seeds in one study: a range of more is refused, never cut short


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' and '0-2,7' work too. Refused: '4-0', 'a-b', repeats."""
    seeds = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"--seeds must be a range or a list of seeds such as 0-4 or 0,1,2, got {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise ValueError(f"--seeds {part.strip()} runs backwards: write {high}-{low}")
        checks.check_seed(high)
        checks.check_positive_int("the number of --seeds", len(seeds) + high - low + 1, maximum=MAX_SEEDS)
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text} names a seed twice: name each seed once")
    return seeds


def default_jobs(cores: int | None = None) -> int:
    """One process per two cores (each with two torch threads): 1 on a 2-core machine."""
    checks.check_optional_int("cores", cores)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // 2)


def study_name(recipe: str, epochs: int | None = None, train_subset: int | None = None,
               precision: str | None = None) -> str:
    """The folder's name: the recipe's, plus what the run changed (`vae-l2-b1-bfloat16`, `vae-l2-b1-e1-n256`)."""
    return (recipe + (f"-{precision}" if precision else "") + (f"-e{epochs}" if epochs is not None else "")
            + (f"-n{train_subset}" if train_subset else ""))


def train_and_measure(spec: registry.Recipe, train_subset: int | None, iw_k: int | None):
    """(model, history, metrics) for one seed: the registry's training and its test metrics."""
    return registry.train_recipe(spec, train_subset, progress=False, iw_k=iw_k)


def _die_with_parent() -> None:
    """A worker's first act: ask Linux to kill it when the study's process dies (even by SIGKILL).

    Without this, a worker orphaned by a killed study would finish its seed and write into the folder
    while a resumed study trains the same seed. Elsewhere (no prctl) nothing is done.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def _run_seed(name, spec, stem, train_subset, iw_k, threads, train_fn=train_and_measure) -> dict:
    """Train one seed, save its checkpoint, then its metrics file (the mark that it is finished)."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model, history, metrics = train_fn(spec, train_subset, iw_k)
    seconds = time.perf_counter() - start
    registry.save_trained(stem, spec, model, history, metrics)
    row = {"recipe": name, "seed": spec.seed, "neg_elbo": metrics.get("neg_elbo"),
           "bce": metrics.get("reconstruction"), "kl": metrics.get("kl"), "iw_nll": metrics.get("iw_nll"),
           "iw_k": metrics.get("iw_k"), "iw_images": metrics.get("iw_images"),
           "exact_nll": metrics.get("exact_nll"), "neg_elbo_exact": metrics.get("neg_elbo_exact_images"),
           "iw_nll_exact": metrics.get("iw_nll_exact_images"), "exact_images": metrics.get("exact_images"),
           "active_units": metrics.get("active_units"), "dead_units": metrics.get("dead_units"),
           "clipped_share": metrics.get("clipped_share"), "precision": registry.trained_precision(history),
           "epochs": spec.epochs, "train_subset": train_subset, "seconds": round(seconds, 1)}
    record = {"row": row, "config": spec.config(), "metrics": metrics}
    files.atomic_write_bytes(Path(f"{stem}-metrics.json"), (json.dumps(record, indent=1) + "\n").encode())
    return row


MAX_RECORD_BYTES = 4 * 2**20  # a seed's metrics file takes about 2 kB
MAX_TABLE_BYTES = 64 * 2**20  # a study's table.csv: about 200 bytes a seed
ROW_TYPES = {key: (str,) if key in TEXT else (int, type(None)) if key in INTS else (int, float, type(None))
             for key in COLUMNS} | {"seed": int}


def finished_records(folder: Path) -> list[dict]:
    """Every finished seed's metrics file in `folder` ({"row", "config", "metrics"}), checked, by seed."""
    records = []
    for path in folder.glob("seed-*-metrics.json"):
        try:
            record = checks.check_record("the file", json.loads(files.read_bounded(path, MAX_RECORD_BYTES,
                                                                                   "a seed's metrics file")),
                                         {"row": dict, "config": dict, "metrics": dict})
            checks.check_record("its row", record["row"], {"recipe": str, "seed": int}, ROW_TYPES)
            if path.name != f"seed-{record['row']['seed']}-metrics.json":
                raise ValueError(f"its row is seed {record['row']['seed']}'s")
            if not all(math.isfinite(value) for value in record["row"].values() if isinstance(value, float)):
                raise ValueError("its row holds NaN or an infinite number")
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is damaged ({' '.join(str(error).split())[:120]}): delete it and run the "
                             f"study again to redo that seed") from None
        records.append(record)
    return sorted(records, key=lambda record: record["row"]["seed"])


def finished_rows(folder: Path) -> list[dict]:
    """The table's rows from every finished seed's metrics file in `folder`, by seed."""
    return [record["row"] for record in finished_records(folder)]


def settings(config: dict, row: dict) -> dict:
    """What must be equal across a study's seeds: the recipe (but its seed), epochs, train images, the IW bound's
    k and images (a finished seed's from its metrics file, or a run's from its recipe and arguments)."""
    return {**{key: value for key, value in config.items() if key != "seed"},
            **{key: row.get(key) for key in ("epochs", "train_subset", "iw_k", "iw_images")}}


def _cell(value, key: str) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) and key != "seconds" else str(value)


def write_table(folder: Path) -> Path:
    """Rewrite `table.csv`, `table.md` and `summary.md` in `folder` from its finished seeds."""
    rows = finished_rows(folder)
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if row.get(key) is None else row[key] for key in COLUMNS} for row in rows)
    files.atomic_write_bytes(folder / "table.csv", text.getvalue().encode())
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(key), key) or "-" for key in COLUMNS) + " |" for row in rows]
    files.atomic_write_bytes(folder / "table.md", ("\n".join(lines) + "\n").encode())
    files.atomic_write_bytes(folder / "summary.md", format_summary(rows).encode())
    return folder / "table.csv"


def load_table(path: str | os.PathLike) -> list[dict]:
    """A study's rows from its `table.csv` (or its folder), numbers as numbers, blanks as None.

    Introduced in: 04_beta
    """
    path = Path(path)
    path = path / "table.csv" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no study table at {path}: run `python -m vaelib study RECIPE --seeds 0-4` first")
    text = files.read_bounded(path, MAX_TABLE_BYTES, "a study's table").decode("utf-8", errors="replace")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{key: _value(key, value) for key, value in row.items()} for row in rows]


def _value(key: str, text: str):
    """A CSV cell as the table holds it: None for a blank, text, int or float by its column."""
    return None if text == "" else text if key in TEXT else int(text) if key in INTS else float(text)


def summarize(table: list[dict]) -> dict:
    """Per recipe and metric: n, mean, sd (n - 1 in the denominator; 0 for one seed) and every seed's value."""
    summary = {}
    for row in table:
        for key in SUMMARISED:
            if row.get(key) is not None:
                summary.setdefault(row["recipe"], {}).setdefault(key, {})[row["seed"]] = row[key]
    result = {}
    for recipe, metrics in summary.items():
        result[recipe] = {}
        for key, by_seed in metrics.items():
            values = list(by_seed.values())
            result[recipe][key] = {"n": len(values), "mean": statistics.fmean(values),
                                   "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": by_seed}
    return result


def format_summary(table: list[dict]) -> str:
    lines = []
    for recipe, metrics in summarize(table).items():
        lines += [f"## {recipe}", "", "| metric | mean +- sd | n | every seed |", "|---|---|---|---|"]
        for key, s in metrics.items():
            seeds = ", ".join(f"{seed}: {value:.2f}" for seed, value in s["seeds"].items())
            lines.append(f"| {HEADINGS[COLUMNS.index(key)]} | {s['mean']:.2f} +- {s['sd']:.2f} | {s['n']} | {seeds} |")
        lines += ["", f"median seed (-ELBO): {median_seed([r for r in table if r['recipe'] == recipe])}", ""]
    return "\n".join(lines)


def median_seed(table: list[dict], metric: str = "neg_elbo") -> int:
    """The seed whose `metric` is nearest the median over the table's seeds (a tie: the smaller seed).

    Introduced in: 04_beta
    """
    rows = [row for row in table if row.get(metric) is not None]
    if not rows:
        raise ValueError(f"the table has no values of {metric!r}: choose one of {', '.join(SUMMARISED)}")
    median = statistics.median(row[metric] for row in rows)
    return min(rows, key=lambda row: (abs(row[metric] - median), row["seed"]))["seed"]


def median_checkpoint(folder: str | os.PathLike, metric: str = "neg_elbo") -> Path:
    """The checkpoint (stem, as `checkpoints.load` takes it) of a study folder's median seed."""
    folder = Path(folder)
    return folder / f"seed-{median_seed(load_table(folder), metric)}"


def ship_median(folder: str | os.PathLike, stem: str | os.PathLike, metric: str = "neg_elbo") -> int:
    """Copy the study's median seed (by `metric`) to the checkpoint `stem`, its sidecar saying so.

    The registry recipe's `seed` must then name that seed, for the shipped checkpoint to match it.
    Returns the seed.
    """
    folder = Path(folder)
    table = load_table(folder)
    seed = median_seed(table, metric)
    model, sidecar = checkpoints.load(folder / f"seed-{seed}")
    config = checkpoints.saved_config(sidecar)
    seeds = ", ".join(str(row["seed"]) for row in table)
    config["chosen"] = (f"seed {seed}: of the study's seeds ({seeds}, in the study {folder.name}), the one whose "
                        f"{HEADINGS[COLUMNS.index(metric)]} is nearest their median")
    checkpoints.save(stem, model, config, sidecar["history"], sidecar["metrics"], dtype=checkpoints.DTYPES[sidecar["dtype"]])
    return seed


def run(recipe: str, seeds: str | list[int], out: str | os.PathLike = "results/studies", epochs: int | None = None,
        train_subset: int | None = None, jobs: int | None = None, iw_k: int | None = None, iw_images: int | None = None,
        progress: bool = True, train_fn=train_and_measure, precision: str | None = None) -> Path:
    """Train `recipe` once per seed not yet finished in its study folder; returns the table's path.

    Introduced in: 04_beta
    """
    spec = registry.recipe(recipe)  # every input is checked before any work
    if not isinstance(seeds, (str, list, tuple, range)):
        raise ValueError(f"seeds must be a range such as '0-4' or a list of seeds, got {type(seeds).__name__}")
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else [checks.check_seed(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds must name each seed once, at most {MAX_SEEDS} of them, got {len(seeds)} seeds")
    if not seeds:
        raise ValueError("--seeds names no seed: give a range such as 0-4")
    if epochs is not None:
        spec = dataclasses.replace(spec, epochs=checks.check_positive_int("--epochs", epochs))
    if train_subset is not None:
        checks.check_positive_int("--train-subset", train_subset, maximum=60_000)
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        spec = dataclasses.replace(spec, mixed_precision=precision if precision != "float32" else False)
    if iw_images is not None:
        spec = dataclasses.replace(spec, iw_images=checks.check_positive_int("--iw-images", iw_images, maximum=10_000))
    iw_k = spec.iw_k if iw_k is None else checks.check_positive_int("--iw-k", iw_k, maximum=train.MAX_K)
    cores = default_jobs() * 2
    jobs = default_jobs() if jobs is None else checks.check_positive_int("--jobs", jobs)
    checks.check_flag("progress", progress)
    out = checks.check_path("--out", out)
    device.choose_precision(None, None, None, spec.mixed_precision)  # float16 on a CPU: refused before any work
    data.load_mnist("test", dataset=spec.dataset)  # the data is there and sound, before any training
    folder = Path(out) / study_name(recipe, epochs, train_subset, precision)
    scored = spec.kind != "autoencoder"  # an autoencoder has no IW bound
    wanted = settings(spec.config(), {"epochs": spec.epochs, "train_subset": train_subset,
                                      "iw_k": iw_k if scored else None,
                                      "iw_images": min(spec.iw_images, 10_000) if scored else None})
    records = finished_records(folder) if folder.is_dir() else []
    for record in records:
        found = settings(record["config"], record["row"])
        if found != wanted:
            key = next(key for key in {**wanted, **found} if wanted.get(key) != found.get(key))
            raise ValueError(f"{folder} holds seed {record['row']['seed']} trained with other settings ({key} "
                             f"{found.get(key)!r}, here {wanted.get(key)!r}): a study's seeds must share them; "
                             f"choose another --out, or give the same settings")
    folder = files.check_writable_folder(folder, "--out")
    done = {record["row"]["seed"]: record["row"] for record in records}
    todo = [seed for seed in seeds if seed not in done]
    threads = max(1, cores // min(jobs, max(1, len(todo)))) if jobs > 1 else 0
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{recipe} seeds", unit="seed",
               disable=not progress)
    tasks = [(recipe, dataclasses.replace(spec, seed=seed), folder / f"seed-{seed}", train_subset, iw_k, threads)
             for seed in todo]
    if jobs == 1 or len(todo) <= 1:
        for task in tasks:
            _run_seed(*task, train_fn=train_fn)
            write_table(folder)
            bar.update()
    else:
        try:  # each worker process imports it by name: a local function or a lambda cannot travel
            pickle.dumps(train_fn)
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise ValueError(f"with jobs={jobs}, train_fn must be a module-level function that the worker "
                             f"processes can import ({error}): define it at the top of a module, or pass "
                             f"jobs=1") from error
        context = multiprocessing.get_context("spawn")  # fork with torch's thread pools can hang
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context,
                                                    initializer=_die_with_parent) as pool:
            futures = [pool.submit(_run_seed, *task, train_fn=train_fn) for task in tasks]
            for future in concurrent.futures.as_completed(futures):
                future.result()
                write_table(folder)
                bar.update()
    bar.close()
    return write_table(folder)



def compare(table_a: list[dict], table_b: list[dict], metric: str = "neg_elbo", alpha: float = 0.05) -> dict:
    """Is `metric` different between two studies? Seeds are the unit: each seed is one independent run.

    Returns the difference of the means (a minus b), its 95 % interval (Welch's t, Welch-Satterthwaite
    degrees of freedom), Welch's two-sided p, the exact two-sided permutation p (every way of splitting
    the pooled seeds into groups of the two sizes: 252 ways for 5 and 5, so p >= 2/252 = 0.008), and
    `text`, one line that says it. The difference counts as resolved only when both p are below `alpha`;
    otherwise the line says "not resolved with n seeds", and so must the sentence the book writes.
    Introduced in: 04_beta
    """
    a, b = (_values(table, metric) for table in (table_a, table_b))
    if min(len(a), len(b)) < 2:
        raise ValueError(f"compare needs at least two seeds per study with {metric!r}: got {len(a)} and {len(b)}")
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        raise ValueError(f"every seed of both studies has the same {metric!r}: there is no spread to test against")
    dof = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = scipy.stats.t.ppf(0.975, dof) * se
    welch = 2 * scipy.stats.t.sf(abs(difference) / se, dof)
    pooled, observed = a + b, abs(difference)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = sum(abs(statistics.fmean(pooled[i] for i in chosen)
                      - statistics.fmean(pooled[i] for i in range(len(pooled)) if i not in chosen)) >= observed - 1e-12
                  for chosen in splits)
    permutation = extreme / len(splits)
    resolved = welch < alpha and permutation < alpha
    name = HEADINGS[COLUMNS.index(metric)] if metric in COLUMNS else metric
    text = (f"{name}: {_recipe(table_a)} minus {_recipe(table_b)} {difference:+.2f} (95 % interval "
            f"{difference - half:+.2f} to {difference + half:+.2f}), Welch p = {welch:.3f}, permutation p = "
            f"{permutation:.3f}, {len(a)} and {len(b)} seeds: "
            + ("resolved" if resolved else f"not resolved with {len(a)} and {len(b)} seeds"))
    return {"metric": metric, "n_a": len(a), "n_b": len(b), "mean_a": statistics.fmean(a), "mean_b": statistics.fmean(b),
            "difference": difference, "interval": (difference - half, difference + half), "welch_p": welch,
            "permutation_p": permutation, "resolved": resolved, "text": text}


def _values(table: list[dict], metric: str) -> list[float]:
    values = [float(row[metric]) for row in table if row.get(metric) is not None]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the table's {metric!r} holds a value that is not finite: rerun that seed")
    return values


def _recipe(table: list[dict]) -> str:
    names = sorted({str(row.get("recipe")) for row in table})
    return names[0] if len(names) == 1 else "+".join(names)
