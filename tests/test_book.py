"""Book checks: what a reader of the rendered pages would trip over, read from the sources without running them.

Each check is a small function that returns the problems it finds; the tests run it over every page of the
table of contents and, so that a check can fail, over a made-up page that has the problem. They parse the
notebooks as JSON and take well under a second: no chapter is executed.
"""
import ast
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "book" / "_ext"))
import course_results  # noqa: E402  (the last page's directives)

NUMBERS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def toc_files() -> list[str]:
    """Every page of _toc.yml, in order: 'book/intro', 'chapters/01_data', ..."""
    def walk(entry):
        if isinstance(entry, dict):
            for key in ("root", "file"):
                if key in entry:
                    yield entry[key]
            for value in entry.values():
                if isinstance(value, (list, dict)):
                    yield from walk(value)
        elif isinstance(entry, list):
            for item in entry:
                yield from walk(item)
    return list(walk(yaml.safe_load((REPO / "_toc.yml").read_text())))


def chapters() -> list[str]:
    return [name for name in toc_files() if name.startswith("chapters/")]


def cells(page: str) -> list[dict]:
    """A page's cells as {'cell_type', 'source', 'tags'}: a notebook's own, or a Markdown page as one cell."""
    path = REPO / f"{page}.ipynb"
    if path.exists():
        return [{"cell_type": c["cell_type"], "source": "".join(c["source"]), "tags": c["metadata"].get("tags", [])}
                for c in json.loads(path.read_text())["cells"]]
    return [{"cell_type": "markdown", "source": (REPO / f"{page}.md").read_text(), "tags": []}]


def outside_code(markdown: str) -> str:
    """Markdown without its fenced blocks (code, directives) and inline code spans; line breaks kept."""
    kept, fence = [], None
    for line in markdown.split("\n"):
        opening = re.match(r"\s*(`{3,}|~{3,})", line)
        if fence is None and opening:
            fence = opening.group(1)
            kept.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                fence = None
            kept.append("")
        else:
            kept.append(re.sub(r"(`+)(?:(?!\1).)+?\1", "code", line))
    return "\n".join(kept)


# --- the checks ------------------------------------------------------------------------------------------

def repeated_parameter_lines(source: str) -> list[str]:
    """Lines of a parameters cell that occur twice, and names that it assigns twice (a merge's leftovers)."""
    lines = [line.strip() for line in source.split("\n") if line.strip() and not line.strip().startswith("#")]
    problems = sorted({line for line in lines if lines.count(line) > 1})
    names = [target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
             for target in node.targets if isinstance(target, ast.Name)]
    return problems + sorted({f"{name} assigned {names.count(name)} times" for name in names if names.count(name) > 1})


def repeated_code_lines(source: str) -> list[str]:
    """Two or more consecutive lines that a code cell repeats right after them (a loop pasted twice)."""
    lines = [line for line in source.split("\n") if line.strip()]
    found = []
    for size in range(2, len(lines) // 2 + 1):
        for start in range(len(lines) - 2 * size + 1):
            if lines[start:start + size] == lines[start + size:start + 2 * size]:
                found.append(" / ".join(line.strip() for line in lines[start:start + size]))
    return found


def repeated_headings(page_cells: list[dict]) -> list[str]:
    headings = [line.strip() for cell in page_cells if cell["cell_type"] == "markdown"
                for line in outside_code(cell["source"]).split("\n") if re.match(r"#{1,6} ", line)]
    return sorted({heading for heading in headings if headings.count(heading) > 1})


def math_problems(markdown: str) -> list[str]:
    """An indented `$$` (inside a list item it turns the sentences after it into maths), an unclosed `$`,
    and LaTeX commands outside maths (they show as raw text on the page)."""
    text = outside_code(markdown)
    problems = [f"indented $$: {line.strip()[:60]!r}" for line in text.split("\n")
                if "$$" in line and re.match(r"\s", line)]
    text = re.sub(r"\$\$.+?\$\$", " ", text, flags=re.S)  # display maths
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = re.sub(r"\\\$", "", paragraph)  # an escaped dollar is text
        rest = re.sub(r"\$[^$\n]*(?:\n[^$\n]*)*?\$", " ", paragraph)  # inline maths
        if "$" in rest:
            problems.append(f"unclosed $: {paragraph.strip()[:60]!r}")
        problems += [f"LaTeX outside maths: {command!r}" for command in re.findall(r"\\[A-Za-z]+", rest)]
    return problems


VAELIB_MODULES = ("checkpoints", "checks", "data", "device", "evaluate", "files", "grid", "inference", "judge",
                  "losses", "models", "plots", "registry", "sidecar", "study", "sweep", "train", "web", "widgets")


def vaelib_call_problems(markdown: str, modules=VAELIB_MODULES) -> list[str]:
    """Every `module.name(...)` or `module.name` in the text's code spans, for a vaelib module: the name exists,
    and takes the positional and keyword arguments written."""
    problems = []
    for span in re.findall(r"`([^`\n]+)`", markdown):
        try:
            tree = ast.parse(span.strip(), mode="eval")
        except SyntaxError:
            tree = None
        if tree is None:  # not an expression (a command line, a fragment): check the names only
            for module, name in re.findall(rf"\b({'|'.join(modules)})\.([A-Za-z_]\w*)", span):
                if not hasattr(importlib.import_module(f"vaelib.{module}"), name):
                    problems.append(f"{module}.{name} does not exist ({span!r})")
            continue
        for node in ast.walk(tree):
            target = node.func if isinstance(node, ast.Call) else node
            if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id in modules):
                continue
            module = importlib.import_module(f"vaelib.{target.value.id}")
            if not hasattr(module, target.attr):
                problems.append(f"{target.value.id}.{target.attr} does not exist ({span!r})")
                continue
            if isinstance(node, ast.Call) and callable(getattr(module, target.attr)):
                try:
                    signature = inspect.signature(getattr(module, target.attr))
                except (TypeError, ValueError):
                    continue
                try:
                    signature.bind_partial(*[None] * len(node.args),
                                           **{k.arg: None for k in node.keywords if k.arg is not None})
                except TypeError as error:
                    problems.append(f"{span!r}: {error}")
    return problems


