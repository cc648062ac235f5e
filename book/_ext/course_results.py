"""The book's last page reads its numbers from the committed results/ tables, so that no number is copied by hand.

- `{study-results}`: one table row per study, from `results/studies/<study>/table.csv` (`vaelib.study`'s
  tables). Each content line is `label | study | metrics | chapter`, metrics as the table's column names
  (`neg_elbo bce kl iw_nll active_units`); a row shows each metric's mean +- sd over the seeds, their number,
  and the median seed (the one the course ships).
- `{results-rows}`: chosen columns of a results CSV (`results/inpainting.csv`, `results/likelihood/...`),
  with `:where: column=value` to keep only the matching rows and `:headings: a | b | ...` to name the columns.
"""
from __future__ import annotations

import csv
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from vaelib import study


def study_rows(root: Path, lines: list[str]) -> list[list[str]]:
    """The `{study-results}` table's body: [label, seeds, results, median seed, chapter] per content line."""
    rows = []
    for line in lines:
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 4:
            raise ValueError(f"a study-results line is 'label | study | metrics | chapter', got {line!r}")
        label, name, metrics, chapter = parts
        table = study.load_table(root / "results" / "studies" / name)
        summary = study.summarize(table)[table[0]["recipe"]]
        shown = []
        for key in metrics.split():
            if key not in summary:
                raise ValueError(f"the study {name} has no values of {key!r}: choose from {', '.join(summary)}")
            heading = study.HEADINGS[study.COLUMNS.index(key)]
            shown.append(f"{heading} {summary[key]['mean']:.2f} ± {summary[key]['sd']:.2f}")
        rows.append([label, str(len(table)), "; ".join(shown), str(study.median_seed(table)), chapter])
    return rows


def csv_rows(path: Path, columns: list[str], where: str | None = None) -> list[list[str]]:
    """The `{results-rows}` table's body: `columns` of the CSV's rows (those with column == value for `where`)."""
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    if where:
        key, _, value = where.partition("=")
        table = [row for row in table if row[key.strip()] == value.strip()]
    missing = [column for column in columns if table and column not in table[0]]
    if missing or not table:
        raise ValueError(f"{path}: no rows, or no column {missing}")
    return [[row[column] for column in columns] for row in table]


def table_node(header: list[str], rows: list[list[str]]) -> nodes.table:
    table, group = nodes.table(), nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]

    def row_node(cells):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=cell)
            row += entry
        return row

    head, body = nodes.thead(), nodes.tbody()
    head += row_node(header)
    body += [row_node(cells) for cells in rows]
    group += [head, body]
    return table


class StudyResults(SphinxDirective):
    has_content = True

    def run(self):
        root = Path(self.env.srcdir)
        for line in self.content:
            if line.strip():
                self.env.note_dependency(str(root / "results" / "studies" / line.split("|")[1].strip() / "table.csv"))
        rows = study_rows(root, list(self.content))
        return [table_node(["model", "seeds", "test metrics per image, nats (mean ± sd over the seeds)",
                            "median seed", "chapter"], rows)]


class ResultsRows(SphinxDirective):
    required_arguments = 1  # the CSV, relative to the repository
    option_spec = {"columns": directives.unchanged_required, "where": directives.unchanged,
                   "headings": directives.unchanged}

    def run(self):
        path = Path(self.env.srcdir) / self.arguments[0]
        self.env.note_dependency(str(path))
        columns = self.options["columns"].split()
        headings = [h.strip() for h in self.options["headings"].split("|")] if "headings" in self.options else columns
        if len(headings) != len(columns):
            raise self.error(f"{len(headings)} headings for {len(columns)} columns")
        return [table_node(headings, csv_rows(path, columns, self.options.get("where")))]


def setup(app):
    app.add_directive("study-results", StudyResults)
    app.add_directive("results-rows", ResultsRows)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
