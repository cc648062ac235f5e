"""Every chapter runs through papermill with small retraining parameters, and its results are checked.

(nbval runs the same chapters with their default parameters: `pytest --nbval-lax chapters`.)
"""
import json
from pathlib import Path

import papermill
import pytest

from vaelib import sweep

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
QUICK = {"retrain": True, "epochs": 2, "train_subset": 2048}
FIGURES = {"01_data": 2, "02_autoencoder": 4, "03_vae": 3, "04_beta": 2, "05_latent_walk": 2, "06_conv_vae": 2,
           "07_disentanglement": 3, "08_beyond": 2}


def figures(notebook: dict) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook["cells"] for output in cell.get("outputs", []))


def histories(results):
    """Every training history in a chapter's results."""
    if isinstance(results, dict):
        for key, value in results.items():
            if key == "history" and isinstance(value, list):
                yield value  # one model's history
            elif key == "history" and isinstance(value, dict):
                yield from value.values()  # several models' histories, by name
            else:
                yield from histories(value)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_chapter_runs_with_quick_retraining(name, tmp_path):
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(CHAPTERS / f"{name}.ipynb"), str(output), parameters=QUICK,
                               kernel_name="python3", cwd=str(CHAPTERS), progress_bar=False)
    notebook = json.loads(output.read_text())
    assert figures(notebook) >= FIGURES[name]
    results = sweep.notebook_results(output)
    for history in histories(results):
        assert len(history) == QUICK["epochs"]
        assert history[-1]["train_loss"] < history[0]["train_loss"], f"{name}: the loss did not go down"
    if name == "01_data":
        assert results["max_mu_raw"] > 10 * results["max_mu_scaled"]
    else:
        assert list(histories(results)), f"{name} reports no training history"


def test_sweep_writes_notebooks_and_a_table(tmp_path):
    table = sweep.run(str(CHAPTERS / "04_beta.ipynb"), [["beta", "0", "2"], ["retrain", "true"],
                      ["epochs", "1"], ["train_subset", "1024"]], out=str(tmp_path))
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| beta | retrain | epochs | train_subset |") and len(lines) == 4
    assert (tmp_path / "04_beta__beta=2_retrain=True_epochs=1_train_subset=1024.ipynb").exists()
    rows = json.loads((tmp_path / "04_beta_sweep.json").read_text())
    assert rows[0]["kl"] > rows[1]["kl"]  # beta = 0 leaves the code a higher rate than beta = 2


def test_notebook_results_needs_a_results_cell(tmp_path):
    path = tmp_path / "empty.ipynb"
    path.write_text(json.dumps({"cells": []}))
    with pytest.raises(ValueError, match="cell tagged 'results'"):
        sweep.notebook_results(path)
