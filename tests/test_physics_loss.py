"""The generator's physics term (caloquant.train.physics_loss): its observables are the cell
counts and moments the validation measures, it vanishes for a true sample up to the sampling
noise of two batches and sees a too narrow or too sparse shower, with a gradient."""

from __future__ import annotations

import numpy as np
import torch

from caloquant.train.epoch_metrics import summarise
from caloquant.train.physics_loss import (
    THRESHOLDS_GEV,
    layer_cell_observables,
    layer_observables,
    physics_loss,
    shower_observables,
)
from tests.helpers import toy_showers


def _batch(n: int, seed: int, **kw: float) -> tuple[torch.Tensor, np.ndarray]:
    s, e = toy_showers(n, seed, **kw)
    return torch.from_numpy(s.astype(np.float32)), e


def test_the_observables_are_the_counts_and_moments_the_validation_measures() -> None:
    x, e = _batch(32, 1)
    obs = shower_observables(x * 100.0, cell_scale=100.0).numpy()  # units cancel
    ref = summarise(x.numpy(), e)
    k = len(THRESHOLDS_GEV)
    for i, ax in enumerate("xyz"):
        np.testing.assert_allclose(obs[:, k + 2 * i], ref[f"mean_{ax}"], rtol=1e-4)
        np.testing.assert_allclose(obs[:, k + 2 * i + 1], ref[f"width_{ax}"], rtol=1e-3)
    # the smooth count of cells above each threshold is the hard count up to the logistic step's
    # smoothing (over the batch within 15 %: a threshold off by a decade would be 2-10x off; both
    # batches of the term are counted alike)
    for j, t in enumerate(THRESHOLDS_GEV):
        hard = (x.flatten(1) > t).sum().item()
        np.testing.assert_allclose(np.expm1(obs[:, j]).sum(), hard, rtol=0.15)


def test_the_term_vanishes_for_a_true_sample_and_sees_narrow_or_sparse_showers() -> None:
    """Batches at one incident energy (the term pairs showers by energy)."""
    at = {"lo": 300.0, "hi": 300.0}
    real, _ = _batch(64, 2, **at)
    assert float(physics_loss(real, real)) == 0.0
    # independent batches of one distribution: the sampling noise of 64 pairs, well below a unit
    same = [float(physics_loss(_batch(64, 3 + i, **at)[0], real)) for i in range(3)]
    narrow = float(physics_loss(_batch(64, 3, width_scale=0.9, **at)[0], real))
    sparse_x, _ = _batch(64, 3, **at)
    cut = torch.quantile(sparse_x[sparse_x > 0], 0.2)  # the faintest 20 % of the cells lost
    sparse = float(physics_loss(torch.where(sparse_x < cut, 0.0, sparse_x), real))
    assert max(same) < 0.3, same
    # 10 % narrower: a pull of 2 in each transverse width; 20 % fewer hits: 4 in the lowest count
    assert min(narrow, sparse) > 10 * max(same), (same, narrow, sparse)


def test_an_error_that_changes_sign_with_energy_does_not_cancel() -> None:
    """Too narrow at 100-200 GeV and too wide at 400-500 GeV: the batch means of the pairs
    nearly cancel, their trend in the incident energy does not."""
    lo_r, e_lo = _batch(32, 6, lo=100.0, hi=200.0)
    hi_r, e_hi = _batch(32, 7, lo=400.0, hi=500.0)
    lo_f, _ = _batch(32, 6, lo=100.0, hi=200.0, width_scale=0.9)
    hi_f, _ = _batch(32, 7, lo=400.0, hi=500.0, width_scale=1.1)
    real, fake = torch.cat([lo_r, hi_r]), torch.cat([lo_f, hi_f])
    e = torch.from_numpy(np.concatenate([e_lo, e_hi]))
    without = float(physics_loss(fake, real))
    with_trend = float(physics_loss(fake, real, e))
    assert with_trend > 0.5 and with_trend > 3 * without, (without, with_trend)


def test_the_generated_showers_get_a_gradient() -> None:
    real, _ = _batch(16, 4)
    fake = (_batch(16, 5, width_scale=0.9)[0] * 1.0).requires_grad_(True)
    physics_loss(fake, real).backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    assert fake.grad.abs().sum() > 0


