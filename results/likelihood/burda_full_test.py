"""The -IW bound (k = 5000) of vae-l50-bin on all 10,000 binarized test images, for two binarizations.

Burda et al. (2016) score the whole test set; chapter 9 reads this table beside their 86.76 nats.
Run from the repository root (about 17 minutes per binarization on a 2-core CPU, nothing else running):
    python results/likelihood/burda_full_test.py   # -> results/likelihood/burda_full_test.csv
Resumable: a binarization already in the table is not computed again.
"""
import csv
import math
import os
import time
from pathlib import Path

import torch

from vaelib import data, losses, registry, train

OUT = Path("results/likelihood/burda_full_test.csv")
K = int(os.environ.get("BURDA_K", 5000))  # importance samples; BURDA_K=1000 takes a fifth of the time
FIELDS = ("binarization_seed", "images", "k", "neg_iw_mean", "neg_iw_se", "bits_per_dim", "seconds")

rows = list(csv.DictReader(OUT.open())) if OUT.exists() else []
done = {int(row["binarization_seed"]) for row in rows}
model = registry.load_or_train("vae-l50-bin").cpu()
grey, _ = data.load_mnist("test")  # (10000, 784) grey levels
for seed in [int(s) for s in os.environ.get("BURDA_SEEDS", "0,1").split(",")]:  # 0: the course's binarization (registry.test_images); 1: a second draw, for the spread
    if seed in done:
        continue
    start = time.perf_counter()
    binary = data.binarize(grey, seed=seed)  # (10000, 784) in {0, 1}
    bound = -train.importance_weighted_bound(model, binary, k=K, seed=seed, progress=True)  # (10000,) nats
    mean, se = bound.mean().item(), bound.std().item() / math.sqrt(len(bound))
    rows.append({"binarization_seed": seed, "images": len(bound), "k": K, "neg_iw_mean": f"{mean:.4f}",
                 "neg_iw_se": f"{se:.4f}", "bits_per_dim": f"{losses.bits_per_dim(mean):.5f}",
                 "seconds": f"{time.perf_counter() - start:.0f}"})
    with OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"binarization {seed}: -IW bound (k = {K}) {mean:.2f} +- {se:.2f} nats over {len(bound)} images")
