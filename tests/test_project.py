"""The repository's own promises: packaging files agree, notebooks are clean, CI runs the README's command."""
import json
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def environment_pip_requirements() -> set[str]:
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    requirements = set()
    for line in lines[start + 1 :]:
        match = re.match(r"^\s{6,}- (\S+)\s*$", line)
        if not match:
            break
        requirements.add(match.group(1))
    return requirements


def test_environment_yml_and_pyproject_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pyproject = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    assert environment_pip_requirements() == pyproject
    assert "torch==2.13.0" in pyproject


def test_torchvision_is_neither_imported_nor_required():
    for path in (REPO / "vaelib").glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+torchvision", path.read_text(), re.M), path
    for path in (REPO / "pyproject.toml", REPO / "environment.yml"):
        assert "torchvision" not in path.read_text(), path


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


NOTEBOOKS = sorted((REPO / "chapters").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_committed_clean_with_the_python3_kernel(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} holds outputs"
    tags = [tag for cell in notebook["cells"] for tag in cell.get("metadata", {}).get("tags", [])]
    assert tags.count("parameters") == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


def test_a_chapter_runs_after_pip_install_of_a_checkout(tmp_path):
    """`pip install .` (not editable) puts vaelib in site-packages, away from checkpoints/: a chapter run
    inside the checkout must still find the shipped models (and not train them)."""
    import os
    import subprocess
    import sys

    import shutil

    source, site = tmp_path / "source", tmp_path / "site"  # pip builds in the source folder: not in ours
    shutil.copytree(REPO / "vaelib", source / "vaelib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("VAELIB_CHECKPOINTS", None)
    where = subprocess.run([sys.executable, "-c", "import vaelib.checkpoints as c; print(c.__file__, c.CHECKPOINT_DIR)"],
                           env=env, cwd=REPO / "chapters", capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == str(REPO / "checkpoints")
    out = tmp_path / "05.ipynb"
    subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(REPO / "chapters"), "-p", "grid_steps", "3",
                    "-k", "python3", str(REPO / "chapters" / "05_latent_walk.ipynb"), str(out)],
                   env=env, check=True, capture_output=True, timeout=300)
    assert "RESULTS" in out.read_text()
