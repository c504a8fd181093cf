"""Shower simulation: the Geant4 engine on small low-energy samples, the GFlash engine against
its formulas, the geometry file, and bad arguments.

Geant4 runs in worker processes; the whole module simulates a few hundred showers at 1-8 GeV
(about 0.01-0.07 CPU s each) plus the physics-table start-up of each worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import integrate

from caloquant.errors import CaloquantError
from caloquant.sim import SimConfig, draw_energies, load_geometry, parse_geometry, simulate
from caloquant.sim.compare import observables
from caloquant.sim.gflash import GFlash, cell_fractions
from tests.helpers import assert_one_line_error

POINTS = (1.0, 2.0, 4.0, 8.0)
PER_POINT = 40


def _geant4_ready() -> str | None:
    from caloquant.sim import helper_status

    st = helper_status()
    return None if st["ready"] else str(st.get("reason", "Geant4 engine unavailable"))


needs_geant4 = pytest.mark.skipif(
    _geant4_ready() is not None, reason=f"Geant4 engine: {_geant4_ready()}"
)


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {k: h5[k][:] for k in h5.keys()} | {"attrs": dict(h5.attrs)}


@pytest.fixture(scope="module")
def low_energy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """40 electrons at each of 1, 2, 4, 8 GeV, two workers."""
    out = tmp_path_factory.mktemp("g4") / "low.h5"
    e = np.repeat(POINTS, PER_POINT)
    simulate(out, e, SimConfig(seed=5), workers=2)
    return _read(out)


@needs_geant4
def test_energy_bookkeeping(low_energy: dict[str, np.ndarray]) -> None:
    """Silicon + absorber + energy carried out = beam energy, shower by shower."""
    d = low_energy
    total = d["e_silicon"] + d["e_silicon_outside_grid"] + d["e_absorber"] + d["e_escaped"]
    np.testing.assert_allclose(total / d["energy"], 1.0, atol=0.02)
    # the cells hold the silicon energy inside the grid (less the 1 keV cell cut)
    ecal = d["ECAL"].reshape(len(total), -1).sum(axis=1)
    assert np.all(ecal <= d["e_silicon"] * (1 + 1e-5))
    np.testing.assert_allclose(ecal / d["e_silicon"], 1.0, atol=0.01)
    assert d["attrs"]["engine"] == "geant4" and d["attrs"]["physics_list"] == "em-analytic"
    assert d["attrs"]["production_cut_mm"] == 0.7 and "geometry_hash" in d["attrs"]


def _per_point(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    obs = observables(d["ECAL"], d["energy"])
    e = d["energy"]
    out: dict[str, list[float]] = {k: [] for k in ("sf", "sf_err", "z", "z_err", "res", "res_err")}
    for p in POINTS:
        m = e == p
        n = m.sum()
        sf = d["e_silicon"][m] / p
        out["sf"].append(sf.mean())
        out["sf_err"].append(sf.std(ddof=1) / np.sqrt(n))
        out["z"].append(obs["z_mean"][m].mean())
        out["z_err"].append(obs["z_mean"][m].std(ddof=1) / np.sqrt(n))
        out["res"].append(sf.std(ddof=1) / sf.mean())
        out["res_err"].append(out["res"][-1] / np.sqrt(2 * (n - 1)))
    return {k: np.asarray(v) for k, v in out.items()}


@needs_geant4
def test_sampling_fraction_flat_depth_log_resolution(low_energy: dict[str, np.ndarray]) -> None:
    p = _per_point(low_energy)
    lne = np.log(POINTS)
    # sampling fraction: no trend with energy beyond statistics (3 sigma of the fitted slope)
    w = 1 / p["sf_err"] ** 2
    slope, cov = np.polyfit(lne, p["sf"], 1, w=np.sqrt(w), cov="unscaled")
    assert abs(slope[0]) < 3 * np.sqrt(cov[0, 0]) + 0.01 * p["sf"].mean(), (p["sf"], slope)
    assert 0.01 < p["sf"].mean() < 0.04
    # mean depth grows like ln E: linear in ln E with about 1 X0 per unit of ln E
    geom = load_geometry()
    x0_per_layer = sum(t / x0 for t, x0 in ((2.5, 3.504), (0.38, 93.7)))
    assert geom.sections[0].absorber_mm == 2.5
    coef, cov = np.polyfit(lne, p["z"], 1, w=1 / p["z_err"], cov="unscaled")
    expected = 1 / x0_per_layer
    assert 0.75 * expected < coef[0] < 1.25 * expected, (coef, expected)
    resid = (p["z"] - np.polyval(coef, lne)) / p["z_err"]
    assert np.all(np.abs(resid) < 4), resid
    # resolution ~ a / sqrt(E): log-log slope -0.5 within its error
    k, cov = np.polyfit(lne, np.log(p["res"]), 1, w=p["res"] / p["res_err"], cov="unscaled")
    assert abs(k[0] + 0.5) < 3 * np.sqrt(cov[0, 0]) + 0.05, (p["res"], k)


@needs_geant4
def test_transverse_centre_is_middle_cell(low_energy: dict[str, np.ndarray]) -> None:
    obs = observables(low_energy["ECAL"], low_energy["energy"])
    v = obs["y_mean"]
    assert abs(v.mean() - 12.0) < 3 * v.std(ddof=1) / np.sqrt(len(v)) + 1e-3
    s = low_energy["ECAL"].sum(axis=(0, 3))
    cx = (s.sum(axis=1) * np.arange(25)).sum() / s.sum()
    assert abs(cx - 12.0) < 0.05
    assert np.unravel_index(s.argmax(), s.shape) == (12, 12)


@needs_geant4
def test_same_seed_same_file_whatever_the_workers(tmp_path: Path) -> None:
    e = np.repeat([2.0, 5.0], 4)
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    simulate(a, e, SimConfig(seed=9, chunk_size=2), workers=1)
    simulate(b, e, SimConfig(seed=9, chunk_size=2), workers=2)
    simulate(c, e, SimConfig(seed=10, chunk_size=2), workers=2)
    da, db, dc = _read(a), _read(b), _read(c)
    np.testing.assert_array_equal(da["ECAL"], db["ECAL"])
    np.testing.assert_array_equal(da["e_absorber"], db["e_absorber"])
    assert not np.array_equal(da["ECAL"], dc["ECAL"])
    assert not list(tmp_path.glob(".*chunks*")), "chunk folder left behind"


@needs_geant4
def test_interrupted_run_leaves_no_file_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    e = np.full(6, 3.0)
    calls = []

    def stop_after_first(done: int, total: int) -> None:
        calls.append(done)
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(out, e, SimConfig(seed=4, chunk_size=2), workers=1, progress=stop_after_first)
    assert not out.exists()
    assert not list(tmp_path.glob(".r.h5.*.part"))
    res = simulate(out, e, SimConfig(seed=4, chunk_size=2), workers=1)
    assert res["reused_chunks"] >= 1
    ref = tmp_path / "ref.h5"
    simulate(ref, e, SimConfig(seed=4, chunk_size=2), workers=1)
    np.testing.assert_array_equal(_read(out)["ECAL"], _read(ref)["ECAL"])


# ---- GFlash ---------------------------------------------------------------------------
def test_pad_shares_match_numerical_integration() -> None:
    r = 1.7
    shares = cell_fractions(np.array([r]), 5, 5)[0]

    def dens(y: float, x: float) -> float:
        return r * r / (np.pi * (x * x + y * y + r * r) ** 2)

    for i, j in ((2, 2), (3, 2), (4, 0)):
        num = integrate.dblquad(dens, i - 2.5, i - 1.5, j - 2.5, j - 1.5)[0]
        assert shares[i, j] == pytest.approx(num, rel=1e-7)
    big = cell_fractions(np.array([1e-3]), 25, 25)[0]
    assert big.sum() == pytest.approx(1.0, abs=1e-5) and big[12, 12] > 0.99


def test_gflash_longitudinal_profile_follows_the_gamma_formula() -> None:
    geom = load_geometry()
    gf = GFlash(geom, {"sigma_scale": 1e-6, "stochastic": 0.05, "sf_slope": 0.0})
    e = np.full(3000, 50.0)
    rng = np.random.default_rng(3)
    T, a = gf.longitudinal(e[:1], np.random.default_rng(0))
    # formula: fraction in layer k = integral of b (b t)^(a-1) e^(-b t) / Gamma(a) over the layer
    from scipy.special import gamma as G

    b = (a[0] - 1) / T[0]
    f = [
        integrate.quad(lambda t: b * (b * t) ** (a[0] - 1) * np.exp(-b * t) / G(a[0]), lo, hi)[0]
        for lo, hi in zip(gf.t_edges[:-1], gf.t_edges[1:], strict=True)
    ]
    lf, beyond = gf.layer_fractions(T, a)
    np.testing.assert_allclose(lf[0], f, rtol=1e-6, atol=1e-9)
    assert beyond[0] == pytest.approx(1 - sum(f), abs=1e-6)
    cells, sums = gf.simulate(e, rng)
    prof = cells.sum(axis=(1, 2)).astype(np.float64)  # (n, Z)
    mean, err = prof.mean(axis=0), prof.std(axis=0, ddof=1) / np.sqrt(len(e))
    contained = gf.mean_showers(e[:1], T, a)[0].sum(axis=1)  # expected visible energy per layer
    pull = (mean - contained) / np.maximum(err, 1e-12)
    assert np.all(np.abs(pull[mean > 1e-4 * mean.max()]) < 5), pull
    # bookkeeping of the engine
    total = sums[:, 0] + sums[:, 2] + sums[:, 3]
    np.testing.assert_allclose(total, e, rtol=1e-6)


def test_gflash_cli_end_to_end(tmp_path: Path, cli) -> None:
    out = tmp_path / "g.h5"
    res = cli(
        "simulate",
        "--engine",
        "gflash",
        "--n",
        "300",
        "--energy-range",
        "100:500",
        "--seed",
        "2",
        "-o",
        out,
    )
    assert res.code == 0, res.err
    d = _read(out)
    assert d["ECAL"].shape == (300, 25, 25, 25) and d["attrs"]["engine"] == "gflash"
    sf = d["ECAL"].sum(axis=(1, 2, 3)) / d["energy"]
    assert 0.015 < sf.mean() < 0.03
    res2 = cli(
        "simulate",
        "--engine",
        "gflash",
        "--n",
        "300",
        "--energy-range",
        "100:500",
        "--seed",
        "2",
        "-o",
        tmp_path / "g2.h5",
        "--workers",
        "2",
    )
    assert res2.code == 0, res2.err
    np.testing.assert_array_equal(d["ECAL"], _read(tmp_path / "g2.h5")["ECAL"])


# ---- geometry and bad arguments -------------------------------------------------------
def test_geometry_file_parsing(tmp_path: Path) -> None:
    g = load_geometry()
    assert g.grid == (25, 25, 25) and len(g.hash) == 16
    f = tmp_path / "g.toml"
    f.write_text(
        "cell_size_mm = 5.1\ncells_x = 25\ncells_y = 25\n"
        '[[sections]]\nlayers = 17\nabsorber = "G4_W"\nabsorber_mm = 2.4\nactive_mm = 0.5\n'
        '[[sections]]\nlayers = 8\nabsorber = "G4_W"\nabsorber_mm = 4.8\nactive_mm = 0.5\n'
        '[calibration]\nnote = "x"\n'
    )
    clic = load_geometry(f)
    assert clic.cells_z == 25 and clic.hash != g.hash
    # the calibration record is not part of the hash
    f2 = tmp_path / "g2.toml"
    f2.write_text(f.read_text().replace('note = "x"', 'note = "y"'))
    assert load_geometry(f2).hash == clic.hash
    sec = {"layers": 2, "absorber": "G4_W", "absorber_mm": 3.0, "active_mm": 0.5}
    for bad, needle in (
        ({"cells_x": 25}, "sections"),
        ({"cells_x": 5, "cells_y": 5, "sections": [sec]}, "missing 'cell_size_mm'"),
        ({"cell_size_mm": -1, "cells_x": 1, "cells_y": 1, "sections": [sec]}, "> 0"),
        (
            {"cell_size_mm": 1, "cells_x": 1, "cells_y": 1, "sections": [sec | {"absorber": "W"}]},
            "NIST",
        ),
        (
            {"cell_size_mm": 1, "cells_x": 1, "cells_y": 1, "sections": [sec | {"foo": 1}]},
            "unknown",
        ),
    ):
        with pytest.raises(CaloquantError, match=needle):
            parse_geometry(bad)


def test_energy_arguments() -> None:
    with pytest.raises(CaloquantError, match="10 TeV"):
        draw_energies(3, 0, energy=2e4)
    with pytest.raises(CaloquantError, match="positive"):
        draw_energies(0, 0, energy=10.0)


def test_bad_arguments_give_one_line_errors(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "x.h5"
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("cells_x = [\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (("--n", "5", "--energy", "0", "-o", out), "energy"),
        (("--n", "5", "--energy", "-3", "-o", out), "energy"),
        (("--n", "5", "--energy", "20000", "-o", out), "10 TeV"),
        (("--n", "0", "--energy", "10", "-o", out), "positive"),
        (("--n", "5", "--energy", "10", "-o", blocker / "x.h5"), "output"),
        (("--n", "5", "--energy", "10", "--geometry", bad_toml, "-o", out), "malformed geometry"),
        (
            ("--n", "5", "--energy", "10", "--geometry", tmp_path / "none.toml", "-o", out),
            "not found",
        ),
        (("--n", "5", "--energy", "10", "--particle", "mu-", "-o", out), "particle"),
        (("--n", "5", "--energy", "10", "--engine", "fluka", "-o", out), "engine"),
    ]
    for args, needle in cases:
        assert_one_line_error(cli("simulate", *args), needle)
        assert not out.exists()
    for var in ("G4LEDATA",):
        monkeypatch.delenv(var, raising=False)
    assert_one_line_error(
        cli("simulate", "--n", "5", "--energy", "10", "--physics", "standard", "-o", out),
        "data sets",
    )
    assert not out.exists()


def test_missing_compiler_or_headers_is_one_line(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caloquant.sim.helper import pybind_version

    if pybind_version() is None:
        pytest.skip("geant4-pybind not installed")
    out = tmp_path / "x.h5"
    monkeypatch.setenv("CALOQUANT_CACHE", str(tmp_path / "cache"))  # no helper built yet
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    res = cli("simulate", "--n", "2", "--energy", "5", "-o", out)
    if "headers" not in res.err:
        assert_one_line_error(res, "compiler", "install")
    assert not out.exists()
    monkeypatch.delenv("CXX")
    monkeypatch.delenv("CALOQUANT_G4_INCLUDE", raising=False)
    monkeypatch.setenv("CALOQUANT_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join(
            p
            for p in os.environ["PATH"].split(os.pathsep)
            if not (Path(p) / "geant4-config").exists()
        ),
    )
    assert_one_line_error(
        cli("simulate", "--n", "2", "--energy", "5", "-o", out), "headers", "CALOQUANT_G4_INCLUDE"
    )
    assert not out.exists()


# ---- timing for bench, reference sets ------------------------------------------------
@needs_geant4
def test_time_engine_reports_seconds_per_shower_per_energy() -> None:
    from caloquant.bench.montecarlo import engine_speedups
    from caloquant.sim import flat_average, time_engine

    r = time_engine("geant4", energies=(1.0, 4.0), showers_per_point=2, budget_s=120)
    assert r["complete"] and r["measured_here"]
    for e in ("1", "4"):
        v = r["per_energy"][e]
        assert (
            v["n"] == 2 and v["cpu_s_per_shower"]["mean"] > 0 and v["wall_s_per_shower"]["sem"] >= 0
        )
    # 4 GeV showers cost more than 1 GeV ones (CPU time is robust to other load)
    assert (
        r["per_energy"]["4"]["cpu_s_per_shower"]["mean"]
        > r["per_energy"]["1"]["cpu_s_per_shower"]["mean"]
    )
    r["flat_mean_s_per_shower"], r["flat_mean_s_per_shower_err"] = flat_average(
        r["per_energy"], 1, 4
    )
    sp = engine_speedups(r, showers_per_s=100.0)
    assert sp["speedup_vs_mc_engine"] == pytest.approx(
        100.0 * r["flat_mean_s_per_shower"], rel=1e-2
    )
    assert set(sp["speedup_vs_mc_engine_per_energy"]) == {"1", "4"}


def test_flat_average_is_the_trapezoid_mean() -> None:
    from caloquant.sim import flat_average

    per = {
        str(e): {"n": 3, "wall_s_per_shower": {"mean": t, "sem": 0.1}}
        for e, t in ((100, 1.0), (300, 2.0), (500, 3.0))
    }
    m, err = flat_average(per)
    assert m == pytest.approx(2.0) and err == pytest.approx(0.1 * np.sqrt(0.25**2 * 2 + 0.5**2))


def test_reference_sets_never_share_a_seed() -> None:
    """Each shard k of a set is simulated with seed + k: the sets' seed ranges stay disjoint
    (sets have grown: train from 50 to 150 shards), so no shower is in two sets; a set of
    fixed energies puts one energy in each shard."""
    from caloquant.sim.reference import SETS

    ranges = sorted((s.seed, s.seed + s.shards, name) for name, s in SETS.items())
    for (_, end, a), (start, _, b) in zip(ranges, ranges[1:]):
        assert end <= start, f"sets {a} and {b} share seeds"
    fixed = SETS["fixed"]
    assert [fixed.energies(k)[0] for k in range(fixed.shards)] == [100, 300, 500] * 2
    assert len(set(fixed.energies(4))) == 1


def test_reference_set_falls_back_to_gflash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caloquant.sim.helper as helper
    from caloquant.sim import reference_set

    monkeypatch.setattr(
        helper, "helper_status", lambda: {"ready": False, "reason": "no headers (test)"}
    )
    said: list[str] = []
    r = reference_set("heldout", data_dir=tmp_path, max_shards=1, log=said.append)
    assert r["engine"] == "gflash" and r["fallback"] and len(r["files"]) == 1
    assert any("GFlash" in m for m in said)
    d = _read(r["files"][0])
    assert d["attrs"]["engine"] == "gflash" and d["ECAL"].shape[0] == 100
    assert (tmp_path / "heldout-gflash" / "manifest.json").exists()
    # the set's folder read back as arrays, with each shard's seed
    from caloquant.sim import read_reference_set

    s, e, seeds = read_reference_set(tmp_path / "heldout-gflash")
    np.testing.assert_array_equal(s, d["ECAL"])
    np.testing.assert_array_equal(e, d["energy"])
    assert seeds == [int(d["attrs"]["seed"])]
    s30, e30, _ = read_reference_set(tmp_path / "heldout-gflash", 30)  # the first 30 only
    np.testing.assert_array_equal(s30, d["ECAL"][:30])
    assert e30.shape == (30,)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(CaloquantError, match="showers to read"):
            read_reference_set(tmp_path / "heldout-gflash", bad)  # type: ignore[arg-type]
    with pytest.raises(CaloquantError, match="no shard_"):
        read_reference_set(tmp_path)


def test_packed_reference_round_trip(tmp_path: Path) -> None:
    from caloquant.data import read_showers
    from caloquant.sim.reference import load_packed, pack_reference

    f = tmp_path / "s.h5"
    simulate(f, np.array([100.0, 300.0, 500.0]), SimConfig(engine="gflash", seed=1))
    info = pack_reference([f], tmp_path / "p.npz")
    s, e, meta = load_packed(tmp_path / "p.npz")
    s0, e0 = read_showers(f)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(e, e0)
    assert meta["engine"] == "gflash" and meta["sums"].shape == (3, 4) and info["showers"] == 3


def test_bench_mc_engine_fills_speedups(random_checkpoint: Path, cli, tmp_path: Path) -> None:
    """`bench --mc` times caloquant's own Monte Carlo in the same run (GFlash here: fast)."""
    import json

    res = cli(
        "bench",
        "--model",
        random_checkpoint,
        "--threads",
        "1",
        "--streams",
        "1",
        "--batch",
        "2",
        "--duration",
        "0.2",
        "--rounds",
        "1",
        "--no-profile",
        "--no-ceilings",
        "--mc",
        "gflash",
        "--mc-per-point",
        "1",
        "--json",
        tmp_path / "b.json",
    )
    assert res.code == 0, res.err
    rep = json.loads((tmp_path / "b.json").read_text())
    eng = rep["monte_carlo"]["engine"]
    assert eng["engine"] == "gflash" and set(eng["per_energy"]) == {
        "100",
        "200",
        "300",
        "400",
        "500",
    }
    r = rep["results"][0]
    assert r["speedup_vs_mc_engine"] == pytest.approx(
        eng["flat_mean_s_per_shower"] * r["showers_per_s"], rel=0.02
    )
    assert set(r["speedup_vs_mc_engine_per_energy"]) == set(eng["per_energy"])
    assert r["speedup_vs_geant4_literature"] > 0  # the quoted figure stays alongside
    assert_one_line_error(cli("bench", "--model", random_checkpoint, "--mc", "fluka"), "--mc")
