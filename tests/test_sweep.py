"""The sweep: every odd value is either refused up front or recorded; a hung run does not block the rest."""
import json
from pathlib import Path

import nbformat
import pytest

from vaelib import sweep
from vaelib.__main__ import main


def tiny_notebook(path: Path, results: str = "print('RESULTS', json.dumps({'x': x}))") -> Path:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    notebook.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("import json\n" + results, metadata={"tags": ["results"]})]
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill's execution without a kernel: writes the executed notebook with x's RESULTS line,
    and fails as papermill does when the output's folder does not exist."""
    import papermill

    def execute_notebook(source, target, parameters, **kwargs):
        notebook = json.loads(Path(source).read_text())
        notebook["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout",
                                            "text": "RESULTS " + json.dumps({"x": parameters["x"]}) + "\n"}]
        with open(target, "x") as out:  # FileNotFoundError for a '/' in the name, as papermill gives
            out.write(json.dumps(notebook))

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)


def test_a_value_with_a_slash_runs_and_is_kept(tmp_path, fake_papermill):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    sweep.run(str(notebook), [["x", "1", "a/b", "a_b"]], out=str(tmp_path / "out"))
    rows = json.loads((tmp_path / "out" / "tiny_sweep.json").read_text())
    assert [row["x"] for row in rows] == [1, "a/b", "a_b"] and "error" not in str(rows)
    assert len(list((tmp_path / "out").glob("tiny__*.ipynb"))) == 3  # no run overwrote another


def test_a_pipe_or_newline_in_a_value_keeps_the_table_one_row_per_run(tmp_path, fake_papermill):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    table = sweep.run(str(notebook), [["x", "a|b", "two\nlines"]], out=str(tmp_path / "out"))
    assert table.read_text().splitlines() == ["| x |", "|---|", r"| a\|b |", "| two lines |"]


@pytest.mark.parametrize("args, message", [
    (["-p", "x", '{"a": 1}'], "is a JSON dict: a sweep value must be a number, true/false, null or a string"),
    (["-p", "x", "[1, 2]"], "is a JSON list"),
    (["-p", "x", "1", "2", "-p", "x", "3"], "-p x is given twice: put all its values in one, e.g. -p x 1 2 3"),
    (["-p", "x", "1", "--timeout", "0"], "timeout must be a finite number > 0, got 0.0"),
])
def test_bad_sweep_arguments_are_one_line_and_nothing_runs(tmp_path, args, message, capsys, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("ran despite a bad argument"))
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    assert main(["sweep", str(notebook), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("text", ['{"cells": "no"}', "[1, 2]", "not json at all"])
def test_a_file_that_is_not_a_notebook_is_refused(tmp_path, text, capsys):
    path = tmp_path / "notes.ipynb"
    path.write_text(text)
    assert main(["sweep", str(path), "-p", "x", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "notes.ipynb is not a Jupyter notebook" in err and len(err.strip().splitlines()) == 1


def test_a_hung_run_times_out_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    """A real kernel: the cell sleeps for a minute when x is 2, and the sweep gives it 2 seconds."""
    notebook = tiny_notebook(tmp_path / "tiny.ipynb", "import time\nif x == 2: time.sleep(60)\n"
                                                      "print('RESULTS', json.dumps({'x': x}))")
    assert main(["sweep", str(notebook), "-p", "x", "2", "--timeout", "2", "--out", str(tmp_path / "out")]) == 1
    assert "1 of 1 runs failed: x=2 (CellTimeoutError" in capsys.readouterr().err
    rows = json.loads((tmp_path / "out" / "tiny_sweep.json").read_text())
    assert rows[0]["x"] == 2 and "CellTimeoutError" in rows[0]["error"]
