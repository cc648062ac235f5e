"""Disentanglement metrics: how well each unit of a code tracks one factor of the data, and one only.

A code is `codes` (N, D), e.g. the encoder means `mu` of N test images; the factors are a dict of (N,) tensors,
e.g. the digit label and the morphometrics of `vaelib.morphometry.measure`. A factor in an integer tensor is a
category (the digit), one in a float tensor a continuous quantity (thickness, slant, ...).

- MIG, the mutual information gap (Chen, Li, Grosse and Duvenaud 2018, "Isolating sources of disentanglement in
  variational autoencoders", section 5), with the discretisation of Locatello et al. 2019's disentanglement_lib:
  each unit (and each continuous factor) cut into 20 bins of equal width; for each factor, the gap between the
  two units that share the most information with it, over the factor's entropy; averaged over the factors.
- DCI disentanglement, completeness and informativeness (Eastwood and Williams 2018, "A framework for the
  quantitative evaluation of disentangled representations", section 3). Importances R (D, K) from a lasso
  regression of each standardised factor on the standardised code (as one of the paper's two regressors; no
  scikit-learn needed); D: 1 - the entropy (base K) of each unit's importances over the factors, weighted by
  the unit's share of all importance; C: 1 - the entropy (base D) of each factor's importances over the units,
  weighted by the factor's share; I: the held-out R^2 of the regressions (1 - their normalised mean squared
  error, so that 1 is best), averaged over the factors.
- SAP, the separated attribute predictability (Kumar, Sattigeri and Balakrishnan 2018, "Variational inference
  of disentangled latent concepts from unlabeled observations", section 4): a score for each unit and factor
  from that unit alone (the held-out R^2 of a straight line for a continuous factor, the balanced accuracy of a
  nearest-class-mean rule for a category); for each factor, the gap between its two best units; averaged.

Each lies in [0, 1]: 1 for a code that copies each factor into a unit of its own, near 0 for noise
(tests/test_disentanglement.py). Introduced in: 07_disentanglement
"""
from __future__ import annotations

import math

import torch

BINS = 20  # disentanglement_lib's discretisation for MIG
TRAIN_FRACTION = 0.8  # of the rows that fit DCI's and SAP's predictors; the rest scores them


