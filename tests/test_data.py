import dataclasses
import functools
import gzip
import hashlib
import http.server
import inspect
import shutil
import threading
from pathlib import Path

import pytest
import torch

from vaelib import data

SHARED_RAW = data.raw_folder("mnist")
LABELS = "t10k-labels-idx1-ubyte"


def test_mnist_shapes_dtypes_and_scaling(mnist_test, mnist_train):
    x, y = mnist_test
    assert x.shape == (10_000, 784) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0  # divided by 255, not raw bytes
    assert sorted(y.unique().tolist()) == list(range(10))
    train_x, train_y = mnist_train
    assert train_x.shape == (60_000, 784) and train_y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels


def test_pixels_match_the_raw_bytes(mnist_test):
    raw = gzip.decompress((SHARED_RAW / "t10k-images-idx3-ubyte.gz").read_bytes())
    first_image = torch.tensor(list(raw[16 : 16 + 784]), dtype=torch.float32) / 255  # header: 16 bytes
    assert torch.equal(mnist_test[0][0], first_image)


def copy_dataset(target_root: Path, compress=True) -> Path:
    folder = target_root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in data.DATASETS["mnist"].sha256:
        source = SHARED_RAW / f"{name}.gz"
        if compress:
            shutil.copy(source, folder / source.name)
        else:
            (folder / name).write_bytes(gzip.decompress(source.read_bytes()))
    return folder


def test_plain_idx_files_and_env_var(tmp_path, monkeypatch):
    copy_dataset(tmp_path, compress=False)
    monkeypatch.setenv("VAELIB_DATA", str(tmp_path))
    x, y = data.load_mnist("test")
    assert x.shape == (10_000, 784) and len(y) == 10_000


def test_missing_file_names_file_folder_and_fix(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.load_mnist("test", root=tmp_path)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "VAELIB_DATA" in message and "python -m vaelib download --dataset mnist" in message
    assert "load_mnist(..., download_missing=True)" in message
    assert "download_missing" in inspect.signature(data.load_mnist).parameters  # the fix it names exists


def test_missing_file_message_gives_the_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook's working folder: "./data" alone would not say where
    monkeypatch.delenv("VAELIB_DATA", raising=False)
    with pytest.raises(data.DataError, match=f"missing from {tmp_path / 'data' / 'MNIST' / 'raw'}"):
        data.load_mnist("test")


def test_corrupt_file_is_refused_and_kept(tmp_path):
    folder = copy_dataset(tmp_path, compress=False)
    damaged = bytearray((folder / LABELS).read_bytes())
    damaged[100] ^= 0xFF
    (folder / LABELS).write_bytes(bytes(damaged))
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte.*corrupt.*expected ff7bcfd4"):
        data.load_mnist("test", root=tmp_path)
    assert (folder / LABELS).read_bytes() == bytes(damaged)  # never overwritten


def test_truncated_gzip_is_refused(tmp_path):
    folder = copy_dataset(tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz.*truncated"):
        data.load_mnist("test", root=tmp_path)


def test_corrupt_file_is_not_replaced_by_download(tmp_path):
    folder = copy_dataset(tmp_path, compress=False)
    (folder / LABELS).write_bytes(b"garbage")
    data.download("mnist", root=tmp_path, mirrors=("http://127.0.0.1:9/",))  # nothing missing: no request
    assert (folder / LABELS).read_bytes() == b"garbage"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_mirror():
    """An http.server on 127.0.0.1 that serves the shared MNIST files, as the canonical mirrors would."""
    handler = functools.partial(QuietHandler, directory=str(SHARED_RAW))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_from_a_local_mirror(tmp_path, local_mirror, monkeypatch):
    mirrors = ("http://127.0.0.1:9/nothing-here/", local_mirror)  # the first one fails: falls back
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], mirrors=mirrors))
    x, y = data.load_mnist("test", root=tmp_path, download_missing=True)
    assert x.shape == (10_000, 784)
    files = sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir())
    assert files == sorted(f"{name}.gz" for name in data.DATASETS["mnist"].sha256)  # no .part left behind