def test_the_layer_observables_are_the_per_layer_features_of_the_classifier() -> None:
    """Per layer: the energy fraction and the transverse centres and widths of caloquant.physics'
    shower_features (what the CaloChallenge high-level classifier reads; its centres count from
    the grid centre)."""
    from caloquant.physics import shower_features

    x, e = _batch(16, 9)
    obs = layer_observables(x * 100.0, cell_scale=100.0).numpy()
    f = shower_features(x.numpy(), e)
    z = x.shape[3]
    frac = f["layer_e"] / f["ecal"][:, None]
    np.testing.assert_allclose(np.exp(obs[:, :z]) - 1e-4, frac, rtol=1e-4, atol=1e-7)
    for i, key in enumerate(("layer_cx", "layer_cy", "layer_wx", "layer_wy")):
        part = obs[:, (i + 1) * z : (i + 2) * z]
        want = f[key] + (x.shape[1] - 1) / 2 if key.endswith(("cx", "cy")) else f[key]
        np.testing.assert_allclose(part, want, rtol=1e-3, atol=1e-4)


def test_the_layer_term_sees_what_the_shower_wide_one_misses() -> None:
    """An empty first layer and transverse widths that alternate from layer to layer (the
    per-layer faults of a conv2d generator) hardly move the shower-wide observables; the layer
    term sees them."""
    at = {"lo": 300.0, "hi": 300.0}
    real, _ = _batch(64, 2, **at)
    same, _ = _batch(64, 3, **at)
    fake = same.clone()
    fake[..., 0] = 0.0  # no energy in the first layer
    wide, _ = _batch(64, 3, width_scale=1.3, **at)
    narrow, _ = _batch(64, 3, width_scale=0.7, **at)
    fake[..., 1::2] = wide[..., 1::2]
    fake[..., 2::2] = narrow[..., 2::2]
    base = float(physics_loss(same, real, layers=True))
    flat = float(physics_loss(fake, real))
    layered = float(physics_loss(fake, real, layers=True))
    assert layered - flat > 10 * base and layered > 3 * flat, (base, flat, layered)


def test_the_layer_cell_observables_are_the_classifiers_sparsity_and_radial_width() -> None:
    """Per layer: the count of cells above 1 keV (CaloChallenge's sparsity: 1 - count / cells;
    smooth, within 15 % over the batch like the shower-wide counts) and the radial width wr of
    the high-level inputs (cells from the grid's axis), exactly."""
    from caloquant.physics.calochallenge import high_level_inputs, high_level_names

    x, e = _batch(16, 9)
    obs = layer_cell_observables(x * 100.0, cell_scale=100.0).numpy()
    z = x.shape[3]
    hl = high_level_inputs(x.numpy(), e, 1.0, THRESHOLDS_GEV[0])
    col = {n: i for i, n in enumerate(high_level_names(z))}
    cells = x.shape[1] * x.shape[2]
    hard = (1 - hl[:, [col[f"sparsity_L{i}"] for i in range(z)]]) * cells
    np.testing.assert_allclose(np.expm1(obs[:, :z]).sum(), hard.sum(), rtol=0.15)
    wr = hl[:, [col[f"wr_L{i}"] for i in range(z)]]
    np.testing.assert_allclose(obs[:, z:], wr, rtol=1e-3, atol=1e-3)


def test_the_layer_cell_term_sees_a_compact_first_layer() -> None:
    """The stage-2 model's fault: its first layers' energy in one or two central cells where the
    real showers spread it over a few cells. The energy fraction and the x and y centres of the
    layer are unchanged, so the layer term hardly moves; the layer-cell term sees it."""
    at = {"lo": 300.0, "hi": 300.0}
    real, _ = _batch(64, 2, **at)
    same, _ = _batch(64, 3, **at)
    fake = same.clone()
    for layer in (0, 1):
        e_layer = fake[..., layer].sum(dim=(1, 2))
        fake[..., layer] = 0.0
        c = fake.shape[1] // 2
        fake[:, c, c, layer] = e_layer  # all of it in the central cell
    base = float(physics_loss(same, real, layers=True, layer_cells=True))
    layered = float(physics_loss(fake, real, layers=True))
    cells = float(physics_loss(fake, real, layers=True, layer_cells=True))
    assert cells - layered > 10 * base, (base, layered, cells)
    fake.requires_grad_(True)
    physics_loss(fake, real, layer_cells=True).backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
