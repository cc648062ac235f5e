"""vaelib.disentanglement on synthetic codes whose answer is known: a code that copies each factor into a unit of
its own scores near 1, the same code after a random rotation lower, pure noise near 0; the pieces (discretisation,
mutual information, lasso) against independent NumPy computations."""
import math

import numpy as np
import pytest
import torch

from vaelib import disentanglement as dis

N = 4000
CONTINUOUS = ("thickness", "slant", "width", "height", "length", "area")


def synthetic_factors(seed: int = 0) -> dict[str, torch.Tensor]:
    """The digit (a category) and six independent continuous factors, of different scales and shapes."""
    generator = torch.Generator().manual_seed(seed)
    factors = {"digit": torch.randint(0, 10, (N,), generator=generator)}
    for k, name in enumerate(CONTINUOUS):
        values = torch.randn(N, generator=generator, dtype=torch.float64)
        factors[name] = values.exp() if k % 2 else 3.0 * values + k  # log-normal or normal
    return factors


def copy_code(factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, 7): unit k is factor k, standardised (the digit as its number 0-9)."""
    code = torch.stack([f.double() for f in factors.values()], dim=1)
    return (code - code.mean(0)) / code.std(0)


def rotation(size: int, seed: int = 1) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix


@pytest.fixture(scope="module")
def factors():
    return synthetic_factors()


@pytest.fixture(scope="module")
def results(factors):
    copy = copy_code(factors)
    noise = torch.randn(N, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    codes = {"copy": copy, "rotated": copy @ rotation(7), "noise": noise}
    return {name: dis.scores(code, factors) for name, code in codes.items()}


METRICS = ("mig", "dci_disentanglement", "dci_completeness", "sap")


@pytest.mark.parametrize("metric", METRICS)
def test_a_code_that_copies_the_factors_scores_near_1(results, metric):
    assert results["copy"][metric] > 0.9


@pytest.mark.parametrize("metric", METRICS)
def test_the_same_code_rotated_scores_lower(results, metric):
    assert results["rotated"][metric] < results["copy"][metric] - 0.4
    assert results["rotated"][metric] < 0.5


@pytest.mark.parametrize("metric", METRICS + ("dci_informativeness",))
def test_pure_noise_scores_near_0(results, metric):
    assert results["noise"][metric] < 0.05


def test_informativeness_sees_through_a_rotation(results, factors):
    """A linear regressor predicts the factors from a rotated code as well as from the code itself."""
    assert results["rotated"]["dci_informativeness"] == pytest.approx(results["copy"]["dci_informativeness"], abs=0.03)
    continuous = {name: factors[name] for name in CONTINUOUS}
    assert dis.dci(copy_code(factors)[:, 1:], continuous)["informativeness"] > 0.97


def test_a_factor_copied_into_two_units_has_no_gap(factors):
    """MIG and SAP reward a factor held by one unit only: a duplicate closes its gap; the others keep theirs."""
    code = copy_code(factors)
    duplicated = torch.cat([code, code[:, 1:2]], dim=1)  # thickness twice
    gaps = dis.mig_per_factor(duplicated, factors)
    assert gaps["thickness"] == pytest.approx(0.0, abs=1e-9)
    assert min(gap for name, gap in gaps.items() if name != "thickness") > 0.9
    scores = dis.sap_scores(duplicated, factors)  # (8, 7)
    assert scores[1, 1] == pytest.approx(scores[7, 1]) and scores[1, 1] > 0.99


def test_dci_importance_of_a_copy_is_diagonal(factors):
    importance = dis.dci(copy_code(factors), factors)["importance"]  # (7, 7)
    assert importance.shape == (7, 7)
    off_diagonal = importance - torch.diag(torch.diagonal(importance))
    assert off_diagonal.abs().max() < 1e-12 and torch.diagonal(importance).min() > 0.2


def test_mixing_two_factors_in_one_unit_lowers_disentanglement_not_completeness(factors):
    """Unit 0 carries thickness + slant, unit 1 slant alone: thickness lives in one unit (complete), but unit 0
    serves two factors (not disentangled). Eastwood and Williams' distinction, on a case whose answer is known."""
    two = {"thickness": factors["thickness"], "slant": factors["slant"]}
    z = copy_code(two)
    mixed = torch.stack([z[:, 0] + z[:, 1], z[:, 1]], dim=1)
    result, pure = dis.dci(mixed, two), dis.dci(z, two)
    assert pure["disentanglement"] > 0.99 and pure["completeness"] > 0.99
    assert result["disentanglement"] < 0.8 and result["completeness"] < pure["completeness"]


