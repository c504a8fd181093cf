"""Physics validation: known answers on small samples, with the statistical error accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from caloquant.data import write_showers
from caloquant.errors import CaloquantError
from caloquant.physics import (
    CaloChallengeConfig,
    parse_bins,
    separation_power,
    shower_features,
    validate,
)
from tests.helpers import assert_one_line_error, toy_showers

AX = ("x", "y", "z")
# the CaloChallenge protocol runs beside the feature classifier; tests/test_calochallenge.py
# checks it, here a small, quick version keeps these tests fast
QUICK_CC = CaloChallengeConfig(low_hidden=32, max_epochs=3, max_showers=300, threads=1)


@pytest.fixture(scope="module")
def two_samples() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return toy_showers(1500, seed=11), toy_showers(1500, seed=12)


def test_features_on_a_single_cell() -> None:
    s = np.zeros((1, 25, 25, 25), np.float32)
    s[0, 12, 10, 7] = 2.0
    f = shower_features(s, np.array([100.0]))
    assert f["mean_x"][0] == 12 and f["mean_y"][0] == 10 and f["mean_z"][0] == 7
    assert f["std_x"][0] == 0 and f["sf"][0] == pytest.approx(0.02)
    assert f["n_hits"][0] == 1 and (f["max_x"][0], f["max_y"][0], f["max_z"][0]) == (12, 10, 7)
    s[0, 14, 10, 7] = 2.0  # two equal cells two apart along x: mean 13, std 1
    f = shower_features(s, np.array([100.0]))
    assert f["mean_x"][0] == pytest.approx(13) and f["std_x"][0] == pytest.approx(1.0)


def test_independent_samples_of_one_source_agree(two_samples) -> None:
    a, b = two_samples
    r = validate(a, b, classifier=True, seed=1, calochallenge=QUICK_CC).to_dict()
    assert [x["label"] for x in r["bins"]][:2] == ["all", "100-150"] and len(r["bins"]) == 9
    pulls = []
    for row in r["bins"]:
        pulls.append(row["sampling_fraction"]["pull"])
        pulls += [row["moments"][ax][k]["pull"] for ax in AX for k in ("mean", "std")]
        # the projection MSE of two samples of one source is at the statistical noise level
        assert row["projection_mse"] < 2.5 * row["projection_mse_noise"], row["label"]
    # 63 pulls of (correlated) unit-variance estimates: none should exceed 4 sigma
    assert np.max(np.abs(pulls)) < 4.0, np.max(np.abs(pulls))
    assert np.std(pulls) < 1.6  # the errors are not underestimated
    for k, sp in r["bins"][0]["separation_power"].items():
        assert sp["value"] < 4 * sp["floor"] + 0.005, k
    c = r["classifier"]
    assert abs(c["auc"] - 0.5) < 3 * c["auc_err"] + 0.02, c
    assert abs(r["kpd"]["value"]) < 4 * r["kpd"]["err"] + 1e-4


def test_metrics_detect_a_real_difference(two_samples) -> None:
    """A broader transverse spread and 4 % more energy must be flagged (the tests can fail)."""
    a, _ = two_samples
    s, e = a
    # broaden: mix each shower with copies shifted by one cell along x and y
    broad = 0.6 * s + 0.1 * (
        np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2)
    )
    other = toy_showers(1500, seed=13)
    r = validate(other, (broad * 1.04, e), classifier=True, seed=1, calochallenge=QUICK_CC)
    r = r.to_dict()
    allb = r["bins"][0]
    assert allb["sampling_fraction"]["pull"] > 5
    assert allb["moments"]["y"]["std"]["pull"] > 5
    assert allb["projection_mse"] > 4 * allb["projection_mse_noise"]
    assert r["classifier"]["auc"] > 0.6


def test_shift_by_one_cell_along_z_moves_z_mean_by_one(two_samples) -> None:
    s, e = two_samples[0]
    assert s[..., -1].sum() < 1e-4 * s.sum()  # nothing falls off the grid
    shifted = np.zeros_like(s)
    shifted[..., 1:] = s[..., :-1]
    r = validate((s, e), (shifted, e), paired=True, distances=False, detail=False).to_dict()
    for row in r["bins"]:
        mz = row["moments"]["z"]["mean"]
        assert mz["shift"] == pytest.approx(1.00, abs=0.005), row["label"]
        assert row["moments"]["z"]["std"]["shift"] == pytest.approx(0.0, abs=0.005)
        assert row["moments"]["x"]["mean"]["shift"] == pytest.approx(0.0, abs=1e-6)
        assert row["sampling_fraction"]["ratio"] == pytest.approx(1.0, abs=1e-4)


def test_scale_by_one_percent_moves_sampling_fraction_ratio(two_samples) -> None:
    s, e = two_samples[0]
    r = validate(
        (s, e), (s * np.float32(1.01), e), paired=True, distances=False, detail=False
    ).to_dict()
    for row in r["bins"]:
        sf = row["sampling_fraction"]
        assert sf["ratio"] == pytest.approx(1.01, abs=1e-5), row["label"]
        assert sf["ratio_err"] < 1e-4  # paired: the sample noise cancels
        for ax in AX:
            assert row["moments"][ax]["mean"]["shift"] == pytest.approx(0.0, abs=1e-5)
    # unpaired, the same comparison carries the full statistical error
    r2 = validate((s, e), (s * np.float32(1.01), e), distances=False, detail=False).to_dict()
    assert r2["bins"][0]["sampling_fraction"]["ratio"] == pytest.approx(1.01, abs=1e-5)
    assert (
        r2["bins"][0]["sampling_fraction"]["ratio_err"]
        > 10 * r["bins"][0]["sampling_fraction"]["ratio_err"]
    )


def test_paired_identical_samples_give_zero(two_samples) -> None:
    s, e = two_samples[0]
    r = validate((s, e), (s.copy(), e), paired=True).to_dict()
    for row in r["bins"]:
        assert row["pixelwise"]["mean"] == 0.0 and row["pixelwise"]["std"] == 0.0
        assert row["projection_mse"] == 0.0
        assert row["sampling_fraction"]["ratio"] == 1.0


def test_pixelwise_matches_paper_definition(two_samples) -> None:
    s, e = two_samples[0]
    rng = np.random.default_rng(0)
    noisy = s * rng.uniform(0.9, 1.1, s.shape).astype(np.float32)
    r = validate((s, e), (noisy, e), paired=True, distances=False, detail=False).to_dict()
    per_shower = np.abs(s.astype(np.float64) - noisy).reshape(len(s), -1).sum(axis=1)
    assert r["bins"][0]["pixelwise"]["mean"] == pytest.approx(per_shower.mean(), rel=1e-9)
    assert r["bins"][0]["pixelwise"]["std"] == pytest.approx(per_shower.std(ddof=1), rel=1e-9)


def test_bins_specs() -> None:
    e = np.linspace(100, 500, 101)
    assert [b.label for b in parse_bins("auto", e)][1:3] == ["100-150", "150-200"]
    assert parse_bins("edges:100,300,500", e)[2].mask(np.array([500.0]))[0]  # last edge inclusive
    pts = parse_bins("auto", np.repeat([100.0, 200.0], 5))
    assert [b.label for b in pts] == ["all", "100+-5", "200+-5"]
    assert [b.label for b in parse_bins("points:100,200/2", e)] == ["all", "100+-2", "200+-2"]
    assert len(parse_bins("width:100", e)) == 5
    with pytest.raises(CaloquantError, match="unknown --bins"):
        parse_bins("bogus", e)
    with pytest.raises(CaloquantError, match="malformed"):
        parse_bins("edges:a,b", e)


def test_separation_power_limits() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert separation_power(x, x) == 0.0
    assert separation_power(x, x + 100) == pytest.approx(1.0)


def test_validate_cli_json_and_plots(two_samples, tmp_path: Path, cli) -> None:
    a, b = two_samples
    fa = write_showers(tmp_path / "a.h5", a[0][:400], a[1][:400])
    fb = write_showers(tmp_path / "b.h5", b[0][:400], b[1][:400], fmt="calochallenge")
    res = cli(
        "validate",
        fa,
        fb,
        "--classifier",
        "--json",
        tmp_path / "v.json",
        "--plots",
        tmp_path / "plots",
        "--bins",
        "edges:100,300,500",
        "--threads",
        "1",
    )
    assert res.code == 0, res.err
    d = json.loads((tmp_path / "v.json").read_text())
    assert (
        abs(d["classifier_auc"] - 0.5) < 0.15
    )  # two samples of one source: no better than chance (400 showers each)
    for level in ("low_level", "high_level"):  # the CaloChallenge protocol beside it
        cc = d["classifier_calochallenge"][level]
        assert {"auc", "auc_err", "jsd"} <= set(cc) and cc["n_test"] == 160
    assert "CaloChallenge low-level AUC" in res.out
    for row in d["bins"]:
        for k in ("label", "lo_gev", "hi_gev", "n_ref", "n_cand", "projection_mse"):
            assert k in row
        assert set(row["sampling_fraction"]) >= {"ref", "cand"}
        for ax in AX:
            assert set(row["moments"][ax]["mean"]) >= {"ref", "cand"} and set(
                row["moments"][ax]["std"]
            ) >= {"ref", "cand"}
    assert [r["label"] for r in d["bins"]] == ["all", "100-300", "300-500"]
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    for name in (
        "shape_z_log.png",
        "shape_y_linear.png",
        "sampling_fraction.png",
        "energy_resolution.png",
        "projections.png",
        "classifier_roc.png",
        "cell_spectrum.png",
    ):
        assert name in pngs
    assert all((tmp_path / "plots" / p).stat().st_size > 10_000 for p in pngs)
    res = cli("validate", fa, fb)
    assert res.code == 0 and "Validation" in res.out


def test_validate_bad_inputs(two_samples, tmp_path: Path, cli) -> None:
    s, e = two_samples[0]
    fa = write_showers(tmp_path / "a.h5", s[:100], e[:100])
    fb = write_showers(tmp_path / "b.h5", s[:80], e[:80])
    small = write_showers(tmp_path / "small.h5", s[:100, :20, :20, :20], e[:100])
    shuffled = write_showers(tmp_path / "shuf.h5", s[:100][::-1], e[:100][::-1])
    assert_one_line_error(cli("validate", fa, small), "grids differ")
    assert_one_line_error(cli("validate", fa, fb, "--paired"), "equal counts")
    assert_one_line_error(cli("validate", fa, shuffled, "--paired"), "differ in energy")
    assert_one_line_error(
        cli("validate", fa, fb, "--bins", "points:1000"), "bin 1000+-5", "holds 0"
    )
    assert_one_line_error(cli("validate", fa, tmp_path / "missing.h5"), "not found")
    assert_one_line_error(cli("validate", fa, fb, "--bins", "edges:300"), "bin edges")
    out = tmp_path / "v.json"
    assert_one_line_error(cli("validate", fa, small, "--json", out), "grids differ")
    assert not out.exists()
