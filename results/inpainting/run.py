"""Chapter 8's inpainting table: the bottom half of each test digit hidden, completed by every method.

    python results/inpainting/run.py            # -> results/inpainting.csv (resumable: one row per method)

Methods: the exact posterior on a grid (L = 2: posterior mean and posterior sample), importance sampling
from a Gaussian fitted to the visible pixels (L = 10), the chapter's heuristic loop, and the baselines
(the mean training image, the nearest neighbour, the mean of the k nearest neighbours' bottom halves,
k chosen on training images only). Scored on the hidden pixels: mean squared error, the judge's
accuracy on the completed digit, and -log p(x_hidden | x_visible) where the model gives one.
On an AMD EPYC (Zen 4, 2 cores, shared with other work) the L = 2 rows take a few minutes each over all
10,000 test images; importance sampling with the L = 10 conv decoder is the slow one, so it runs on
the first SAMPLED_IMAGES test images (its row says how many).
"""
import csv
import math
import sys
import time
from pathlib import Path

import torch

from vaelib import data, inference, judge, registry

OUT = Path("results/inpainting.csv")
FIELDS = ("method", "model", "latent_dim", "images", "judge_accuracy", "judge_se", "mse", "mse_se", "hidden_nll",
          "seconds")
SAMPLED_IMAGES = 200  # test images for the importance-sampled L = 10 completions
GRID_IMAGES = {"vae-l2-b1": 10_000, "convvae-l2-b1": 1000}  # the conv decoder is costly on a grid: ~10 min per 1,000

test_x, test_y = data.load_mnist("test")
train_x, _ = data.load_mnist("train")
visible = torch.ones(28, 28, dtype=torch.bool)
visible[14:] = False  # the bottom half hidden
visible = visible.flatten()  # (784,)
hidden = ~visible
rows = {(r["method"], r["model"]): r for r in csv.DictReader(OUT.open())} if OUT.exists() else {}


def record(method, model, latent_dim, completed, x, y, seconds, hidden_nll=None):
    errors = ((completed - x)[:, hidden] ** 2).mean(1)  # (n,) per image
    right = judge.completion_accuracy(completed, y)
    rows[(method, model)] = {
        "method": method, "model": model, "latent_dim": latent_dim, "images": len(x),
        "judge_accuracy": f"{right:.4f}", "judge_se": f"{math.sqrt(right * (1 - right) / len(x)):.4f}",
        "mse": f"{errors.mean():.5f}", "mse_se": f"{errors.std() / math.sqrt(len(x)):.5f}",
        "hidden_nll": "" if hidden_nll is None else f"{-hidden_nll.mean():.3f}", "seconds": f"{seconds:.0f}"}
    with OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows.values())
    print(f"{method:28s} {model:16s} n={len(x):5d} judge {right:.3f} mse {errors.mean():.4f} ({seconds:.0f} s)", flush=True)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - start


baselines = {"mean training image": lambda: torch.where(visible, test_x, train_x.mean(0)),
             "nearest neighbour": lambda: inference.neighbour_completion(test_x, visible, train_x, k=1)}
for method, make in baselines.items():
    if (method, "-") not in rows:
        completed, seconds = timed(make)
        record(method, "-", "", completed, test_x, test_y, seconds)  # all 10,000
if not any(m.startswith("k nearest") for m, _ in rows):
    (choice, seconds) = timed(inference.choose_neighbours, train_x, visible)
    print("k chosen on training images:", choice, flush=True)
    completed, more = timed(inference.neighbour_completion, test_x, visible, train_x, k=choice["k"])
    record(f"k nearest neighbours' mean (k = {choice['k']})", "-", "", completed, test_x, test_y, seconds + more)

for name in ("vae-l2-b1", "convvae-l2-b1"):
    model = registry.load_or_train(name).cpu()
    if ("heuristic loop (20 rounds)", name) not in rows:
        completed, seconds = timed(inference.complete_by_loop, model, test_x, visible)
        record("heuristic loop (20 rounds)", name, 2, completed, test_x, test_y, seconds)
    if ("exact posterior: mean", name) not in rows:
        parts, seconds, count = [], 0.0, GRID_IMAGES[name]
        for start in range(0, count, 1000):  # 1,000 images at a time: memory stays small
            part, s = timed(inference.complete_on_grid, model, test_x[start : start + 1000], visible)
            parts.append(part)
            seconds += s
            print(f"  {name} grid: {start + 1000} images, {seconds:.0f} s", flush=True)
        joined = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        x, y = test_x[:count], test_y[:count]
        record("exact posterior: mean", name, 2, joined["mean"], x, y, seconds, joined["log_p_hidden"])
        record("exact posterior: sample", name, 2, joined["sample"], x, y, seconds, joined["log_p_hidden"])

name = "convvae-l10-b1"
model = registry.load_or_train(name).cpu()
if ("heuristic loop (20 rounds)", name) not in rows:
    completed, seconds = timed(inference.complete_by_loop, model, test_x, visible)
    record("heuristic loop (20 rounds)", name, 10, completed, test_x, test_y, seconds)
if ("importance sampling: mean", name) not in rows:
    x, y = test_x[:SAMPLED_IMAGES], test_y[:SAMPLED_IMAGES]
    parts, seconds = [], 0.0
    for start in range(0, len(x), 100):
        part, s = timed(inference.complete_by_sampling, model, x[start : start + 100], visible, k=200, steps=50)
        parts.append(part)
        seconds += s
        print(f"  {name} sampling: {start + 100} images, {seconds:.0f} s", flush=True)
    joined = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    print(f"  effective sample size: median {joined['ess'].median():.1f} of 200", flush=True)
    record("importance sampling: mean", name, 10, joined["mean"], x, y, seconds, joined["log_p_hidden"])
    record("importance sampling: sample", name, 10, joined["sample"], x, y, seconds, joined["log_p_hidden"])
for count in sorted({SAMPLED_IMAGES, *GRID_IMAGES.values()} - {len(test_x)}):  # the baselines on the same images
    x, y = test_x[:count], test_y[:count]
    for method, make in baselines.items():
        if (method, f"- (first {count})") not in rows:
            record(method, f"- (first {count})", "", make()[:count], x, y, 0)
    knn = next(m for m, _ in rows if m.startswith("k nearest"))
    if (knn, f"- (first {count})") not in rows:
        k = int(knn.split("k = ")[1].rstrip(")"))
        record(knn, f"- (first {count})", "", inference.neighbour_completion(x, visible, train_x, k=k), x, y, 0)
    for name in GRID_IMAGES:  # the loop on the same images
        loop = ("heuristic loop (20 rounds)", f"{name} (first {count})")
        if loop not in rows:
            record(*loop, 2, inference.complete_by_loop(registry.load_or_train(name).cpu(), x, visible), x, y, 0)
print("done", file=sys.stderr)
