"""vaelib.morphometry: synthetic strokes of known thickness, slant and size; Morpho-MNIST's own definitions
computed independently (skimage's pyramid_expand, a per-image loop for the box); the values that Morpho-MNIST
released for MNIST's first training digit; and the cache."""
import math

import numpy as np
import pytest
import torch

from vaelib import data, morphometry


def bar(width: float, length: float, slant: float = 0.0, fine: int = 10) -> torch.Tensor:
    """A straight stroke (1, 784): `width` pixels across (horizontally), `length` tall, leaning right by `slant`
    radians (a sheared rectangle about the centre), drawn at 10x and averaged down to 28 x 28 grey levels."""
    centres = (np.arange(28 * fine) + 0.5) / fine  # in pixels of the 28 x 28 image
    y, x = np.meshgrid(centres, centres, indexing="ij")
    inside = (np.abs(x - 14 - math.tan(slant) * (14 - y)) <= width / 2) & (np.abs(y - 14) <= length / 2)
    image = inside.reshape(28, fine, 28, fine).mean(axis=(1, 3))  # (28, 28) in [0, 1]
    return torch.from_numpy(image.reshape(1, 784).astype(np.float32))


def measured(images: torch.Tensor) -> dict[str, float]:
    return {name: float(values[0]) for name, values in morphometry.measure(images, workers=1).items()}


@pytest.mark.parametrize("width", [2.5, 3.0, 4.0, 5.0])
def test_thickness_of_an_upright_bar_is_its_width(width):
    assert measured(bar(width, 18))["thickness"] == pytest.approx(width, abs=0.15)


def test_thickness_rises_with_the_stroke_width():
    """On a straight upright stroke the distances are whole pixels of the 4x grid: thickness moves in steps of 0.5."""
    thickness = [measured(bar(width, 18))["thickness"] for width in (1.5, 2.5, 3.5, 4.5, 6.0)]
    assert all(a < b for a, b in zip(thickness, thickness[1:])), thickness


@pytest.mark.parametrize("slant", [-0.5, -0.2, 0.0, 0.3, 0.6])
def test_slant_of_a_sheared_bar_is_its_angle(slant):
    measures = measured(bar(2.5, 18, slant))
    assert measures["slant"] == pytest.approx(slant, abs=0.01)
    # the thickness is taken across the stroke: the horizontal width times cos(slant)
    assert measures["thickness"] == pytest.approx(2.5 * math.cos(slant), abs=0.15)


@pytest.mark.parametrize("slant", [-0.5, 0.3, 0.6])
def test_width_is_corrected_for_the_shear(slant):
    """A sheared bar is as wide as the upright one: its plain bounding box would be 18 tan(slant) wider."""
    assert measured(bar(2.5, 18, slant))["width"] == pytest.approx(measured(bar(2.5, 18))["width"], abs=0.2)


@pytest.mark.parametrize("length", [8, 12, 16, 20])
def test_height_and_length_of_a_bar(length):
    measures = measured(bar(2.5, length))
    assert measures["height"] == pytest.approx(length, abs=0.6)  # the blur adds a little, the 1 % trims a little
    # the skeleton stops about half a stroke width short of each end
    assert measures["length"] == pytest.approx(length - 2.5 - 0.9, abs=0.5)
    assert measures["area"] == pytest.approx(2.5 * length, rel=0.12)


def test_width_rises_with_the_stroke_width():
    widths = [measured(bar(width, 18))["width"] for width in (2.0, 4.0, 8.0, 12.0)]
    assert all(b - a > 1.0 for a, b in zip(widths, widths[1:])), widths


def test_upsampling_is_skimages_pyramid_expand(mnist_test):
    """Step 1 of Morpho-MNIST, exactly: pyramid_expand(upscale=4, order=3), as 8-bit grey levels."""
    from skimage.transform import pyramid_expand

    x, _ = mnist_test
    images = x[:20].double().numpy().reshape(-1, 28, 28)
    expected = np.stack([(255 * pyramid_expand(image, upscale=4, order=3)).astype(np.uint8) for image in images])
    np.testing.assert_array_equal(morphometry.upsample(images), expected)


def loop_moments_and_box(hires: np.ndarray, fraction: float = 0.02) -> tuple[float, float, float]:
    """Morpho-MNIST's slant and bounding parallelogram for one image, pixel by pixel as the paper defines them."""
    ink = hires.astype(float)
    height, width = ink.shape
    x, y = np.arange(width)[None, :], np.arange(height)[:, None]
    mass = ink.sum()
    x_mean, y_mean = (x * ink).sum() / mass, (y * ink).sum() / mass
    u11 = (x * y * ink).sum() / mass - x_mean * y_mean
    u02 = (y**2 * ink).sum() / mass - y_mean**2
    shear = u11 / u02
    horizontal = np.array([((x + 0.5 < t + shear * (y - y_mean)) * ink).sum() for t in range(width)]) / mass
    vertical = np.array([((y < t) * ink).sum() for t in range(height)]) / mass
    left, right = np.interp([fraction / 2, 1 - fraction / 2], horizontal, np.arange(width))
    top, bottom = np.interp([fraction / 2, 1 - fraction / 2], vertical, np.arange(height))
    return math.atan(-shear), right - left, bottom - top


def test_slant_and_box_match_a_per_image_loop(mnist_test):
    x, _ = mnist_test
    hires = morphometry.upsample(x[:30].double().numpy().reshape(-1, 28, 28))
    expected = np.array([loop_moments_and_box(image) for image in hires])  # (30, 3)
    np.testing.assert_allclose(np.stack(morphometry._moments_and_box(hires), axis=1), expected, atol=1e-9)