def test_download_command_fetches_into_root(tmp_path, local_mirror, capsys):
    from vaelib.__main__ import main

    assert main(["download", "--root", str(tmp_path), "--mirror", local_mirror]) == 0
    assert f"MNIST is ready in {tmp_path / 'MNIST' / 'raw'}" in capsys.readouterr().out
    x, _ = data.load_mnist("test", root=tmp_path)
    assert x.shape == (10_000, 784)
    kept = (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    kept.write_bytes(b"a user's file")
    assert main(["download", "--root", str(tmp_path), "--mirror", local_mirror]) == 2  # corrupt: named, kept
    assert "t10k-labels-idx1-ubyte.gz" in capsys.readouterr().err and kept.read_bytes() == b"a user's file"


def test_download_rejects_a_bad_mirror(tmp_path):
    bad = tmp_path / "mirror"
    bad.mkdir()
    for name in data.DATASETS["mnist"].sha256:
        (bad / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    handler = functools.partial(QuietHandler, directory=str(bad))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(data.DownloadError, match="SHA-256 mismatch"):
            data.download("mnist", root=tmp_path / "root", mirrors=(f"http://127.0.0.1:{server.server_address[1]}/",))
    finally:
        server.shutdown()
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


def test_fashion_mnist_from_debian_or_root():
    try:
        x, y = data.load_mnist("test", dataset="fashion-mnist")
    except data.DataError as error:
        pytest.skip(f"Fashion-MNIST is not installed: {error}")
    assert x.shape == (10_000, 784) and y.max() == 9


def test_batches_reshuffle_keep_partial_batch_and_are_seeded():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = data.Batches(x, y, batch_size=4, seed=3)
    assert len(batches) == 3
    first = [b[1].tolist() for b in batches]
    second = [b[1].tolist() for b in batches]
    assert [len(b) for b in first] == [4, 4, 2]  # last partial batch kept
    assert sorted(sum(first, [])) == list(range(10))  # a permutation
    assert first != second  # a fresh order each epoch
    again = data.Batches(x, y, batch_size=4, seed=3)
    assert [b[1].tolist() for b in again] == first  # the seed fixes the order
    for xb, yb in data.Batches(x, y, batch_size=4, seed=0):
        assert torch.equal(xb.squeeze(1).long(), yb)  # images and labels stay paired


def test_batches_reject_bad_input():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        data.Batches(torch.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="same length"):
        data.Batches(torch.zeros(3), torch.zeros(4))


def test_checksums_are_the_published_ones():
    readme = (SHARED_RAW.parent.parent / "README.md").read_text()
    for name, digest in data.DATASETS["mnist"].sha256.items():
        assert digest in readme
        assert hashlib.sha256(gzip.decompress((SHARED_RAW / f"{name}.gz").read_bytes())).hexdigest() == digest


def test_first_takes_the_first_rows_or_all_and_refuses_a_bad_count():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    assert data.first(None, x, y) == (x, y)
    first_x, first_y = data.first(3, x, y)
    assert torch.equal(first_x, x[:3]) and torch.equal(first_y, y[:3])
    for bad in (0, -2, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match="an integer from 1 to 5, or None for all of them"):
            data.first(bad, x, y)


@pytest.fixture
def data_root_mirror(tmp_path):
    """A server on 127.0.0.1 laid out as a data root (MNIST/raw/, FashionMNIST/raw/), as $VAELIB_MIRROR names."""
    served = tmp_path / "served"
    for dataset in data.DATASETS:
        target = served / data.DATASETS[dataset].folder / "raw"
        target.mkdir(parents=True)
        for name in data.DATASETS[dataset].sha256:
            source = data.find_file(name, dataset)
            if source is None:
                pytest.skip(f"{dataset} is not on this machine to serve")
            payload = source.read_bytes()
            (target / f"{name}.gz").write_bytes(payload if source.suffix == ".gz" else gzip.compress(payload))
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def run_download(dataset, cwd, **env):
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("VAELIB_DATA", "VAELIB_MIRROR")}
    return subprocess.run([sys.executable, "-m", "vaelib", "download", "--dataset", dataset], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**clean, "PYTHONPATH": str(REPO), **env})


REPO = Path(__file__).resolve().parent.parent


def test_vaelib_mirror_fills_a_fresh_data_folder_from_a_server_laid_out_as_a_data_root(tmp_path, data_root_mirror,
                                                                                       monkeypatch):
    """What `make book` does on a clone with no ../shared: `python -m vaelib download` into ./data."""
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", dataclasses.replace(data.DATASETS["fashion-mnist"],
                                                                             extra_folders=()))
    result = run_download("mnist", clone, VAELIB_MIRROR=f"http://127.0.0.1:9/ {data_root_mirror}")  # 1st: refused
    assert result.returncode == 0, result.stderr
    assert f"MNIST is ready in {clone / 'data' / 'MNIST' / 'raw'}" in result.stdout
    assert sorted(p.name for p in (clone / "data" / "MNIST" / "raw").iterdir()) == sorted(
        f"{name}.gz" for name in data.DATASETS["mnist"].sha256)
    monkeypatch.setenv("VAELIB_MIRROR", data_root_mirror)
    data.download("fashion-mnist", root=clone / "data")  # Debian's folder left out: fetched too
    x, y = data.load_mnist("test", root=clone / "data", dataset="fashion-mnist")
    assert x.shape == (10_000, 784) and (clone / "data" / "FashionMNIST" / "raw" / f"{LABELS}.gz").is_file()


def test_make_data_stops_before_any_chapter_with_one_line_naming_the_fix(tmp_path):
    """No data and no server to fetch from: the book's first step fails in one line that names the fix."""
    import os
    import subprocess

    if not (REPO / ".venv" / ".installed").exists():
        pytest.skip("needs the Makefile's .venv (make install)")
    env = {k: v for k, v in os.environ.items() if k != "VAELIB_MIRROR"}
    result = subprocess.run(["make", "-s", "data", f"VAELIB_DATA={tmp_path / 'empty'}"], cwd=REPO, text=True,
                            capture_output=True, timeout=300, env={**env, "VAELIB_MIRROR": "http://127.0.0.1:9/"})
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "vaelib" in line]
    assert "could not download" in line and "VAELIB_DATA" in line and "VAELIB_MIRROR" in line, result.stderr
