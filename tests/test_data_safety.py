"""Data files and downloads: every failure is one line naming the file and the fix; nothing of the user's
is touched; the next mirror is tried; no temporary file stays."""
import dataclasses
import functools
import gzip
import http.server
import os
import pathlib
import shutil
import socket
import threading
import tracemalloc

import pytest

from vaelib import data

SHARED_RAW = data.raw_folder("mnist")
LABELS = "t10k-labels-idx1-ubyte"


def dataset_without_labels(root):
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in data.DATASETS["mnist"].sha256:
        if name != LABELS:
            shutil.copy(SHARED_RAW / f"{name}.gz", folder)
    return folder


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class ShortBodyHandler(QuietHandler):
    def do_GET(self):
        # a promise below the labels file's largest size (75,644 bytes), so that the short body is what fails
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b only a few bytes")
        self.close_connection = True


def serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture
def mirrors(tmp_path):
    """(corrupt deflate, short body, not HTTP, good): the first three fail, each differently."""
    corrupt = tmp_path / "corrupt-mirror"
    corrupt.mkdir()
    (corrupt / f"{LABELS}.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 200)  # bad deflate data
    servers = [serve(functools.partial(QuietHandler, directory=str(corrupt))), serve(ShortBodyHandler)]
    listener = socket.create_server(("127.0.0.1", 0))

    def not_http():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            connection.close()

    threading.Thread(target=not_http, daemon=True).start()
    servers.append(serve(functools.partial(QuietHandler, directory=str(SHARED_RAW))))
    urls = [servers[0][1], servers[1][1], f"http://127.0.0.1:{listener.getsockname()[1]}/", servers[2][1]]
    yield urls
    for server, _ in servers:
        server.shutdown()
    listener.close()


def test_each_failing_mirror_is_one_line_and_the_next_is_tried(tmp_path, mirrors):
    folder = dataset_without_labels(tmp_path / "root")
    with pytest.raises(data.DownloadError) as error:
        data.download("mnist", tmp_path / "root", mirrors=tuple(mirrors[:3]))
    message = str(error.value)
    assert "\n" not in message and all(url in message for url in mirrors[:3])
    for reason in ("is not a complete gzip file", "the reply ended after 19 bytes of the promised 5000",
                   "not an HTTP reply (BadStatusLine"):
        assert reason in message
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in data.DATASETS["mnist"].sha256
                                                             if n != LABELS)  # no .part left
    data.download("mnist", tmp_path / "root", mirrors=tuple(mirrors))
    assert data.read_idx(LABELS, root=tmp_path / "root").shape == (10_000,)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_download_is_flushed_to_disk_before_it_is_moved_into_place(tmp_path, mirrors, monkeypatch):
    dataset_without_labels(tmp_path / "root")
    events = []
    for name in ("fsync", "replace", "rename", "link"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, functools.partial(lambda real, name, *a, **k: (events.append(name),
                                                                                     real(*a, **k))[1], real, name))
    data.download("mnist", tmp_path / "root", mirrors=(mirrors[3],))
    moves = [i for i, event in enumerate(events) if event in ("replace", "rename", "link")]
    assert moves and "fsync" in events[:moves[0]], events


def test_a_dangling_link_of_the_user_is_left_alone(tmp_path, mirrors):
    folder = dataset_without_labels(tmp_path / "root")
    link = folder / f"{LABELS}.gz"
    link.symlink_to("/nowhere/labels.gz")
    data.download("mnist", tmp_path / "root", mirrors=(mirrors[3],))
    assert link.is_symlink() and os.readlink(link) == "/nowhere/labels.gz"
    with pytest.raises(data.DataError, match="is a symbolic link to /nowhere/labels.gz, which does not exist"):
        data.read_idx(LABELS, root=tmp_path / "root")


def test_download_into_a_root_that_is_a_file_is_refused(tmp_path, capsys):
    from vaelib.__main__ import main

    (tmp_path / "file").write_text("not a folder")
    assert main(["download", "--root", str(tmp_path / "file"), "--mirror", "http://127.0.0.1:9/"]) == 2
    err = capsys.readouterr().err
    assert "file is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_stale_part_files_of_a_killed_download_are_removed(tmp_path):
    folder = dataset_without_labels(tmp_path / "root")
    shutil.copy(SHARED_RAW / f"{LABELS}.gz", folder)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = folder / f".{LABELS}.gz.{dead}.k2j3h4.part"
    stale.write_bytes(b"half a download")
    data.download("mnist", tmp_path / "root", mirrors=("http://127.0.0.1:9/",))  # nothing missing
    assert not stale.exists()


def test_corrupt_deflate_data_in_a_gzip_is_refused(tmp_path):
    folder = dataset_without_labels(tmp_path)
    (folder / f"{LABELS}.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 200)
    with pytest.raises(data.DataError, match=f"{LABELS}.gz in .* is not a complete gzip file"):
        data.read_idx(LABELS, root=tmp_path)


def test_an_unreadable_file_is_named_with_the_fix(tmp_path, monkeypatch):
    folder = dataset_without_labels(tmp_path)
    shutil.copy(SHARED_RAW / f"{LABELS}.gz", folder)
    real = pathlib.Path.open

    def no_permission(self, *args, **kwargs):  # chmod does not stop root, who runs CI
        if self.name == f"{LABELS}.gz":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", no_permission)
    with pytest.raises(data.DataError, match=r"cannot be read \(Permission denied\): give yourself read permission"):
        data.read_idx(LABELS, root=tmp_path)


@pytest.mark.parametrize("make, what", [(os.mkdir, "is a folder"), (os.mkfifo, r"is a named pipe \(FIFO\)")])
def test_a_folder_or_fifo_where_a_file_should_be_is_named_as_such(tmp_path, make, what):
    folder = dataset_without_labels(tmp_path)
    make(folder / f"{LABELS}.gz")
    with pytest.raises(data.DataError, match=f"{LABELS}.gz {what}, not a data file"):
        data.read_idx(LABELS, root=tmp_path)


def test_a_gzip_bomb_is_stopped_at_the_expected_size(tmp_path):
    folder = dataset_without_labels(tmp_path)
    (folder / f"{LABELS}.gz").write_bytes(gzip.compress(bytes(64 * 2**20), compresslevel=1))  # 64 MiB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(data.DataError, match="holds more than the 10008 bytes that this file has"):
            data.read_idx(LABELS, root=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.0f} MiB held while reading a 10 kB file"
