"""Morphometrics of a digit: stroke thickness, slant, width, height, length and area, measured as Morpho-MNIST does.

Castro, Tan, Kainz, Konukoglu and Glocker 2019, "Morpho-MNIST: quantitative assessment and diagnostics for
representation learning" (JMLR 20(178), section 2.1), measure each 28 x 28 digit on a 4x finer grid:

1. upsample: a cubic spline zoom (clipped to the image's range) and a Gaussian blur of sigma = 2 * 4 / 6 pixels,
   which is scikit-image's `pyramid_expand(order=3)`; stored as 8-bit grey levels, (112, 112);
2. threshold at half-way between the image's darkest and brightest grey level;
3. skeleton and distance transform: thickness = 2 x the mean distance from the skeleton to the background,
   length = the skeleton's length (a step to a side neighbour counts 1, to a diagonal one sqrt 2);
4. image moments of the grey levels: slant = arctan(-u11 / u02), the angle by which the digit leans right;
5. a shear-corrected bounding box (a parallelogram sheared by the slant) that leaves out 1 % of the ink on
   each side: width and height;
6. area: the thresholded pixels.

Every length is in pixels of the original 28 x 28 image, the area in its square pixels, the slant in radians.
Morpho-MNIST takes the skeleton from `skimage.morphology.medial_axis`; we take it from `skeletonize` (Zhang and
Suen 1984), 5 times faster, and read the exact Euclidean distance transform on it. The thickness agrees with
medial_axis's within 1 % on average over MNIST digits, and is 4 % above Morpho-MNIST's released value on MNIST's
first training digit; medial_axis's skeleton keeps short spurs that ours has not, so our length is shorter
(by 5 % on average, 11 % on that digit). Slant, width, height and area follow the paper's definitions exactly
(tests/test_morphometry.py checks each against an independent computation).

All images of a batch are measured at once: they are tiled into one mosaic, one pixel of background apart, so
that each of skeletonize and the distance transform runs once per chunk in C rather than once per image in
Python; chunks go to worker processes. `measure_mnist` caches what it measures beside the data, under the
SHA-256 of the images it read. Introduced in: 07_disentanglement
"""
from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from . import checks, data, files

FACTORS = ("thickness", "slant", "width", "height", "length", "area")  # the keys of `measure`'s result
SCALE = 4  # upsampling factor: measured on a (112, 112) grid
THRESHOLD = 0.5  # fraction of the way from the darkest to the brightest grey level
BOUND_FRACTION = 0.02  # of the ink left outside the bounding parallelogram, half on each side
CHUNK = 100  # images per mosaic, one call of skeletonize each: small enough for the chunk to stay in cache
VERSION = 1  # of the measurements: a cache written by another version is measured again
_SIDE = 28 * SCALE  # 112
_TILE = _SIDE + 2  # 114: a frame of background around each upsampled digit


def _linear_operator(size: int, transform) -> np.ndarray:
    """The matrix (out, size) of a linear 1-D `transform`, found by applying it to each basis vector."""
    return np.stack([transform(unit) for unit in np.eye(size)], axis=1)


# The upsampling of skimage's pyramid_expand(upscale=4, order=3, mode="reflect"): its cubic spline zoom
# (ndimage mode "mirror", on the pixels' grid) as a matrix, separable, so that a batch is zoomed by two matrix
# products; then its Gaussian blur (ndimage mode "reflect"), one pass along each axis of the whole batch.
_ZOOM = _linear_operator(28, lambda v: ndi.zoom(v, SCALE, order=3, mode="mirror", grid_mode=True))  # (112, 28)
_BLUR_SIGMA = 2 * SCALE / 6  # pyramid_expand's default: the blur's mask is twice the upscale factor wide


def _along_both_axes(operator: np.ndarray, images: np.ndarray) -> np.ndarray:
    """operator (out, m) applied along the rows and the columns of `images` (n, m, m) -> (n, out, out)."""
    return operator @ (images @ operator.T)  # (n, m, m) -> (n, m, out) -> (n, out, out)