def counts_in_prose(text: str) -> list[int]:
    """The numbers in 'the twelve chapters', 'all 12 chapters', 'twelve executable notebooks'."""
    number = rf"({'|'.join(NUMBERS)}|\d+)"
    found = re.findall(rf"\b(?:the|all|its|course's)\s+{number}\s+chapters\b", text, flags=re.I)
    found += re.findall(rf"\b{number}\s+executable\s+notebooks\b", text, flags=re.I)
    return [int(n) if n.isdigit() else NUMBERS[n.lower()] for n in found]


# --- the checks, able to fail ----------------------------------------------------------------------------

def test_each_check_finds_the_problem_it_is_for():
    assert repeated_parameter_lines("a = 1  # x\ninpaint_images = 300\ninpaint_images = 300\n")
    assert repeated_parameter_lines("a = 1\nb = 2\na = 3\n") == ["a assigned 2 times"]
    assert not repeated_parameter_lines("a = 1\nb = 2  # b\n")
    loop = 'for n, m in pairs:\n    print(n, m)\n'
    assert repeated_code_lines("x = 1\n" + loop + loop + "y = 2") and not repeated_code_lines("x = 1\n" + loop)
    page = [{"cell_type": "markdown", "source": "## Ten sliders\n\ntext", "tags": []},
            {"cell_type": "markdown", "source": "## Ten sliders\n```python\n# not a heading\n```", "tags": []}]
    assert repeated_headings(page) == ["## Ten sliders"] and not repeated_headings(page[:1])
    indented = "- **KL.** Per dimension,\n  $$\\mathrm{KL}_j = \\mu_j^2$$\n  summed over $j$."
    assert any("indented $$" in p for p in math_problems(indented))
    assert any("LaTeX outside" in p for p in math_problems("zero at \\sigma_j = 1"))
    assert any("unclosed" in p for p in math_problems("a price of $5 and"))
    assert not math_problems("top level:\n\n$$\n\\log p(x) \\ge 0\n$$\n\nwith $\\sigma = 1$ and `\\sigma` in code")
    assert vaelib_call_problems("try `plots.traversals(vae, bases=mu[0])`")  # no such keyword
    assert vaelib_call_problems("use `train.no_such_function(x)`")
    assert vaelib_call_problems("`plots.show_images(x, 10, None, None, 2, 99, 7)`")  # too many arguments
    assert not vaelib_call_problems("`plots.traversals(vae, base=mu[0])` and `registry.load_or_train(\"vae-l2-b0\")`")
    assert counts_in_prose("all twelve chapters and 12 executable notebooks; the next two pages") == [12, 12]
    assert counts_in_prose("what the eleven\nchapters built") == [11]


# --- the book --------------------------------------------------------------------------------------------

