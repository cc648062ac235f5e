"""Re-run a chapter over a grid of parameters with papermill, and tabulate what each run reports.

    python -m vaelib sweep chapters/04_beta.ipynb -p beta 0 1 2 4 8 -p epochs 5

Each run's executed notebook is written to `--out` (the originals are never touched). A chapter
reports its numbers from the cell tagged `results`, which prints one line: `RESULTS {json}`; the
sweep collects the scalar entries of that dict into a markdown table.
Introduced in: the README, for instructors.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path


def parse_value(text: str):
    """'4' -> 4, '0.5' -> 0.5, 'true' -> True, 'null' -> None, anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def notebook_results(path: str | Path) -> dict:
    """The dict printed by the executed notebook's `results` cell."""
    notebook = json.loads(Path(path).read_text())
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
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    table = folder / f"{stem}_sweep.md"
    table.write_text("\n".join(lines) + "\n")
    (folder / f"{stem}_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    return table


def run(notebook: str, parameters: list[list[str]], out: str = "_build/sweeps") -> Path:
    """Execute `notebook` once per point of the grid; returns the path of the markdown table.

    The table is rewritten after every run, so an interrupted sweep keeps what it finished. A run that
    fails is recorded in the table's `error` column and the sweep goes on; `SweepFailed` is raised at
    the end, naming the failed runs (their executed notebooks hold the traceback).
    """
    import papermill

    source = Path(notebook)
    if not source.is_file():
        raise FileNotFoundError(f"no notebook at {source}")
    grid = {}
    for entry in parameters:
        if len(entry) < 2:
            raise ValueError(f"-p needs a name and at least one value, got {entry}")
        grid[entry[0]] = [parse_value(v) for v in entry[1:]]
    known = papermill.inspect_notebook(str(source))  # the names that its `parameters` cell sets
    unknown = [name for name in grid if name not in known]
    if unknown:  # papermill would only warn, and run the defaults: a sweep that sweeps nothing
        raise ValueError(f"{source.name} has no parameter {', '.join(unknown)}; "
                         f"its parameters cell sets: {', '.join(known) or 'nothing'}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    points = list(itertools.product(*grid.values()))
    rows, failures = [], []
    for number, values in enumerate(points, start=1):
        chosen = dict(zip(grid, values))
        label = "_".join(f"{name}={value}" for name, value in chosen.items())
        target = folder / f"{source.stem}__{label}.ipynb"
        print(f"[{number}/{len(points)}] running {source.name} with {chosen} -> {target}", flush=True)
        try:
            papermill.execute_notebook(str(source), str(target), parameters=chosen, kernel_name="python3",
                                       cwd=str(source.parent), progress_bar=False)
            results = notebook_results(target)
        except (papermill.PapermillExecutionError, ValueError) as error:
            reason = f"{error.ename}: {error.evalue}" if hasattr(error, "ename") else str(error)
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
