"""The speed benchmark still runs and reports what the README quotes (its timings are not checked here:
speed is measured by running the benchmark, not by tests)."""
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_speed.py"


def test_benchmark_runs_one_epoch_and_prints_its_table():
    result = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "1", "--skip-conv", "--rounds", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {match[0]: match for match in re.findall(
        r"^\| (conventional|vaelib|floor) \| ([\d.]+) \| ([\d.]+)x faster \| ([\d.]+)x the floor \| ([\d.]+|-) \|$",
        result.stdout, flags=re.MULTILINE)}
    assert sorted(rows) == ["conventional", "floor", "vaelib"], result.stdout
    assert float(rows["conventional"][2]) == 1.0 and float(rows["floor"][3]) == 1.0  # the two baselines
    for kind in ("conventional", "vaelib"):  # one epoch of the examples' recipe: far below the 543 nats of x = 0.5
        assert 100 < float(rows[kind][4]) < 160, rows[kind]
    assert re.search(r"^CPU: .+; PyTorch .+ capability \w+; native bfloat16: (yes|no); \d+ threads; "
                     r"SGEMM 2048\^3: \d+ GFLOP/s$", result.stdout, flags=re.MULTILINE), result.stdout
    steps = dict(re.findall(r"^\| (float32|bfloat16 autocast) \| [\d.]+ \| [\d.]+x \| (picked|) \|$",
                            result.stdout, flags=re.MULTILINE))
    assert sorted(steps) == ["bfloat16 autocast", "float32"], result.stdout
    assert sorted(steps.values()) == ["", "picked"]  # "auto" picks exactly one of the two
    picked = "float32" if steps["float32"] else "bfloat16"
    assert re.search(rf"^auto picks {picked} \(", result.stdout, flags=re.MULTILINE), result.stdout


def test_the_gpu_benchmark_says_when_there_is_no_gpu():
    import torch

    if torch.cuda.is_available():
        import pytest
        pytest.skip("a CUDA device is here: make benchmark prints its rows")
    result = subprocess.run([sys.executable, str(SCRIPT.with_name("gpu_speed.py")), "--epochs", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "no CUDA device here: no GPU rows" in result.stdout, result.stderr
