"""The CaloChallenge classifier protocol (caloquant.physics.calochallenge): chance level on two
samples of one distribution, near-perfect separation of a visibly different one, the JSON of
``validate --classifier``. Small synthetic showers (tests.helpers.toy_showers) and a small
network keep it fast; the protocol's defaults are measured on Geant4 in
benchmarks/calochallenge_classifier.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caloquant.errors import CaloquantError
from caloquant.physics import CaloChallengeConfig, calochallenge_test, validate
from caloquant.physics.calochallenge import (
    RowSubset,
    high_level_inputs,
    high_level_names,
    low_level_inputs,
)
from tests.helpers import toy_showers

N, GRID = 2_500, 12  # per sample: 500 + 500 showers in the test split
# a small network and one thread (the test shares two cores); the protocol is the same
SMALL = CaloChallengeConfig(low_hidden=128, max_epochs=20, patience=5, threads=1, max_showers=N)
LEVELS = ("low_level", "high_level")


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "ref": toy_showers(N, seed=1, grid=GRID),
        "same": toy_showers(N, seed=2, grid=GRID),  # an independent draw of the same model
        "wide": toy_showers(N, seed=3, grid=GRID, width_scale=1.3),  # widths 30 % larger
    }


def _null_sigma(n0: int, n1: int) -> float:
    """Standard deviation of the AUC of two samples of one distribution (Mann-Whitney)."""
    return float(np.sqrt((n0 + n1 + 1) / (12 * n0 * n1)))


def test_two_samples_of_one_distribution_are_at_chance(samples) -> None:
    """Under the null hypothesis the test-split AUC of any classifier trained on other showers
    is Mann-Whitney distributed: mean 0.5, sigma = 0.0183 for 500 + 500 test showers. The band
    |AUC - 0.5| < 0.05 is 2.7 sigma (a false failure has probability 0.7 % for a random seed;
    the seed is fixed, so the test is deterministic). JSD: within 3 of its errors of 0."""
    r = calochallenge_test(samples["ref"], samples["same"], SMALL, seed=0)
    sigma = _null_sigma(500, 500)
    for level in LEVELS:
        c = getattr(r, level)
        assert c.n_test == 1000 and c.n_train == 3000 and c.n_val == 1000
        assert c.auc_err == pytest.approx(sigma, rel=0.05)  # Hanley-McNeil at AUC 0.5
        assert abs(c.auc - 0.5) < 0.05, (level, c)
        assert abs(c.jsd) < 3 * c.jsd_err + 0.01, (level, c)
    assert r.low_level.n_inputs == 1 + GRID**3 and r.high_level.n_inputs == 2 + 8 * GRID


def test_visibly_different_showers_are_separated(samples) -> None:
    """Widths 30 % larger: AUC > 0.95 for both classifiers; measured 0.996-0.998 with errors of
    0.002, so the bound is many errors away."""
    r = calochallenge_test(samples["ref"], samples["wide"], SMALL, seed=0)
    for level in LEVELS:
        c = getattr(r, level)
        assert c.auc > 0.95 and c.auc - 3 * c.auc_err > 0.9, (level, c)
        assert c.jsd > 0.5, (level, c)


def test_energy_scale_shift_is_separated(samples) -> None:
    """30 % more energy in every cell: 6.7 times the 4.5 % per-shower spread of E_tot / E_inc of
    these showers. The high-level classifier sees it in log10(E_tot) beside log10(E_inc), the
    low-level one in the sum of its cells (measured: 0.994 and 0.999, errors 0.002)."""
    s, e = samples["same"]
    sf = s.reshape(N, -1).sum(axis=1) / e
    assert 0.03 < sf.std() / sf.mean() < 0.06
    r = calochallenge_test(samples["ref"], (s * 1.3, e), SMALL, seed=0)
    for level in LEVELS:
        c = getattr(r, level)
        assert c.auc > 0.95 and c.auc - 3 * c.auc_err > 0.9, (level, c)


def test_inputs_follow_the_calochallenge_definitions() -> None:
    s = np.zeros((1, 5, 5, 3), np.float32)
    s[0, 2, 2, 0] = 1.0  # the central cell of layer 0
    s[0, 1, 2, 1] = s[0, 3, 2, 1] = 0.5  # layer 1: two cells one apart from the centre along x
    e = np.array([100.0])
    low = low_level_inputs(s, e, scale=0.02)
    assert low.shape == (1, 1 + 75)
    assert low[0, 0] == pytest.approx(5.0)  # log10(1e5 MeV)
    assert low[0, 1:].sum() == pytest.approx(2.0 / (100 * 0.02))
    hl = high_level_inputs(s, e, scale=0.02, threshold=0.0)[0]
    z = 3
    e_layer, cx, cy, wx, wy = (hl[1 + k * z : 1 + (k + 1) * z] for k in range(5))
    e_tot, sparsity, rc, wr = hl[1 + 5 * z], hl[2 + 5 * z : 2 + 6 * z], hl[-2 * z : -z], hl[-z:]
    assert e_layer[:2] == pytest.approx(np.log10([1e3 / 0.02, 1e3 / 0.02]))
    assert e_layer[2] == pytest.approx(-8.0)  # an empty layer: log10(0 + 1e-8)
    assert e_tot == pytest.approx(np.log10(2e3 / 0.02))
    assert cx == pytest.approx([0, 0, 0]) and cy == pytest.approx([0, 0, 0])
    assert wx == pytest.approx([0, 1, 0]) and wy == pytest.approx([0, 0, 0])
    assert sparsity == pytest.approx([24 / 25, 23 / 25, 1.0])
    assert rc == pytest.approx([0, 1, 0]) and wr == pytest.approx([0, 0, 0])
    names = high_level_names(z)
    assert len(names) == len(hl) and len(set(names)) == len(names)
    col = dict(zip(names, hl))
    assert col["wx_L1"] == pytest.approx(1.0) and col["r_L1"] == pytest.approx(1.0)
    assert col["logEtot"] == pytest.approx(e_tot) and col["sparsity_L2"] == pytest.approx(1.0)


def test_row_subset_keeps_the_chosen_rows_across_chunks() -> None:
    rng = np.random.default_rng(0)
    s, e = rng.random((103, 2, 2, 2)).astype(np.float32), rng.uniform(100, 500, 103)
    keep = RowSubset(103, 40, seed=7)
    for i in range(0, 103, 16):
        keep.add(s[i : i + 16], e[i : i + 16])
    ks, ke = keep.arrays()
    assert len(ke) == 40 and np.array_equal(ks, s[keep.keep]) and np.array_equal(ke, e[keep.keep])
    assert len(RowSubset(10, 40, seed=7).keep) == 10


def test_same_seed_same_result(samples) -> None:
    cfg = CaloChallengeConfig(low_hidden=32, max_epochs=3, threads=1, max_showers=300)
    a = calochallenge_test(samples["ref"], samples["wide"], cfg, seed=5).to_dict()
    b = calochallenge_test(samples["ref"], samples["wide"], cfg, seed=5).to_dict()
    for level in LEVELS:
        for d in (a, b):
            d[level].pop("seconds")
        assert a[level] == b[level]


def test_bad_settings_are_one_line_errors(samples) -> None:
    with pytest.raises(CaloquantError, match="split must be three positive fractions"):
        CaloChallengeConfig(split=(0.5, 0.2, 0.2))
    with pytest.raises(CaloquantError, match="max_showers must be an integer from 50"):
        CaloChallengeConfig(max_showers=10)
    s, e = samples["ref"]
    with pytest.raises(CaloquantError, match="at least 50 showers per sample, got 20"):
        calochallenge_test((s[:20], e[:20]), (s, e), SMALL)
    with pytest.raises(CaloquantError, match="grids differ"):
        calochallenge_test((s, e), (s[:, :10], e), SMALL)
    with pytest.raises(CaloquantError, match="must be a CaloChallengeConfig, got dict"):
        validate((s, e), (s, e), classifier=True, calochallenge={"low_hidden": 8})


def test_validate_writes_both_classifiers() -> None:
    """``validate(classifier=True)`` adds ``classifier_calochallenge`` beside ``classifier``
    (tests/test_physics.py checks it through ``caloquant validate --classifier --json``)."""
    a, b = toy_showers(150, seed=21), toy_showers(150, seed=22)
    cfg = CaloChallengeConfig(low_hidden=32, max_epochs=3, threads=1, max_showers=100)
    r = validate(a, b, classifier=True, calochallenge=cfg, distances=False, detail=False)
    d = r.to_dict()
    cc = d["classifier_calochallenge"]
    assert d["classifier"]["auc"] is not None
    assert cc["n_per_sample"] == 100 and cc["config"]["max_showers"] == 100
    for level in LEVELS:
        assert {"auc", "auc_err", "jsd", "jsd_err"} <= set(cc[level])
        assert 0 <= cc[level]["auc"] <= 1 and cc[level]["auc_err"] > 0
        assert np.isfinite(cc[level]["jsd"])
        assert cc[level]["n_inputs"] == (1 + 25**3 if level == "low_level" else 2 + 8 * 25)
    json.dumps(d)  # JSON-ready
    plain = validate(a, b, distances=False, detail=False).to_dict()
    assert plain["classifier_calochallenge"] is None and plain["classifier"] is None