def test_discretize_is_disentanglement_libs_histogram():
    """disentanglement_lib's _histogram_discretize: np.digitize(v, np.histogram(v, bins)[1][:-1]) (1-based there)."""
    values = torch.randn(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64).exp()
    edges = np.histogram(values.numpy(), 20)[1][:-1]
    expected = np.digitize(values.numpy(), edges) - 1
    np.testing.assert_array_equal(dis.discretize(values, 20).numpy(), expected)
    assert dis.discretize(torch.ones(5, dtype=torch.float64)).tolist() == [0] * 5


def test_mutual_information_is_the_entropy_identity():
    """I(a; b) = H(a) + H(b) - H(a, b), the entropies from NumPy's histograms."""
    generator = np.random.default_rng(4)
    a = generator.integers(0, 6, 3000)
    b = (a + generator.integers(0, 3, 3000)) % 7

    def h(counts):
        p = counts[counts > 0] / counts.sum()
        return -(p * np.log(p)).sum()

    joint = np.histogram2d(a, b, bins=(6, 7), range=((0, 6), (0, 7)))[0]
    expected = h(joint.sum(1)) + h(joint.sum(0)) - h(joint.ravel())
    assert dis.discrete_mutual_information(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-12)
    assert dis.entropy(torch.from_numpy(a)) == pytest.approx(h(np.bincount(a).astype(float)), rel=1e-12)


def test_lasso_against_least_squares_and_soft_thresholding():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(500, 4, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.0], [0.5]], dtype=torch.float64) + 0.1 * torch.randn(500, 1, generator=generator,
                                                                                              dtype=torch.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    torch.testing.assert_close(dis.lasso(x, y, alpha=0.0), torch.linalg.lstsq(x, y).solution, atol=1e-8, rtol=0)
    q, _ = torch.linalg.qr(x)  # orthogonal columns, scaled so that x^T x / N = I: the lasso soft-thresholds OLS
    q = q * math.sqrt(len(q))
    ols = q.T @ y / len(q)
    expected = torch.sign(ols) * (ols.abs() - 0.3).clamp(min=0)
    torch.testing.assert_close(dis.lasso(q, y, alpha=0.3), expected, atol=1e-8, rtol=0)


def test_mig_matches_a_direct_computation(factors):
    """MIG from its definition, with the discretisation and MI written out here in NumPy."""
    code = copy_code(factors) @ rotation(7, seed=6)[:, :5]  # (N, 5): a partial, mixed code
    code_bins = [np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in code.numpy().T]
    gaps = []
    for factor in factors.values():
        v = factor.numpy()
        labels = v if not factor.is_floating_point() else np.digitize(v, np.histogram(v, 20)[1][:-1])
        _, labels = np.unique(labels, return_inverse=True)
        information = []
        for u in code_bins:
            joint = np.zeros((u.max() + 1, labels.max() + 1))
            np.add.at(joint, (u, labels), 1.0 / len(u))
            outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
            seen = joint > 0
            information.append((joint[seen] * np.log(joint[seen] / outer[seen])).sum())
        p = np.bincount(labels) / len(labels)
        top = sorted(information)[::-1]
        gaps.append((top[0] - top[1]) / -(p[p > 0] * np.log(p[p > 0])).sum())
    assert dis.mig(code, factors) == pytest.approx(np.mean(gaps), rel=1e-10)


def test_bad_input_is_refused(factors):
    code = copy_code(factors)
    with pytest.raises(ValueError, match="codes"):
        dis.mig(code[:, 0], factors)
    with pytest.raises(ValueError, match="one value per row"):
        dis.dci(code, {"digit": factors["digit"][:10]})
    with pytest.raises(ValueError, match="NaN"):
        dis.sap(code, {"thickness": torch.full((N,), float("nan"), dtype=torch.float64)})
    with pytest.raises(ValueError, match="dict"):
        dis.scores(code, [factors["digit"]])
