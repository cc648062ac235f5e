"""Every chapter runs through papermill with small retraining parameters, and its results are checked.

(nbval runs the same chapters with their default parameters: `pytest --nbval-lax chapters`.)
"""
import json
from pathlib import Path

import papermill
import pytest

from vaelib import sweep

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
QUICK = {"retrain": True, "epochs": 2, "train_subset": 2048, "test_images": 2000}
FIGURES = {"01_data": 2, "02_autoencoder": 4, "03_vae": 3, "04_beta": 2, "05_latent_walk": 2, "06_conv_vae": 2,
           "07_disentanglement": 3, "08_beyond": 2, "09_loss": 3, "10_collapse": 5, "11_conditional": 7, "12_collection": 5}


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
    quick = {key: value for key, value in QUICK.items() if key != "test_images" or name != "01_data"}
    papermill.execute_notebook(str(CHAPTERS / f"{name}.ipynb"), str(output), parameters=quick,
                               kernel_name="python3", cwd=str(CHAPTERS), progress_bar=False)
    notebook = json.loads(output.read_text())
    assert figures(notebook) >= FIGURES[name]
    results = sweep.notebook_results(output)
    for history in histories(results):
        assert len(history) == QUICK["epochs"]
        assert all(row["test_images"] == QUICK["train_subset"] for row in history)  # a quick run's epoch scores
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
    assert [row["beta"] for row in rows] == [0.0, 2.0]  # each run reports the beta it was given
    assert all(row["kl"] > 0 and row["epochs"] == 1 for row in rows)  # one epoch each, a code in use


def test_beta_chapter_loads_the_shipped_model_of_its_beta(tmp_path):
    """beta = 4 without retrain measures the shipped vae-l2-b4, not a vae-l2-b1 retrained with beta = 4."""
    from vaelib import checkpoints

    output = tmp_path / "04_beta.ipynb"
    papermill.execute_notebook(str(CHAPTERS / "04_beta.ipynb"), str(output), parameters={"beta": 4.0, "test_images": 500,
                               "iw_images": 50, "iw_k": 10}, kernel_name="python3", cwd=str(CHAPTERS), progress_bar=False)
    results = sweep.notebook_results(output)
    assert results["model"] == "vae-l2-b4"
    assert results["history"] == checkpoints.read_sidecar(CHAPTERS.parent / "checkpoints" / "vae-l2-b4")["history"]


def test_notebook_results_needs_a_results_cell(tmp_path):
    path = tmp_path / "empty.ipynb"
    path.write_text(json.dumps({"cells": []}))
    with pytest.raises(ValueError, match="cell tagged 'results'"):
        sweep.notebook_results(path)


def tiny_notebook(path: Path) -> Path:
    """A parameters cell (x = 1) and a results cell that fails for negative x."""
    import nbformat

    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    results = "import json, math\nprint('RESULTS', json.dumps({'root': math.sqrt(x)}))"
    notebook.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell(results, metadata={"tags": ["results"]})]
    nbformat.write(notebook, path)
    return path


def test_sweep_refuses_an_unknown_parameter(tmp_path):
    with pytest.raises(ValueError, match="has no parameter bta; its parameters cell sets: retrain, epochs"):
        sweep.run(str(CHAPTERS / "04_beta.ipynb"), [["bta", "4"]], out=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    from vaelib.__main__ import main

    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    assert main(["sweep", str(notebook), "-p", "x", "4", "-1", "9", "--out", str(tmp_path / "out")]) == 1
    assert "1 of 3 runs failed: x=-1 (ValueError: math domain error)" in capsys.readouterr().err
    rows = json.loads((tmp_path / "out" / "tiny_sweep.json").read_text())
    assert [row.get("root") for row in rows] == [2.0, None, 3.0]  # the runs after the failure still ran
    assert rows[1]["error"] == "ValueError: math domain error"
    assert (tmp_path / "out" / "tiny__x=-1.ipynb").exists()  # with the traceback in it


def exercises_and_solutions(path: Path) -> tuple[list[int], list[tuple[int, list]]]:
    """The numbers of a chapter's exercises, and (number, tags) of each solution cell, in order."""
    import re

    notebook = json.loads(path.read_text())
    numbers, solutions, in_exercises = [], [], False
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.lstrip().startswith("## "):
            in_exercises = source.lstrip().startswith("## Exercises")
        if cell["cell_type"] == "markdown" and in_exercises:
            numbers += [int(n) for n in re.findall(r"^(\d+)\. ", source, flags=re.M)]
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code" and "solution" in tags:
            match = re.match(r"# Solution to exercise (\d+)", source)
            assert match, f"{path.name}: a solution cell must start with '# Solution to exercise N'"
            solutions.append((int(match.group(1)), tags))
    return numbers, solutions


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_exercise_has_a_hidden_solution_that_the_chapter_runs(name):
    """The solutions are code cells of the chapter, so the papermill runs above and nbval execute them."""
    numbers, solutions = exercises_and_solutions(CHAPTERS / f"{name}.ipynb")
    assert numbers == list(range(1, len(numbers) + 1)) and numbers, f"{name}: exercises must be numbered 1, 2, ..."
    assert [number for number, _ in solutions] == numbers, f"{name}: one solution per exercise, in order"
    assert all("hide-cell" in tags for _, tags in solutions), f"{name}: a solution is hidden behind a toggle"
