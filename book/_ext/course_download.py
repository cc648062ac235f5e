"""The course inside its own book: one download of the repository's files, and the commands that run it.

- When the build starts, `_build/html/roaming-the-latent-space.tar.gz` is written: the repository's tracked
  files (`git ls-files`, as they are in the working tree; outside a git checkout, as in an unpacked download,
  every file but the build outputs of .gitignore), in sorted order with fixed dates, so that the same files
  give the same archive and the same SHA-256. A reader of any copy of the book can get the course from it.
- `{course-download}` (the "Run it yourself" page): the link, with its size and SHA-256, what it holds (the
  number of chapters read from _toc.yml), the repository's address only where _config.yml sets one, and
  the commands that run it (`COMMANDS`: the same lines as in book/intro.md and the README, a test checks).
- Every page's header bar gets a button that downloads it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

NAME = "roaming-the-latent-space"
ARCHIVE = f"{NAME}.tar.gz"
# Outside git: what .gitignore leaves out (the build outputs, the data, the environments).
EXCLUDED = {".git", ".venv", "_build", "data", ".npm-vendor", "__pycache__", ".pytest_cache", ".ipynb_checkpoints",
            "vendor", "weights", "_build_book.log", "models.js"}
COMMANDS = [  # after getting the files: the same lines in book/intro.md and README.md (tests/test_course.py)
    "python3 -m venv .venv && . .venv/bin/activate",
    'pip install torch==2.13.0 && pip install -e ".[lab]"   # vaelib, JupyterLab, papermill (torch for the CPU)',
    "python -m vaelib download --dataset all --root data   # MNIST and Fashion-MNIST, each file checked",
    "export VAELIB_DATA=$PWD/data",
    "jupyter lab chapters/",
]


def course_files(root: Path) -> list[str]:
    """The course's files, relative to `root`, sorted: git's tracked files where `root` is a checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        names = [name for name in listed.decode().split("\0") if name and (root / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        names = [str(path.relative_to(root)) for path in root.rglob("*")
                 if path.is_file() and not EXCLUDED & set(path.relative_to(root).parts)]
    return sorted(names)


def write_archive(root: Path, target: Path) -> tuple[int, str]:
    """Write the course's files under `roaming-the-latent-space/` into `target` (.tar.gz): (bytes, SHA-256)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:  # no date in the gzip header either
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in course_files(root):
                data = (root / name).read_bytes()
                info = tarfile.TarInfo(f"{NAME}/{name}")
                info.size, info.mtime = len(data), 0
                info.mode = 0o755 if os.access(root / name, os.X_OK) else 0o644
                tar.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(payload)
    partial.replace(target)
    return len(payload), hashlib.sha256(payload).hexdigest()


def chapter_count(root: Path) -> int:
    """How many chapters the table of contents lists (the files under chapters/)."""
    def files(entry):
        if isinstance(entry, dict):
            yield from ([entry["file"]] if "file" in entry else [])
            for value in entry.values():
                yield from files(value)
        elif isinstance(entry, list):
            for item in entry:
                yield from files(item)
    return sum(1 for name in files(yaml.safe_load((root / "_toc.yml").read_text())) if name.startswith("chapters/"))


def commands(url: str | None = None, branch: str = "main") -> str:
    """The shell lines that get and run the course: from the download, or from the repository when known."""
    get = [f"tar -xzf {ARCHIVE} && cd {NAME}"]
    if url:
        get.append(f"# or: git clone --branch {branch} {url} {NAME} && cd {NAME}")
    return "\n".join(get + COMMANDS)


def _write(app):
    root = Path(app.srcdir)
    size, sha256 = write_archive(root, Path(app.outdir) / ARCHIVE)
    app.config.course_archive = {"size": size, "sha256": sha256, "chapters": chapter_count(root),
                                 "files": len(course_files(root))}


def _header_button(app, pagename, templatename, context, doctree):
    archive = app.config.course_archive
    if "header_buttons" in context and archive:
        context["header_buttons"].append({
            "type": "link", "url": context["pathto"](ARCHIVE, 1), "icon": "fas fa-file-zipper",
            "tooltip": f"Download the course ({archive['size'] / 2**20:.1f} MB): chapters, vaelib, checkpoints",
            "label": "download-course-button"})


class CourseDownload(SphinxDirective):
    """The download, what it holds, the repository when set, and the commands."""

    def run(self):
        from offline_book import repository_url  # book/_ext is on the path: the one reading of the setting

        archive = self.config.course_archive
        link = "../" * self.env.docname.count("/") + ARCHIVE
        lead = nodes.paragraph()
        lead += [nodes.Text("Download the course: "),
                 nodes.reference(ARCHIVE, ARCHIVE, refuri=link, classes=["course-download"]),
                 nodes.Text(f" ({archive['size'] / 2**20:.1f} MB, {archive['files']} files; SHA-256 "),
                 nodes.literal(archive["sha256"], archive["sha256"], classes=["course-sha256"]),
                 nodes.Text(f"). It holds the {archive['chapters']} chapters ("),
                 nodes.literal("chapters/", "chapters/"),
                 nodes.Text(", notebooks without outputs), the library they import ("),
                 nodes.literal("vaelib/", "vaelib/"), nodes.Text("), the trained models ("),
                 nodes.literal("checkpoints/", "checkpoints/"),
                 nodes.Text("), the tests, this book's sources, the README, the Makefile and the environment "
                            "files: the repository's tracked files, as this book was built from them.")]
        result = [lead]
        url = repository_url(self.config.course_repository_url)
        if url:
            where = nodes.paragraph()
            where += [nodes.Text("The course's repository: "),
                      nodes.reference(url, url, refuri=url, classes=["repository-url"]), nodes.Text(".")]
            result.append(where)
        text = commands(url, self.config.course_repository_branch)
        result.append(nodes.literal_block(text, text, language="bash"))
        return result


def setup(app):
    app.add_config_value("course_archive", {}, "env")
    app.connect("builder-inited", _write)
    app.connect("html-page-context", _header_button, priority=510)  # after the theme's own buttons
    app.connect("env-get-outdated", lambda app, env, added, changed, removed: ["book/run"])
    app.add_directive("course-download", CourseDownload)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
