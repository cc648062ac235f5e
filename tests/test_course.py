"""The book carries the course: its download holds the tracked files, the run page, the intro and the README
give the same commands, and those commands work in a fresh virtual environment on the unpacked download."""
import functools
import gzip
import hashlib
import http.server
import importlib.util
import os
import subprocess
import sys
import tarfile
import threading
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILT = REPO / "_build" / "html"


def extension():
    sys.path.insert(0, str(REPO / "book" / "_ext"))  # as jupyter-book's local_extensions puts it
    spec = importlib.util.spec_from_file_location("course_download", REPO / "book" / "_ext" / "course_download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_the_intro_and_the_readme_give_the_same_commands_and_the_extra_brings_jupyterlab():
    course = extension()
    for path in (REPO / "book" / "intro.md", REPO / "README.md"):
        lines = path.read_text().splitlines()
        start = lines.index(course.COMMANDS[0])
        assert lines[start : start + len(course.COMMANDS)] == course.COMMANDS, path.name
    assert course.commands().splitlines()[1:] == course.COMMANDS
    assert "git clone" not in course.commands() and "git clone" in course.commands("https://example.org/c")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert '".[lab]"' in course.COMMANDS[1] and any(r.startswith("jupyterlab") for r in extras["lab"])
    assert {"ipykernel", "papermill"} <= {r.split(">")[0] for r in extras["lab"]}


def test_the_download_holds_the_tracked_files_and_the_same_files_give_the_same_archive(tmp_path):
    course = extension()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    first = course.write_archive(REPO, tmp_path / "a.tar.gz")
    assert course.write_archive(REPO, tmp_path / "b.tar.gz") == first  # size and SHA-256: dates left out
    assert first[1] == hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
    assert names == [f"{course.NAME}/{name}" for name in sorted(n for n in tracked if (REPO / n).is_file())]
    for needed in ("Makefile", "README.md", "pyproject.toml", "environment.yml", "_toc.yml", "vaelib/data.py",
                   "chapters/05_latent_walk.ipynb", "checkpoints/vae-l2-b1.safetensors"):
        assert f"{course.NAME}/{needed}" in names
    toc = (REPO / "_toc.yml").read_text()
    assert course.chapter_count(REPO) == toc.count("file: chapters/") == len(list((REPO / "chapters").glob("*.ipynb")))


def test_the_built_book_links_its_download_with_its_size_and_sha256():
    page = BUILT / "book" / "run.html"
    if not page.exists():
        pytest.skip("the book is not built (make book)")
    archive = BUILT / extension().ARCHIVE
    html = page.read_text()
    assert f'href="../{archive.name}"' in html and hashlib.sha256(archive.read_bytes()).hexdigest() in html
    assert f"{archive.stat().st_size / 2**20:.1f} MB" in html and "It holds the 12 chapters" in html
    assert "download-course-button" in (BUILT / "chapters" / "03_vae.html").read_text()  # every page's header


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def data_server(tmp_path):
    """The datasets on a 127.0.0.1 server laid out as a data root, for $VAELIB_MIRROR."""
    from vaelib import data

    served = tmp_path / "served"
    for dataset, info in data.DATASETS.items():
        (served / info.folder / "raw").mkdir(parents=True)
        for name in info.sha256:
            source = data.find_file(name, dataset)
            if source is None:
                pytest.skip(f"{dataset} is not on this machine to serve")
            payload = source.read_bytes()
            (served / info.folder / "raw" / f"{name}.gz").write_bytes(
                payload if source.suffix == ".gz" else gzip.compress(payload))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_the_download_unpacked_in_an_empty_folder_installs_in_a_fresh_venv_and_runs_a_chapter(tmp_path, data_server):
    """The page's commands, as written, on the download (the built one, else one written here): a fresh venv,
    torch and the `lab` extra (pip's cache makes a second run fast), the data (from a 127.0.0.1 mirror: no
    internet here), JupyterLab present, and a chapter through papermill from the shipped checkpoints."""
    course = extension()
    archive = BUILT / course.ARCHIVE
    if not archive.exists():
        archive = tmp_path / course.ARCHIVE
        course.write_archive(REPO, archive)
    home = tmp_path / "learner"
    home.mkdir()
    *setup, last = course.commands().splitlines()
    assert last == "jupyter lab chapters/"
    script = "\n".join(["set -euo pipefail", f"cp {archive} .", *setup, "jupyter lab --version",
                        "papermill --cwd chapters -k python3 -p grid_steps 3 chapters/05_latent_walk.ipynb out.ipynb"])
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VAELIB_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(VAELIB_MIRROR=data_server, PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                                               if not p.startswith(str(REPO))))
    result = subprocess.run(["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = home / course.NAME
    assert (folder / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()
    debian = Path("/usr/share/datasets/fashion-mnist")  # where it is, Fashion-MNIST is read from there
    assert (folder / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file() or debian.is_dir()
    assert "RESULTS" in (folder / "out.ipynb").read_text()
    assert not (folder / "checkpoints").samefile(REPO / "checkpoints")