def test_interp_rows_is_np_interp():
    generator = np.random.default_rng(0)
    steps = generator.random((50, 40)) * (generator.random((50, 40)) < 0.6)  # with flat runs
    cdf = np.cumsum(steps, axis=1) / steps.sum(axis=1, keepdims=True)
    for level in (0.0, 0.01, 0.5, 0.99, 1.0):
        expected = [np.interp(level, row, np.arange(40)) for row in cdf]
        np.testing.assert_allclose(morphometry._interp_rows(level, cdf), expected, atol=1e-12)


def test_mnist_first_digit_against_morpho_mnists_release(mnist_train):
    """Morpho-MNIST's released measurements of MNIST's training image 0 (a 5), from its original/train-morpho.csv
    as quoted in its tests/test_measure.py. Our skeleton is skeletonize's, not medial_axis's: medial_axis leaves
    short spurs, so its length is longer (here by 11 %) and its mean thickness a little lower."""
    x, _ = mnist_train
    measures = measured(x[:1])
    assert measures["area"] == pytest.approx(107.3125, rel=0.01)
    assert measures["slant"] == pytest.approx(0.23107, abs=0.005)
    assert measures["width"] == pytest.approx(14.5396, abs=0.1)
    assert measures["height"] == pytest.approx(19.8491, abs=0.1)
    assert measures["thickness"] == pytest.approx(2.4607, rel=0.05)
    assert 0.85 < measures["length"] / 50.2665 < 1.0


def test_thickness_agrees_with_medial_axis_on_mnist(mnist_test):
    """Morpho-MNIST's own skeleton (medial_axis) against ours, digit by digit: thickness within 1 % on average."""
    from skimage.morphology import medial_axis

    x, _ = mnist_test
    hires = morphometry.upsample(x[:100].double().numpy().reshape(-1, 28, 28)).astype(float)
    low, high = hires.min(axis=(1, 2), keepdims=True), hires.max(axis=(1, 2), keepdims=True)
    expected = []
    for binary in hires >= low + (high - low) * 0.5:
        skeleton, distance = medial_axis(binary, return_distance=True)
        expected.append(2 * distance[skeleton].mean() / 4)
    ratio = morphometry.measure(x[:100], workers=1)["thickness"].numpy() / np.array(expected)
    assert abs(ratio.mean() - 1) < 0.02 and ratio.std() < 0.05


def test_a_batch_measures_each_image_as_alone_and_workers_agree(mnist_test):
    """The mosaic must not let one digit's skeleton or distances reach another's; two processes change nothing."""
    x, _ = mnist_test
    images = torch.cat([x[:150], bar(3.0, 18), bar(2.5, 12, 0.4)])  # across two chunks of 100
    together = morphometry.measure(images, workers=1)
    in_two = morphometry.measure(images, workers=2)
    for name in morphometry.FACTORS:
        torch.testing.assert_close(in_two[name], together[name], rtol=0, atol=0)
    for index in (0, 99, 100, 151):
        alone = morphometry.measure(images[index : index + 1], workers=1)
        for name in morphometry.FACTORS:
            assert float(alone[name][0]) == pytest.approx(float(together[name][index]), abs=1e-9), (index, name)


def test_result_shapes_and_blank_images():
    images = torch.cat([bar(3.0, 18), torch.zeros(1, 784), torch.full((1, 784), 0.5)])
    result = morphometry.measure(images, workers=1)
    assert set(result) == set(morphometry.FACTORS)
    for values in result.values():
        assert values.shape == (3,) and values.dtype == torch.float64
        assert torch.isfinite(values[0]) and values[1:].isnan().all()  # one grey level: nothing to measure


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="784"):
        morphometry.measure(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        morphometry.measure(torch.full((1, 784), 255.0))
    with pytest.raises(ValueError, match="workers"):
        morphometry.measure(bar(3.0, 18), workers=0)


def test_measure_mnist_caches_under_the_datas_checksum(tmp_path, monkeypatch, mnist_test):
    x, y = mnist_test
    monkeypatch.setattr(data, "load_mnist", lambda split, root=None, dataset="mnist": (x[:40], y[:40]))
    first = morphometry.measure_mnist("test", cache_dir=tmp_path, workers=1)
    path = morphometry.cache_path("test", cache_dir=tmp_path)
    assert path.exists() and data.DATASETS["mnist"].sha256["t10k-images-idx3-ubyte"][:16] in path.name

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again although the cache holds the result")

    with monkeypatch.context() as patch:
        patch.setattr(morphometry, "measure", must_not_measure)
        cached = morphometry.measure_mnist("test", cache_dir=tmp_path)
    for name in morphometry.FACTORS:
        torch.testing.assert_close(cached[name], first[name], rtol=0, atol=0)

    # a cache written for other images (another checksum in its metadata), or a damaged one, is measured again
    import safetensors.torch
    path.write_bytes(safetensors.torch.save({name: torch.zeros(40, dtype=torch.float64) for name in morphometry.FACTORS},
                                            metadata={"images_sha256": "0" * 64, "version": str(morphometry.VERSION)}))
    torch.testing.assert_close(morphometry.measure_mnist("test", cache_dir=tmp_path, workers=1)["area"], first["area"])
    path.write_bytes(path.read_bytes()[:100])
    torch.testing.assert_close(morphometry.measure_mnist("test", cache_dir=tmp_path, workers=1)["slant"], first["slant"])
