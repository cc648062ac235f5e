"""Re-run a chapter over a grid of parameters with papermill, and tabulate what each run reports.

    python -m vaelib sweep chapters/04_beta.ipynb -p beta 0 1 2 4 8 -p epochs 5

Each run's executed notebook is written to `--out` (the originals are never touched; a file already there is
replaced only with `--overwrite`, and every name is checked before the first run). A chapter
reports its numbers from the cell tagged `results`, which prints one line: `RESULTS {json}`; the
sweep collects the scalar entries of that dict into a markdown table.
Introduced in: the README, for instructors.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from . import checks, files


def parse_value(text: str):
    """'4' -> 4, '0.5' -> 0.5, 'true' -> True, 'null' -> None, anything else stays a string."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):  # ValueError: a number of more than 4300 digits
        return text
    if isinstance(value, (dict, list)):
        raise ValueError(f"the value {text!r:.60} is a JSON {type(value).__name__}: a sweep value must be a number, "
                         f"true/false, null or a string")
    return value


def file_label(chosen: dict) -> str:
    """'beta=4_epochs=5', safe as a file name: a '/' or other odd character becomes '_'."""
    label = "_".join(f"{name}={value}" for name, value in chosen.items())
    return re.sub(r"[^\w.=+-]", "_", label)[:150]


def markdown_cell(value) -> str:
    """A table cell: floats to two decimals; a '|' escaped and line breaks joined, so the row stays one row."""
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return " ".join(text.split()).replace("|", "\\|")


check_notebook = checks.check_notebook  # its home is checks.py


def notebook_results(path: str | Path) -> dict:
    """The dict printed by the executed notebook's `results` cell."""
    notebook = json.loads(files.read_bounded(Path(path), checks.MAX_NOTEBOOK_BYTES, "a notebook"))
    for cell in notebook["cells"]:
        if "results" in cell.get("metadata", {}).get("tags", []):
            for output in cell.get("outputs", []):
                for line in "".join(output.get("text", "")).splitlines():
                    if line.startswith("RESULTS "):
                        return json.loads(line[len("RESULTS "):])
    raise ValueError(f"{path} has no output line 'RESULTS {{...}}' in a cell tagged 'results'")


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed; the others' notebooks and table are written all the same."""


def write_table(rows: list[dict], folder: Path, stem: str) -> Path:
    """`<stem>_sweep.md` (a markdown table) and `<stem>_sweep.json` (the same rows) in `folder`."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(map(markdown_cell, columns)) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(markdown_cell(row.get(c, "")) for c in columns) + " |")
    table = folder / f"{stem}_sweep.md"
    files.atomic_write_bytes(table, ("\n".join(lines) + "\n").encode())
    files.atomic_write_bytes(folder / f"{stem}_sweep.json", (json.dumps(rows, indent=1) + "\n").encode())
    return table


def run(notebook: str, parameters: list[list[str]], out: str = "_build/sweeps", timeout: float = 3600,
        overwrite: bool = False) -> Path:
    """Execute `notebook` once per point of the grid; returns the path of the markdown table.

    The table is rewritten after every run, so an interrupted sweep keeps what it finished. A run that
    fails, or whose cell runs longer than `timeout` seconds (a hung kernel), is recorded in the table's
    `error` column and the sweep goes on; `SweepFailed` is raised at the end, naming the failed runs
    (their executed notebooks hold the traceback).
    """
    import papermill

    source = checks.check_path("notebook", notebook)
    check_notebook(source)
    checks.check_number("timeout", timeout, 0.0, strict=True)  # seconds
    checks.check_flag("overwrite", overwrite)
    folder = checks.check_path("--out", out)
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, (list, tuple)) or not all(
            isinstance(entry, (list, tuple)) and all(isinstance(v, str) for v in entry) for entry in parameters):
        raise ValueError("parameters must be a list of [name, value, ...] lists of strings, e.g. [['beta', '0', '1']]")
    checks.check_grid_size([len(entry) - 1 for entry in parameters if len(entry) >= 2])
    grid = {}
    for entry in parameters:
        if len(entry) < 2:
            raise ValueError(f"-p needs a name and at least one value, got {entry}")
        if entry[0] in grid:
            raise ValueError(f"-p {entry[0]} is given twice: put all its values in one, e.g. -p {entry[0]} "
                             f"{' '.join(map(str, grid[entry[0]]))} {' '.join(entry[1:])}")
        grid[entry[0]] = [parse_value(v) for v in entry[1:]]
    known = papermill.inspect_notebook(str(source))  # the names that its `parameters` cell sets
    unknown = [name for name in grid if name not in known]
    if unknown:  # papermill would only warn, and run the defaults: a sweep that sweeps nothing
        raise ValueError(f"{source.name} has no parameter {', '.join(unknown)}; "
                         f"its parameters cell sets: {', '.join(known) or 'nothing'}")
    points = list(itertools.product(*grid.values()))
    targets, used = [], set()
    for number, values in enumerate(points, start=1):
        label = file_label(dict(zip(grid, values)))
        target = folder / f"{source.stem}__{label}.ipynb"
        if target.name in used:  # two values that differ only in odd characters: keep both notebooks
            target = folder / f"{source.stem}__{label}__{number}.ipynb"
        used.add(target.name)
        targets.append(target)
    files.check_writable_folder(folder, "--out")
    for path in [*targets, folder / f"{source.stem}_sweep.md", folder / f"{source.stem}_sweep.json"]:
        checks.check_replaceable(path, overwrite, what="the sweep's files")  # nothing of the user's is replaced
    rows, failures = [], []
    for number, (values, target) in enumerate(zip(points, targets), start=1):
        chosen = dict(zip(grid, values))
        label = file_label(chosen)
        if not overwrite and target.exists():  # appeared while the sweep ran
            raise ValueError(f"{target} appeared while the sweep ran: it is kept; choose another --out")
        print(f"[{number}/{len(points)}] running {source.name} with {chosen} -> {target}", flush=True)
        try:
            papermill.execute_notebook(str(source), str(target), parameters=chosen, kernel_name="python3",
                                       cwd=str(source.parent), progress_bar=False, execution_timeout=timeout)
            results = notebook_results(target)
        except Exception as error:  # a failed cell, a timeout, a dead kernel: this run failed, the sweep goes on
            reason = (f"{error.ename}: {error.evalue}" if hasattr(error, "ename")
                      else f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error))
            reason = " ".join(reason.split())[:300]
            failures.append(f"{label} ({reason})")
            print(f"[{number}/{len(points)}] failed: {reason}", flush=True)
            rows.append({**chosen, "error": reason})
        else:
            rows.append({**chosen, **{k: v for k, v in results.items() if isinstance(v, (int, float, str))}})
        table = write_table(rows, folder, source.stem)
    print(table.read_text())
    if failures:
        raise SweepFailed(f"{len(failures)} of {len(points)} runs failed: {'; '.join(failures)}. The table "
                          f"{table} has a row for every run; each failed run's notebook in {folder} shows "
                          f"its traceback")
    return table
