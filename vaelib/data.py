"""MNIST and Fashion-MNIST as in-memory tensors, read straight from their IDX files.

No torchvision: the four IDX files of each dataset are parsed with numpy, checked against the
SHA-256 of their decompressed bytes, and returned as `x` float32 (N, 784) in [0, 1] and `y` int64 (N,).

Where the files live (the torchvision layout):
    <root>/MNIST/raw/train-images-idx3-ubyte[.gz]         (and the three others)
    <root>/FashionMNIST/raw/...                           (or Debian's /usr/share/datasets/fashion-mnist/)
and `root` is the explicit argument, else the VAELIB_DATA environment variable, else ./data.

Introduced in: 01_data
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import stat
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checks, files

DEFAULT_ROOT = "./data"
ENV_VAR = "VAELIB_DATA"
MIRROR_VAR = "VAELIB_MIRROR"  # base URLs (space-separated) of servers laid out as a data root: <url>/MNIST/raw/...


@dataclass(frozen=True)
class DatasetInfo:
    folder: str  # sub-folder of <root>, torchvision's name
    mirrors: tuple[str, ...]  # base URLs, tried in order
    sha256: dict[str, str]  # decompressed file name -> SHA-256 of its bytes
    extra_folders: tuple[str, ...] = ()  # other places the files may already be
    credit: str = ""


DATASETS = {
    "mnist": DatasetInfo(
        folder="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        credit="MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0)",
    ),
    "fashion-mnist": DatasetInfo(
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        extra_folders=("/usr/share/datasets/fashion-mnist",),
        credit="Fashion-MNIST by Zalando Research (MIT licence)",
    ),
}

# Fashion-MNIST's labels 0-9, as its authors name them (Xiao, Rasul and Vollgraf 2017). Introduced in: 12_collection
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

SPLIT_PREFIX = {"train": "train", "test": "t10k"}
MAX_DOWNLOAD = 64 * 2**20  # bytes; MNIST's largest file is 9.9 MB compressed
SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,  # bytes, decompressed:
         "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}  # reading stops past them


class DataError(FileNotFoundError):
    """A dataset file is missing, truncated or corrupt. The message says which one and how to fix it."""


class DownloadError(OSError):
    """A download failed on every mirror (no answer, an HTTP error, a bad or oversized reply, a wrong SHA-256):
    a failure of the network or the mirror, not of the arguments (the command line exits 1)."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $VAELIB_DATA, else ./data."""
    if root is not None:
        return checks.check_path("root", root)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def _dataset_info(dataset: str) -> DatasetInfo:
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise ValueError(f"unknown dataset {checks._shown(dataset)}: choose one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def raw_folder(dataset: str = "mnist", root: str | os.PathLike | None = None) -> Path:
    """`<root>/MNIST/raw` (or `<root>/FashionMNIST/raw`): where the IDX files belong."""
    return data_root(root) / _dataset_info(dataset).folder / "raw"


def _find(name: str, folders: list[Path]) -> Path | None:
    """The first of `name` or `name.gz` that is in `folders`, in order: a file, or whatever else is there."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if os.path.lexists(candidate):
                return candidate
    return None


def _what_is(path: Path) -> str | None:
    """None for a regular file (or a link to one); else what the path is, in words."""
    if not path.exists():
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _inflate(stream, limit: int) -> bytes:
    """At most `limit` bytes from a seekable gzip stream (or a plain one): a gzip bomb stops at the limit.

    A corrupt or oversized stream raises ValueError with the reason, to follow the file's name.
    """
    gzipped = stream.read(2) == b"\x1f\x8b"  # gzip magic number
    stream.seek(0)
    try:
        data = (gzip.GzipFile(fileobj=stream) if gzipped else stream).read(limit + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"is not a complete gzip file ({error})") from error
    if len(data) > limit:
        raise ValueError(f"holds more than the {limit} bytes that this file has")
    return data


def _decompressed_bytes(path: Path, limit: int) -> bytes:
    source = f"{path.name} in {path.parent}"
    what = _what_is(path)
    if what is not None:
        raise DataError(f"{path} is {what}, not a data file: move it aside and fetch the file again.")
    try:
        with path.open("rb") as stream:
            return _inflate(stream, limit)
    except ValueError as error:
        raise DataError(f"{source} {error}: it is truncated or is not the dataset's file. Move it aside "
                        f"and download it again.") from error
    except PermissionError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}): give yourself read permission "
                        f"(chmod u+r) or point {ENV_VAR} at a copy you can read.") from error
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror or error}): move it aside and fetch a fresh copy.") from error


def _fix_hint(dataset: str) -> str:
    info = _dataset_info(dataset)
    return (
        f"Set {ENV_VAR} to the folder that holds {info.folder}/raw/ (on this course's machines: "
        f"{ENV_VAR}=../shared/data), or fetch the files from {info.mirrors[0]} with "
        f"`python -m vaelib download --dataset {dataset}` or `load_mnist(..., download_missing=True)`"
    )


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse an IDX file: a 4-byte magic (0, 0, type 0x08 = uint8, number of dims), big-endian sizes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} holds {len(data)} bytes, but its header promises {expected}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find_file(name: str, dataset: str = "mnist", root: str | os.PathLike | None = None) -> Path | None:
    """Where the IDX file `name` (or `name.gz`) is read from: `<root>/<folder>/raw`, else an extra folder."""
    return _find(name, [raw_folder(dataset, root), *map(Path, _dataset_info(dataset).extra_folders)])


def read_idx(name: str, dataset: str = "mnist", root: str | os.PathLike | None = None) -> np.ndarray:
    """Read one IDX file by its decompressed name, check its SHA-256, return a uint8 array."""
    info = _dataset_info(dataset)
    folder = raw_folder(dataset, root)
    path = find_file(name, dataset, root)
    if path is None:
        raise DataError(
            f"{name}[.gz] is missing from {folder.absolute()}. {_fix_hint(dataset)}."
        )
    data = _decompressed_bytes(path, SIZES[name])
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256[name]:
        raise DataError(
            f"{path.name} in {path.parent} is corrupt or truncated: its decompressed SHA-256 is "
            f"{digest}, expected {info.sha256[name]} ({len(data)} bytes read). Move it aside (it is "
            f"never overwritten) and fetch a fresh copy. {_fix_hint(dataset)}."
        )
    return _parse_idx(data, path)


def env_mirrors(dataset: str = "mnist") -> tuple[str, ...]:
    """The mirrors that $VAELIB_MIRROR names, each a server laid out as a data root, for `dataset`'s files.

    `VAELIB_MIRROR=http://127.0.0.1:8000/` with `python -m http.server -d ../shared/data` running: the files
    are fetched from http://127.0.0.1:8000/MNIST/raw/ (and FashionMNIST/raw/). Empty when it is not set.
    """
    folder = _dataset_info(dataset).folder
    return tuple(f"{url.rstrip('/')}/{folder}/raw/" for url in os.environ.get(MIRROR_VAR, "").split())


def download(
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch the files that are missing into `<root>/<folder>/raw`, checking each one's SHA-256.

    From `mirrors` (base URLs holding `<name>.gz`) when given, else from $VAELIB_MIRROR's (`env_mirrors`),
    else from the dataset's canonical mirrors. A file that is already there is never touched, even when it
    is corrupt: `read_idx` reports it. Each download goes to a temporary file first and is moved into place
    only once it checks out.
    Only http(s) addresses are fetched, redirects included; a failure on every mirror is `DownloadError`.
    """
    info = _dataset_info(dataset)
    folder = raw_folder(dataset, root)
    if mirrors is not None:
        if isinstance(mirrors, str) or not isinstance(mirrors, (tuple, list)):
            raise ValueError(f"mirrors must be a tuple of base URLs, got {type(mirrors).__name__}: e.g. "
                             f"('http://127.0.0.1:8000/',)")
        for mirror in mirrors:
            checks.check_url("a mirror", mirror)
    checks.check_number("timeout", timeout, 0.0, strict=True)
    files.remove_stale(folder)  # the .part files of a download that was killed
    # whatever is there already (even a dangling link) is the user's: never touched, read_idx reports it
    missing = {name: sha for name, sha in info.sha256.items()
               if _find(name, [folder, *map(Path, info.extra_folders)]) is None}
    if missing:
        files.check_writable_folder(folder, "the data (--root)")
    for name, expected in missing.items():
        errors = []
        for mirror in mirrors or env_mirrors(dataset) or info.mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                payload, data = _fetch(url, timeout, SIZES[name], max_reply(name))
            except (OSError, ValueError) as error:
                errors.append(f"{url}: {' '.join(str(error).split()) or type(error).__name__}")
                continue  # URLError, a bad gzip, a short body, a reply that is not HTTP: the next mirror
            if hashlib.sha256(data).hexdigest() != expected:
                errors.append(f"{url}: SHA-256 mismatch")
                continue
            target = folder / f"{name}.gz"
            try:  # flushed to disk, then linked in place only if nothing appeared there meanwhile
                files.commit(files.write_temporary(target, payload, suffix=".part"), target, overwrite=False)
            except FileExistsError:
                pass  # appeared meanwhile: keep the user's file
            break
        else:
            raise DownloadError(
                f"could not download {name}.gz into {folder}: " + "; ".join(errors)
                + f". Without internet, copy the files there by hand, set {ENV_VAR} to a folder that holds "
                f"{info.folder}/raw/, or set {MIRROR_VAR} to a server that does"
                + (" (or install Debian's dataset-fashion-mnist)." if info.extra_folders else ".")
            )
    return folder


TOTAL_TIMEOUTS = 10  # a whole reply may take this many times the timeout of one read (10 minutes by default)


def max_reply(name: str) -> int:
    """The most bytes a mirror's reply for `name` may hold: the file itself, plus what gzip can add."""
    return min(MAX_DOWNLOAD, SIZES[name] + SIZES[name] // 100 + 65536)


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most 5 redirects, and only to http:// or https:// addresses."""
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"it redirects to a {scheme or 'schemeless'}: address, which is never followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_WebOnlyRedirects)


def _fetch(url: str, timeout: float, limit: int, max_bytes: int = MAX_DOWNLOAD) -> tuple[bytes, bytes]:
    """(the gzip bytes, their decompressed bytes) from `url`; ValueError or OSError says what went wrong.

    `timeout` bounds each read, and TOTAL_TIMEOUTS of them the whole reply: a server that sends a byte now
    and then never holds a download for ever."""
    deadline = time.monotonic() + TOTAL_TIMEOUTS * timeout
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ValueError(f"the reply would hold {length} bytes, more than the {max_bytes} that this "
                                 f"file can take: not a dataset file")
            chunks, total = [], 0
            while total <= max_bytes and (chunk := response.read1(min(1 << 20, max_bytes + 1 - total))):
                chunks.append(chunk)
                total += len(chunk)
                if time.monotonic() > deadline:
                    raise ValueError(f"the reply took more than {TOTAL_TIMEOUTS * timeout:g} s ({total} bytes so "
                                     f"far): too slow a mirror")
            payload = b"".join(chunks)
    except http.client.IncompleteRead as error:
        raise ValueError(f"the reply ended after {len(error.partial)} bytes of the promised "
                         f"{len(error.partial) + (error.expected or 0)}") from error
    except http.client.HTTPException as error:  # BadStatusLine, RemoteDisconnected, ...
        raise ValueError(f"not an HTTP reply ({type(error).__name__}: {str(error)[:60]!r})") from error
    if len(payload) > max_bytes:
        raise ValueError(f"the reply is larger than {max_bytes} bytes: not a dataset file")
    if length is not None and length.isdigit() and len(payload) != int(length):
        raise ValueError(f"the reply ended after {len(payload)} bytes of the promised {length}")
    return payload, _inflate(io.BytesIO(payload), limit)


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    dataset: str = "mnist",
    download_missing: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images `x` float32 (N, 784) in [0, 1] and labels `y` int64 (N,).

    `split` is "train" (60,000 images) or "test" (10,000). `dataset` is "mnist" or "fashion-mnist".
    Pixels are divided by 255: the decoder ends in a sigmoid, so its targets must lie in [0, 1].

    Introduced in: 01_data
    """
    checks.check_choice("split", split, SPLIT_PREFIX)
    data_root(root)
    _dataset_info(dataset)
    checks.check_flag("download_missing", download_missing)
    prefix = SPLIT_PREFIX[split]
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    if download_missing:
        download(dataset, root)
    images = read_idx(images_name, dataset, root)  # (N, 28, 28) uint8
    labels = read_idx(labels_name, dataset, root)  # (N,) uint8
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_name} has {images.shape[0]} images but {labels_name} has {labels.shape[0]} labels.")
    x = torch.from_numpy(images.reshape(len(images), 784).astype(np.float32) / 255.0)  # (N, 784)
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return x, y


def first(count: int | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The first `count` rows of each tensor (all of them for None): a chapter's `test_images` setting."""
    if count is None:
        return tensors
    length = len(tensors[0])
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= length:
        raise ValueError(f"the number of images must be an integer from 1 to {length}, or None for all of them, "
                         f"got {count!r}")
    return tuple(t[:count] for t in tensors)


def binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Binary images drawn from grey-level ones: each pixel is 1 with probability its grey level.

    x: (N, 784) in [0, 1] -> (N, 784) in {0, 1}; the same seed gives the same images. Training on
    "dynamically binarized" MNIST draws afresh for every batch (`train.fit(binarize=True)`); the test set
    is drawn once, with seed 0. On binary images the Bernoulli decoder's BCE is a true negative
    log-likelihood, comparable with the literature (Burda, Grosse and Salakhutdinov 2016, Table 1).
    Introduced in: 03_vae
    """
    checks.check_images("x", x)
    generator = torch.Generator().manual_seed(checks.check_seed(seed))
    return torch.bernoulli(x.cpu(), generator=generator)


class Batches:
    """Mini-batches over in-memory tensors, reshuffled each time it is iterated.

    Each pass draws a fresh permutation from a seeded `torch.Generator`, so a given seed gives the same
    order of batches on every run; the last, partial batch is kept. Indexing is one tensor gather per
    batch: no per-sample Python work.

    >>> for x, y in Batches(train_x, train_y, batch_size=128, seed=0): ...   # x (B, 784), y (B,)

    Introduced in: 02_autoencoder
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = True, seed: int = 0):
        if not tensors:
            raise ValueError("Batches needs at least one tensor")
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
                raise ValueError(f"Batches takes tensors with one row per example, got {type(tensor).__name__}: "
                                 f"convert it with torch.as_tensor")
        if any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"all tensors must have the same length, got {[len(t) for t in tensors]}")
        checks.check_positive_int("batch_size", batch_size)
        checks.check_flag("shuffle", shuffle)
        checks.check_seed(seed)
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)  # ceil: the partial batch counts

    def __iter__(self):
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.tensors[0].device)  # on a GPU: one copy per pass, not one wait per batch
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            batch = tuple(t[index.to(t.device)] for t in self.tensors)  # no copy where they share a device
            yield batch if len(batch) > 1 else batch[0]