def test_no_parameters_cell_repeats_a_line_or_sets_a_name_twice():
    problems = {page: repeated_parameter_lines(cell["source"]) for page in chapters() for cell in cells(page)
                if "parameters" in cell["tags"]}
    assert len(problems) == len(chapters()), "every chapter has one parameters cell"
    assert not {page: p for page, p in problems.items() if p}


def test_no_code_cell_repeats_its_own_lines():
    problems = {page: repeated_code_lines(cell["source"]) for page in chapters() for cell in cells(page)
                if cell["cell_type"] == "code"}
    assert not {page: p for page, p in problems.items() if p}


def test_no_page_repeats_a_heading():
    problems = {page: repeated_headings(cells(page)) for page in toc_files()}
    assert not {page: p for page, p in problems.items() if p}


def test_every_display_equation_is_top_level_and_no_latex_shows_outside_maths():
    problems = {page: math_problems(cell["source"]) for page in toc_files() for cell in cells(page)
                if cell["cell_type"] == "markdown"}
    assert not {page: p for page, p in problems.items() if p}


def test_every_vaelib_call_in_the_text_exists_with_the_arguments_named():
    problems = {page: vaelib_call_problems(cell["source"]) for page in toc_files() for cell in cells(page)
                if cell["cell_type"] == "markdown"}
    assert not {page: p for page, p in problems.items() if p}
    exercises = [cell["source"] for page in chapters() for cell in cells(page)
                 if cell["cell_type"] == "markdown" and cell["source"].startswith("## Exercises")]
    assert len(exercises) == len(chapters()), "every chapter has an exercise cell"


def test_counts_in_prose_match_the_table_of_contents():
    texts = [(REPO / "README.md").read_text()] + [cell["source"] for page in toc_files() for cell in cells(page)
                                                   if cell["cell_type"] == "markdown"]
    counts = [n for text in texts for n in counts_in_prose(text)]
    assert counts, "the prose states the number of chapters somewhere"
    assert set(counts) == {len(chapters())} == {len(list((REPO / "chapters").glob("*.ipynb")))}


def test_the_built_book_holds_no_execution_reports():
    """Jupyter Book writes a failed notebook's traceback to _build/html/reports/: a stale one must not ship."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert not [name for name in toc_files() if "reports" in name]
    recipe = (REPO / "Makefile").read_text().split("\nbook:")[1].split("\n\n")[0]
    assert recipe.index("rm -rf _build/html/reports") < recipe.index("jupyter-book build"), \
        "make book clears the reports of an earlier build before building"
    assert not (REPO / "_build" / "html" / "reports").exists(), "a built book with execution reports: rebuild it"


def test_the_last_page_closes_the_book_and_reads_its_numbers_from_results():
    assert toc_files()[-1] == "book/summary"
    page = (REPO / "book" / "summary.md").read_text()
    block = page.split("```{study-results}\n")[1].split("```")[0]
    rows = course_results.study_rows(REPO, block.strip().split("\n"))
    assert len(rows) == len(block.strip().split("\n")) >= 10
    from vaelib import study
    mean = study.summarize(study.load_table(REPO / "results" / "studies" / "vae-l2-b1"))["vae-l2-b1"]["neg_elbo"]["mean"]
    assert any(row[0].startswith("VAE, L = 2, beta = 1") and f"-ELBO {mean:.2f}" in row[2] for row in rows)
    inpainting = course_results.csv_rows(REPO / "results" / "inpainting.csv", ["method", "images"], "images=10000")
    assert inpainting and all(images == "10000" for _, images in inpainting)
    with pytest.raises(ValueError):
        course_results.study_rows(REPO, ["a | vae-l2-b1 | no_such_metric | 3"])
    assert "Where to go next" in page
    assert "## Where to go next" not in "".join(cell["source"] for cell in cells("chapters/08_beyond"))


def test_every_retraining_states_its_time_on_a_named_cpu():
    from vaelib import registry
    for page in chapters():
        parameters = next(cell["source"] for cell in cells(page) if "parameters" in cell["tags"])
        line = next(line for line in parameters.split("\n") if line.startswith("retrain = False"))
        assert re.search(r"about (\d+ h )?\d+ min on 2 cores of an AMD EPYC Zen 4", line), (page, line)
    said = registry.expected_wait("vae-l2-b1")
    assert registry.TRAINED_ON in said and "expect" in said
    seconds = sum(row["seconds"] for row in registry.shipped_history("convvae-l2-b1"))
    assert f"about {seconds / 60:.0f} min" in registry.expected_wait("convvae-l2-b1")
    assert f"about {seconds / 2 / 60:.0f} min" in registry.expected_wait("convvae-l2-b1", epochs=10)