def upsample(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) float in [0, 1] -> (n, 112, 112) uint8: Morpho-MNIST's `pyramid_expand`, then 255 x, truncated."""
    zoomed = _along_both_axes(_ZOOM, images)  # (n, 28, 28) -> (n, 112, 112)
    low = images.min(axis=(1, 2), keepdims=True)  # (n, 1, 1): the zoom is clipped to the image's range
    high = images.max(axis=(1, 2), keepdims=True)
    blurred = np.minimum(np.maximum(zoomed, low, out=zoomed), high, out=zoomed)  # (n, 112, 112) clipped
    for axis in (1, 2):
        blurred = ndi.gaussian_filter1d(blurred, _BLUR_SIGMA, axis=axis, mode="reflect")
    return (255.0 * blurred).astype(np.uint8)


def _mosaic(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 112, 112) bool -> the mosaic (rows, 114) and where each tile starts in it (n + 1,).

    Each digit keeps only the rows that hold ink, and the tiles are stacked in one column, each followed by a
    row of background and framed by a column of background on either side: about 70 % of the pixels of the
    full tiles on MNIST, so 30 % less work for skeletonize and the distance transform.
    """
    n = len(binary)
    inked = binary.any(axis=2)  # (n, 112): rows with ink
    top = np.where(inked.any(axis=1), inked.argmax(axis=1), 0)  # (n,)
    bottom = np.where(inked.any(axis=1), _SIDE - inked[:, ::-1].argmax(axis=1), 0)  # (n,) one past the last
    heights = bottom - top + 1  # (n,) the rows with ink, and one of background below them
    starts = np.concatenate([[1], 1 + np.cumsum(heights)])  # (n + 1,) a row of background above the first tile
    mosaic = np.zeros((starts[-1], _TILE), dtype=bool)
    for tile, (first, last, start) in enumerate(zip(top, bottom, starts)):
        mosaic[start : start + last - first, 1:-1] = binary[tile, first:last]
    return mosaic, starts


def _skeleton_measures(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thickness and length (n,), in fine-grid pixels, of the thresholded digits `binary` (n, 112, 112).

    Thickness: twice the mean distance from a skeleton pixel to the nearest background pixel (the Euclidean
    distance transform, read on the skeleton only: a k-d tree of the background pixels that touch the ink, where
    every nearest background pixel lies). Length: the skeleton's links, 1 to a side neighbour, sqrt 2 to a
    diagonal one. The background between the tiles keeps each tile's skeleton and distances its own:
    skeletonize's thinning looks at neighbours only, and a pixel's nearest background is within its own tile.
    """
    from scipy.spatial import cKDTree
    from skimage.morphology import skeletonize  # scikit-image: imported where it is used

    n = len(binary)
    mosaic, starts = _mosaic(binary)  # (rows, 114) bool
    skeleton = skeletonize(mosaic)  # (rows, 114) bool, one pixel wide
    tile_of_row = np.clip(np.searchsorted(starts, np.arange(len(mosaic)), side="right") - 1, 0, None)  # (rows,)

    border = ndi.binary_dilation(mosaic, structure=np.ones((3, 3), dtype=bool)) & ~mosaic  # (rows, 114)
    points = np.argwhere(skeleton)  # (p, 2) row, column
    distance, _ = cKDTree(np.argwhere(border)).query(points)  # (p,) to the nearest background pixel
    tiles = tile_of_row[points[:, 0]]  # (p,)
    with np.errstate(invalid="ignore", divide="ignore"):
        thickness = 2.0 * np.bincount(tiles, distance, n) / np.bincount(tiles, minlength=n)  # (n,)

    below = np.zeros_like(skeleton)  # (rows, 114): the skeleton one row down
    below[:-1] = skeleton[1:]
    side_links = (skeleton[:, :-1] & skeleton[:, 1:]).sum(axis=1)  # (rows,) to the right
    down_links = (skeleton & below).sum(axis=1)  # (rows,) straight down
    diagonal_links = ((skeleton[:, :-1] & below[:, 1:]).sum(axis=1)  # (rows,) down-right, and down-left
                      + (skeleton[:, 1:] & below[:, :-1]).sum(axis=1))
    row_length = side_links + down_links + math.sqrt(2) * diagonal_links  # (rows,)
    length = np.bincount(tile_of_row, row_length, n)  # (n,)
    return thickness, length