def _check(codes, factors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """codes as float64 (N, D) and the factors as (N,) tensors, or ValueError saying what is wrong."""
    if not isinstance(codes, torch.Tensor) or codes.ndim != 2 or codes.shape[0] < 10 or codes.shape[1] < 1:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a tensor (N, D) with N >= 10 rows, got {shape}: e.g. the encoder means mu")
    codes = codes.detach().cpu().double()
    if not torch.isfinite(codes).all():
        raise ValueError("codes hold NaN or infinite values: remove those rows first")
    if not isinstance(factors, dict) or not factors:
        raise ValueError(f"factors must be a non-empty dict of name -> tensor (N,), got {type(factors).__name__}")
    checked = {}
    for name, factor in factors.items():
        if not isinstance(factor, torch.Tensor) or factor.shape != (len(codes),):
            shape = tuple(factor.shape) if isinstance(factor, torch.Tensor) else type(factor).__name__
            raise ValueError(f"factor {name!r} must be a tensor of shape ({len(codes)},), one value per row of the "
                             f"codes, got {shape}")
        factor = factor.detach().cpu()
        if factor.is_floating_point() and not torch.isfinite(factor).all():
            raise ValueError(f"factor {name!r} holds NaN or infinite values (a blank image has no morphometrics): "
                             f"remove those rows first")
        checked[name] = factor if not factor.is_floating_point() else factor.double()
    if len(checked) < 2 and codes.shape[1] < 2:
        raise ValueError("a gap needs two units or two factors to compare: pass a code of at least 2 units")
    return codes, checked


def discretize(values: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """(N,) real -> (N,) int64 in 0 .. bins-1: `bins` bins of equal width over the values' range.

    As disentanglement_lib's `_histogram_discretize` (np.histogram's edges); a constant gives one bin.
    """
    low, high = values.min(), values.max()
    if high <= low:
        return torch.zeros(len(values), dtype=torch.int64)
    position = (values - low) / (high - low) * bins  # (N,) in [0, bins]
    return position.floor().clamp(0, bins - 1).long()


def _categories(factor: torch.Tensor, bins: int) -> torch.Tensor:
    """(N,) -> (N,) int64 categories 0 .. c-1: an integer factor's own values, a float factor's bins."""
    labels = discretize(factor, bins) if factor.is_floating_point() else factor.long()
    return torch.unique(labels, return_inverse=True)[1]


def entropy(labels: torch.Tensor) -> float:
    """The entropy in nats of the empirical distribution of the categories `labels` (N,)."""
    p = torch.bincount(labels).double() / len(labels)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def discrete_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(a; b) in nats of two categorical sequences (N,) each, from their joint histogram."""
    a_count, b_count = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * b_count + b, minlength=a_count * b_count).double().view(a_count, b_count)
    joint /= len(a)  # (a_count, b_count) p(a, b)
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)  # (a_count, b_count) p(a) p(b)
    seen = joint > 0
    return float((joint[seen] * (joint[seen] / outer[seen]).log()).sum())


def mutual_information(codes: torch.Tensor, factors: dict[str, torch.Tensor], bins: int = BINS) -> torch.Tensor:
    """(D, K) in nats: I(unit d; factor k), each unit and each continuous factor cut into `bins` equal bins.

    The matrix of a chapter's heat map; `mig` reads its gaps. Introduced in: 07_disentanglement
    """
    codes, factors = _check(codes, factors)
    units = [discretize(codes[:, d], bins) for d in range(codes.shape[1])]
    labels = [_categories(f, bins) for f in factors.values()]
    return torch.tensor([[discrete_mutual_information(u, v) for v in labels] for u in units], dtype=torch.float64)


def mig_per_factor(codes: torch.Tensor, factors: dict[str, torch.Tensor], bins: int = BINS) -> dict[str, float]:
    """Each factor's gap (I(best unit; v) - I(second unit; v)) / H(v), in [0, 1]. Chen et al. 2018, eq. (7)."""
    codes, factors = _check(codes, factors)
    information = mutual_information(codes, factors, bins)  # (D, K)
    if codes.shape[1] < 2:
        raise ValueError("MIG compares a factor's two most informative units: the code needs at least 2 units")
    top_two = information.topk(2, dim=0).values  # (2, K)
    gaps = {}
    for k, (name, factor) in enumerate(factors.items()):
        h = entropy(_categories(factor, bins))
        gaps[name] = float((top_two[0, k] - top_two[1, k]) / h) if h > 0 else 0.0  # a constant: nothing to find
    return gaps


def mig(codes: torch.Tensor, factors: dict[str, torch.Tensor], bins: int = BINS) -> float:
    """The mutual information gap: `mig_per_factor` averaged over the factors. Introduced in: 07_disentanglement"""
    gaps = mig_per_factor(codes, factors, bins)
    return sum(gaps.values()) / len(gaps)


def _split(count: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(count) into train and test indices."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    cut = min(max(int(round(count * train_fraction)), 2), count - 2)
    return order[:cut], order[cut:]


def _standardise(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """(N, c) centred and scaled by the train rows' mean and sd (a constant column stays 0)."""
    mean, sd = x[train].mean(0), x[train].std(0)
    return (x - mean) / torch.where(sd > 0, sd, torch.ones_like(sd))


def _targets(factor: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, c): a continuous factor as one column, a category as its one-hot columns."""
    if factor.is_floating_point():
        return factor[:, None]
    return torch.nn.functional.one_hot(torch.unique(factor, return_inverse=True)[1]).double()


def lasso(x: torch.Tensor, y: torch.Tensor, alpha: float, sweeps: int = 500) -> torch.Tensor:
    """Weights w (D, c) minimising ||y - x w||^2 / (2 N) + alpha |w|_1 for each column of y, by coordinate descent.

    x (N, D) and y (N, c), both centred. scikit-learn's `Lasso` objective (Tibshirani 1996); the loop runs on
    the (D, D) Gram matrix, so its cost does not grow with N.
    """
    gram = x.T @ x / len(x)  # (D, D)
    correlation = x.T @ y / len(x)  # (D, c)
    w = torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype)  # (D, c)
    for _ in range(sweeps):
        before = w.clone()
        for d in range(x.shape[1]):
            if gram[d, d] <= 0:
                continue  # a constant unit explains nothing
            rest = correlation[d] - gram[d] @ w + gram[d, d] * w[d]  # (c,) what unit d alone would explain
            w[d] = torch.sign(rest) * (rest.abs() - alpha).clamp(min=0) / gram[d, d]
        if (w - before).abs().max() < 1e-10:
            break
    return w


def _one_minus_entropy(p: torch.Tensor, base: int) -> torch.Tensor:
    """(rows, m) non-negative weights -> (rows,): 1 - the entropy of each row, normalised, in base `base`."""
    p = p / p.sum(1, keepdim=True)
    terms = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    return 1.0 + terms.sum(1) / math.log(base)


def dci(codes: torch.Tensor, factors: dict[str, torch.Tensor], alpha: float | None = None,
        train_fraction: float = TRAIN_FRACTION, seed: int = 0) -> dict:
    """DCI disentanglement, completeness and informativeness (Eastwood and Williams 2018), with a lasso regressor.

    Returns {"disentanglement", "completeness", "informativeness": floats in [0, 1], "importance": (D, K) tensor}.
    Each factor (standardised; a category as its one-hot columns) is regressed on the standardised code, fitted
    on `train_fraction` of the rows; the importance R[d, k] is the mean |weight| of unit d over factor k's columns.
    `alpha` (the lasso's penalty) defaults to max(0.02, 4 / sqrt(N_train)): 0.02 as Eastwood and Williams, and
    at least 4 standard errors of the correlation of two independent variables, so that pure noise gets no
    weight at all (and, by the convention of disentanglement_lib, scores 0). Informativeness: the held-out R^2,
    clipped at 0, averaged over the factors. Introduced in: 07_disentanglement
    """
    codes, factors = _check(codes, factors)
    train, test = _split(len(codes), train_fraction, seed)
    alpha = max(0.02, 4.0 / math.sqrt(len(train))) if alpha is None else float(alpha)
    x = _standardise(codes, train)  # (N, D)
    importance, r2 = [], []
    for factor in factors.values():
        y = _standardise(_targets(factor), train)  # (N, c)
        w = lasso(x[train], y[train], alpha)  # (D, c)
        importance.append(w.abs().mean(1))  # (D,)
        error = ((y[test] - x[test] @ w) ** 2).sum()
        spread = ((y[test] - y[test].mean(0)) ** 2).sum()
        r2.append(max(0.0, 1.0 - float(error / spread)) if spread > 0 else 0.0)
    R = torch.stack(importance, dim=1)  # (D, K)
    D, K = R.shape
    if R.sum() == 0:  # nothing predicts anything: disentanglement_lib's convention, uniform importance
        disentanglement = completeness = 0.0
    else:
        unit_share = R.sum(1) / R.sum()  # (D,)
        factor_share = R.sum(0) / R.sum()  # (K,)
        used = unit_share > 0
        disentanglement = float((_one_minus_entropy(R[used], K) * unit_share[used]).sum()) if K > 1 else 1.0
        found = factor_share > 0
        completeness = float((_one_minus_entropy(R.T[found], D) * factor_share[found]).sum()) if D > 1 else 1.0
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": sum(r2) / len(r2), "importance": R}


def _balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    classes = torch.unique(truth)
    return float(torch.stack([(predicted[truth == c] == c).double().mean() for c in classes]).mean())


def sap_scores(codes: torch.Tensor, factors: dict[str, torch.Tensor], train_fraction: float = TRAIN_FRACTION,
               seed: int = 0) -> torch.Tensor:
    """(D, K): how well unit d alone predicts factor k on held-out rows (Kumar et al. 2018's score matrix).

    A continuous factor: the R^2 of a straight line fitted on the train rows, clipped at 0. A category: the
    balanced accuracy of assigning each held-out row to the class whose train mean of the unit is nearest.
    """
    codes, factors = _check(codes, factors)
    train, test = _split(len(codes), train_fraction, seed)
    scores = torch.zeros(codes.shape[1], len(factors), dtype=torch.float64)
    for k, factor in enumerate(factors.values()):
        for d in range(codes.shape[1]):
            unit = codes[:, d]
            if factor.is_floating_point():
                u, v = unit[train] - unit[train].mean(), factor[train] - factor[train].mean()
                slope = float((u * v).sum() / (u * u).sum()) if (u * u).sum() > 0 else 0.0
                fitted = factor[train].mean() + slope * (unit[test] - unit[train].mean())
                spread = ((factor[test] - factor[test].mean()) ** 2).sum()
                r2 = 1.0 - float(((factor[test] - fitted) ** 2).sum() / spread) if spread > 0 else 0.0
                scores[d, k] = max(0.0, r2)
            else:
                classes = torch.unique(factor[train])
                means = torch.stack([unit[train][factor[train] == c].mean() for c in classes])  # (C,)
                nearest = classes[(unit[test, None] - means[None, :]).abs().argmin(1)]  # (N_test,)
                scores[d, k] = _balanced_accuracy(nearest, factor[test])
    return scores


def sap(codes: torch.Tensor, factors: dict[str, torch.Tensor], train_fraction: float = TRAIN_FRACTION,
        seed: int = 0) -> float:
    """The separated attribute predictability: for each factor, its best unit's score minus the second best's
    (`sap_scores`), averaged over the factors. Kumar et al. 2018, section 4. Introduced in: 07_disentanglement"""
    scores = sap_scores(codes, factors, train_fraction, seed)  # (D, K)
    if scores.shape[0] < 2:
        raise ValueError("SAP compares a factor's two best units: the code needs at least 2 units")
    top_two = scores.topk(2, dim=0).values  # (2, K)
    return float((top_two[0] - top_two[1]).mean())


def scores(codes: torch.Tensor, factors: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
    """All of them at once: {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"}.

    Introduced in: 07_disentanglement
    """
    result = dci(codes, factors, seed=seed)
    return {"mig": mig(codes, factors), "dci_disentanglement": result["disentanglement"],
            "dci_completeness": result["completeness"], "dci_informativeness": result["informativeness"],
            "sap": sap(codes, factors, seed=seed)}