def _interp_rows(level: float, cdf: np.ndarray) -> np.ndarray:
    """For each row of the non-decreasing `cdf` (n, m) on the grid 0 .. m-1, where it reaches `level`: (n,).

    The same as np.interp(level, cdf[i], np.arange(m)) for each row i, for all rows at once.
    """
    n, m = cdf.shape
    below = np.clip((cdf <= level).sum(axis=1) - 1, 0, m - 1)  # (n,) last grid point with cdf <= level
    above = np.clip(below + 1, 0, m - 1)  # (n,)
    rows = np.arange(n)
    low, high = cdf[rows, below], cdf[rows, above]  # (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.where(high > low, (level - low) / (high - low), 0.0)  # (n,) in [0, 1]
    return np.where(cdf[:, 0] > level, 0.0, below + np.clip(step, 0.0, 1.0))


def _moments_and_box(hires: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slant (radians) and the shear-corrected width and height (fine-grid pixels) of `hires` (n, 112, 112), each (n,).

    Image moments of the grey levels, with x the column and y the row (downwards): the centroid, the central
    second moments u11 and u02, and the horizontal shear s = u11 / u02. The box's sides are the lines
    x = left + s (y - y_mid) and x = right + s (y - y_mid), where `left` and `right` leave out 1 % of the ink
    each (`BOUND_FRACTION` / 2), and its top and bottom the rows that leave out 1 % above and below.
    """
    ink = hires.astype(np.float64)  # (n, 112, 112)
    grid = np.arange(_SIDE, dtype=np.float64)  # (112,)
    rows = ink.sum(axis=2)  # (n, 112) ink per row (y)
    row_x = ink @ grid  # (n, 112) per row, the ink times its x
    mass = rows.sum(axis=1)  # (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean, y_mean = row_x.sum(axis=1) / mass, rows @ grid / mass  # (n,) the centroid
        u02 = rows @ grid**2 / mass - y_mean**2  # (n,) variance of y
        u11 = row_x @ grid / mass - x_mean * y_mean  # (n,) covariance of x and y
        shear = u11 / u02  # (n,) horizontal shift of the ink per row down
    slant = np.arctan(-shear)  # (n,) positive: the digit leans to the right

    # Horizontal extent, sheared: for t = 0 .. 111, the ink left of the line x + 1/2 < t + s (y - y_mid). In row
    # y that is the ink of columns x < t + c_y, with c_y = ceil(s (y - y_mid) - 1/2): the row's running sum.
    shift = np.ceil(np.nan_to_num(shear[:, None] * (grid - y_mean[:, None])) - 0.5)  # (n, 112) c_y
    before = np.concatenate([np.zeros_like(rows)[..., None], ink.cumsum(axis=2)], axis=2)  # (n, 112, 113): the
    # ink of row y in columns x < j, for j = 0 .. 112
    reach = np.clip(grid[None, None, :] + shift[:, :, None], 0, _SIDE).astype(np.int64)  # (n, 112 y, 112 t)
    left_of_line = np.take_along_axis(before, reach, axis=2).sum(axis=1)  # (n, 112 t)
    with np.errstate(invalid="ignore", divide="ignore"):
        horizontal_cdf = left_of_line / mass[:, None]  # (n, 112)
        vertical_cdf = (rows.cumsum(axis=1) - rows) / mass[:, None]  # (n, 112) the ink above row t
    side = BOUND_FRACTION / 2
    width = _interp_rows(1 - side, horizontal_cdf) - _interp_rows(side, horizontal_cdf)  # (n,)
    height = _interp_rows(1 - side, vertical_cdf) - _interp_rows(side, vertical_cdf)  # (n,)
    return slant, width, height


def _measure_chunk(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) float64 in [0, 1] -> (6, n): the rows of `FACTORS`, in original pixels (slant in radians)."""
    hires = upsample(images)  # (n, 112, 112) uint8
    darkest = hires.min(axis=(1, 2), keepdims=True).astype(np.float64)  # (n, 1, 1)
    brightest = hires.max(axis=(1, 2), keepdims=True).astype(np.float64)
    binary = hires >= darkest + (brightest - darkest) * THRESHOLD  # (n, 112, 112) bool
    thickness, length = _skeleton_measures(binary)  # (n,) each
    slant, width, height = _moments_and_box(hires)  # (n,) each
    area = binary.sum(axis=(1, 2)).astype(np.float64)  # (n,)
    measures = np.stack([thickness / SCALE, slant, width / SCALE, height / SCALE, length / SCALE,
                         area / SCALE**2])  # (6, n), in the order of FACTORS
    blank = (brightest == darkest).ravel()  # (n,): an image of one grey level has no digit to measure
    measures[:, blank] = np.nan
    return measures


def default_workers() -> int:
    """The worker processes that `measure` starts: one per CPU core that this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def measure(images: torch.Tensor, workers: int | None = None) -> dict[str, torch.Tensor]:
    """Morpho-MNIST's morphometrics of each image: {"thickness", "slant", "width", "height", "length", "area"}.

    images: (N, 784) float32 in [0, 1], a digit in light strokes on a dark ground (as MNIST, and as a decoder's
    output). Returns float64 tensors (N,): thickness, width, height and length in pixels of the 28 x 28 image,
    area in its square pixels, slant in radians (positive when the digit leans right). An image of one grey
    level gives NaN. `workers` processes share the chunks (default: one per core; 1 measures in this process).
    Introduced in: 07_disentanglement
    """
    checks.check_images("images", images)
    workers = default_workers() if workers is None else checks.check_positive_int("workers", workers)
    pixels = images.detach().cpu().double().numpy().reshape(-1, 28, 28)  # (N, 28, 28)
    chunks = [pixels[start : start + CHUNK] for start in range(0, len(pixels), CHUNK)]
    if workers == 1 or len(chunks) == 1:
        results = [_measure_chunk(chunk) for chunk in chunks]
    else:  # fork: the workers start at once and need no re-import; elsewhere the platform's default
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        with multiprocessing.get_context(method).Pool(min(workers, len(chunks))) as pool:
            results = pool.map(_measure_chunk, chunks, chunksize=1)
    measures = np.concatenate(results, axis=1)  # (6, N)
    return {name: torch.from_numpy(np.ascontiguousarray(row)) for name, row in zip(FACTORS, measures)}


def cache_path(split: str = "train", dataset: str = "mnist", root: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `measure_mnist` keeps its result: `<cache_dir>/<prefix>-morphometry-<SHA-256 prefix>-v<VERSION>.safetensors`.

    The name holds the first 16 hex digits of the images file's SHA-256 (which `data.read_idx` checks), so a
    different file never reads another's measurements. `cache_dir` defaults to `<root>/<folder>/morphometry`.
    """
    checks.check_choice("split", split, data.SPLIT_PREFIX)
    info = data._dataset_info(dataset)
    images_name = f"{data.SPLIT_PREFIX[split]}-images-idx3-ubyte"
    folder = Path(cache_dir) if cache_dir is not None else data.raw_folder(dataset, root).parent / "morphometry"
    return folder / f"{data.SPLIT_PREFIX[split]}-morphometry-{info.sha256[images_name][:16]}-v{VERSION}.safetensors"


def _read_cache(path: Path, count: int, sha256: str) -> dict[str, torch.Tensor] | None:
    """The measurements cached at `path` if they are whole, of `count` images, of the file `sha256`; else None."""
    import safetensors
    import safetensors.torch

    try:
        payload = path.read_bytes()
        with safetensors.safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = safetensors.torch.load(payload)
    except (OSError, ValueError, RuntimeError, safetensors.SafetensorError):
        return None
    if (metadata.get("images_sha256") != sha256 or metadata.get("version") != str(VERSION)
            or set(tensors) != set(FACTORS) or any(t.shape != (count,) for t in tensors.values())):
        return None
    return {name: tensors[name] for name in FACTORS}


def measure_mnist(split: str = "train", dataset: str = "mnist", root: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> dict[str, torch.Tensor]:
    """`measure` of every image of a split (60,000 or 10,000), read from the cache when it holds them.

    The cache (`cache_path`) is a safetensors file whose metadata records the SHA-256 of the images file and the
    version of the measurements; it is written atomically, and a cache that does not match is measured again and
    replaced. A folder that cannot be written to: the measurements are returned all the same.
    Introduced in: 07_disentanglement
    """
    import safetensors.torch

    path = cache_path(split, dataset, root, cache_dir)
    images, _ = data.load_mnist(split, root=root, dataset=dataset)  # checks the file's SHA-256
    sha256 = data._dataset_info(dataset).sha256[f"{data.SPLIT_PREFIX[split]}-images-idx3-ubyte"]
    cached = _read_cache(path, len(images), sha256)
    if cached is not None:
        return cached
    measures = measure(images, workers=workers)
    payload = safetensors.torch.save(measures, metadata={"images_sha256": sha256, "version": str(VERSION),
                                                         "dataset": dataset, "split": split})
    try:
        files.atomic_write_bytes(path, payload)
    except OSError:
        pass  # a read-only data folder: measured, not cached
    return measures
