"""Epoch selection (caloquant.train.selection, train.epoch_metrics): the selection metric sees
the energy scale, the resolution and the shapes; too little validation data makes the selection
fall back instead of stopping the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from caloquant.data import write_showers
from caloquant.train.epoch_metrics import (
    AUTHORS_POINTS_GEV,
    HALF_WIDTH_GEV,
    ZERO_THRESHOLD_GEV,
    authors_metric,
    bin_index,
    merge_bins,
    selection_metric,
    summarise,
)
from caloquant.train.selection import (
    BY_AUTHORS,
    BY_LAST,
    BY_SELECTION,
    MIN_PER_BIN,
    choose,
    plan_selection,
    score,
    selection_rule,
)
from tests.helpers import toy_showers

POINTS = np.repeat([110.0, 150.0, 190.0], 150)  # the authors' points, 150 showers each
FLAT = np.random.default_rng(0).uniform(100.0, 500.0, 480)  # 50 GeV bins of 44-71 showers


def showers(
    e: np.ndarray,
    seed: int,
    scale: float = 1.0,
    spread: float = 0.05,
    width: float = 1.0,
    cut: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic showers: Ecal = 0.02 Ep scale (1 + spread N(0, 1)) per shower; a gamma
    longitudinal profile whose depth grows with ln Ep; a Gaussian core with an exponential halo
    transversely, width x (1 + 0.04 layer) with 5 % per-shower jitter; centres jittered by 0.15
    cell. ``cut``: cells below it (GeV) are zeroed (fewer hits, the energy nearly unchanged)."""
    rng = np.random.default_rng(seed)
    n, grid = e.size, 25
    t = np.arange(grid) + 0.5
    a = 4.0 + 0.3 * np.log(e / 100.0) + 0.3 * rng.standard_normal(n)
    long = t[None, :] ** (a[:, None] - 1) * np.exp(-0.6 * t[None, :])
    long /= long.sum(axis=1, keepdims=True)
    c = np.arange(grid) - (grid - 1) / 2
    w = width * (1.0 + 0.04 * t)[None, :] * (1 + 0.05 * rng.standard_normal((n, 1)))

    def lateral(centre: np.ndarray) -> np.ndarray:  # (n, cells, layers), each layer sums to 1
        d = (c[None, :, None] - centre[:, None, None]) / w[:, None, :]
        f = np.exp(-0.5 * d**2) + 0.05 * np.exp(-np.abs(d) / 2.0)
        return f / f.sum(axis=1, keepdims=True)

    fx, fy = lateral(0.15 * rng.standard_normal(n)), lateral(0.15 * rng.standard_normal(n))
    ecal = 0.02 * e * scale * (1 + spread * rng.standard_normal(n))
    fz = (long * ecal[:, None]).astype(np.float32)
    s = (
        fx.astype(np.float32)[:, :, None, :]
        * (fy.astype(np.float32) * fz[:, None, :])[:, None, :, :]
    )
    return (np.where(s < cut, np.float32(0), s) if cut > 0 else s), e


VARIANTS = {
    "true": {},
    "scale 1.03": {"scale": 1.03},
    "scale 1.10": {"scale": 1.10},
    "spread x1.5": {"spread": 0.075},
    "width x1.1": {"width": 1.1},
    "hits x0.8": {"cut": 3e-6},  # hits 0.75-0.8x, Ecal -0.1 %
}


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, list[dict]]]:
    """Per energy set and variant, three independent pairs: a reference and a candidate drawn
    with other seeds; the selection metric of each, and the authors' for true and 3 %."""
    out: dict[str, dict[str, list[dict]]] = {}
    for name, e in (("points", POINTS), ("flat", FLAT)):
        plan = plan_selection(e)
        refs = [showers(e, 100 + i) for i in range(3)]
        ref_sums = [summarise(*r) for r in refs]
        out[name] = {}
        for j, (v, kw) in enumerate(VARIANTS.items()):
            out[name][v] = []
            for i in range(3):
                cand = showers(e, 10 * j + i, **kw)  # type: ignore[arg-type]
                res = selection_metric(ref_sums[i], summarise(*cand), plan.edges, plan.labels)
                if v in ("true", "scale 1.03"):
                    res |= authors_metric(refs[i], cand, list(plan.authors_points))
                out[name][v].append(res)
    return out


def values(scores: dict, energies: str, variant: str, key: str) -> list[float]:
    return [r[key] for r in scores[energies][variant]]


def test_the_constants_are_the_authors() -> None:
    from caloquant.physics import (
        AUTHORS_ZERO_THRESHOLD_GEV,
        DEFAULT_METRIC_HALF_WIDTH_GEV,
        DEFAULT_METRIC_POINTS_GEV,
    )

    assert AUTHORS_POINTS_GEV == tuple(DEFAULT_METRIC_POINTS_GEV)
    assert HALF_WIDTH_GEV == DEFAULT_METRIC_HALF_WIDTH_GEV
    assert ZERO_THRESHOLD_GEV == AUTHORS_ZERO_THRESHOLD_GEV


def test_hits_and_moments_are_counted_as_the_physics_package_counts_them() -> None:
    """One definition of a hit cell (above 1 keV) in the selection metric and in validation."""
    from caloquant.physics import shower_features

    s, e = toy_showers(40, seed=3)
    s = s.astype(np.float32)
    s[:, 12, 12, :4] = np.float32(ZERO_THRESHOLD_GEV)  # exactly at the threshold: not hits
    s[:, 0, 0, :3] = np.float32(0.5 * ZERO_THRESHOLD_GEV)  # below: zeroed, not hits
    got = summarise(s, e)
    f = shower_features(np.where(s < ZERO_THRESHOLD_GEV, 0, s), e, threshold=ZERO_THRESHOLD_GEV)
    np.testing.assert_array_equal(got["hits"], f["n_hits"])
    np.testing.assert_allclose(got["width_x"], f["std_x"], rtol=1e-6)


@pytest.mark.parametrize("energies", ["points", "flat"])
@pytest.mark.parametrize(
    "variant", ["scale 1.03", "scale 1.10", "spread x1.5", "width x1.1", "hits x0.8"]
)
def test_the_selection_metric_ranks_a_wrong_sample_behind_a_true_one(
    scores: dict, energies: str, variant: str
) -> None:
    """Every wrong draw scores worse than every independent true draw. Measured (three pairs;
    at the authors' points, 150 showers each / flat 100-500 GeV, 8 bins of 44-71 showers):
    selection metric, true 1.6-3.4 / 2.1-2.4 (about 1 per term: the statistical floor);
    scale 1.03: 13-19 / 6.4-9.6; scale 1.10: 141-194 / 61-77; resolution x1.5: 20-41 / 12-21;
    width x1.1: 75-95 / 35-42; hits x0.77 / x0.79: 151-170 / 64-70 (both in the shape term; the
    energy term stays at the floor).
    The authors' metric on the same draws: true 0.073-0.077 / 0.099-0.163; scale 1.03
    0.094-0.119 / 0.155-0.177; resolution x1.5 0.090-0.101 / 0.126-0.226. At the points it
    ranks the 3 % sample behind too (its profile term, GeV per slice, carries the scale; its
    sampling-fraction term moves only 0.056 -> 0.063, the 5 % per-shower spread dominating it);
    on the flat set it does not: a true draw (0.163) scores worse than a 3 % draw (0.155) and a
    resolution x1.5 draw (0.126)."""
    true = values(scores, energies, "true", "selection_metric")
    wrong = values(scores, energies, variant, "selection_metric")
    assert max(true) < min(wrong), (true, wrong)
    assert max(true) < 5.0  # a true sample sits near the floor of 2 (1 per term)
    # the term that should see it is the one that does
    term = "shape" if variant.startswith(("width", "hits")) else "energy"
    assert min(values(scores, energies, variant, term)) > 2 * max(
        values(scores, energies, "true", term)
    )


def test_the_authors_metric_is_reported_beside_it(scores: dict) -> None:
    res = score(showers(POINTS, 1), showers(POINTS, 2, scale=1.03))
    assert res["authors_points_gev"] == list(AUTHORS_POINTS_GEV)
    assert 0 < res["authors_metric"] < 1 and res["selection_metric"] > 5
    assert [b["bin"] for b in res["bins"]] == ["110 GeV", "150 GeV", "190 GeV"]
    assert all(1.01 < b["response_ratio"] < 1.05 for b in res["bins"])
    # the authors' metric does not rank every 3 % draw behind every true one on the flat set
    # (test above); the selection metric does
    true = values(scores, "flat", "true", "authors_metric")
    assert max(true) > min(values(scores, "flat", "scale 1.03", "authors_metric"))


def test_a_larger_set_keeps_the_floor_and_scales_an_offset() -> None:
    """A true draw stays near the floor at any size; a fixed offset grows with the showers
    per bin (module docstring: chi2 per degree of freedom)."""
    res = {}
    for n in (150, 600):
        e = np.repeat([110.0, 150.0, 190.0], n)
        ref = showers(e, 1)
        plan = plan_selection(e)
        rs = summarise(*ref)
        res[n] = [
            selection_metric(rs, summarise(*showers(e, 2, **kw)), plan.edges, plan.labels)["energy"]
            for kw in ({}, {"scale": 1.03})
        ]
    assert res[150][0] < 4 and res[600][0] < 4
    assert 2.5 < res[600][1] / res[150][1] < 6  # ~4 x the showers, ~4 x the pull^2


def test_bins_and_their_fallbacks() -> None:
    plan = plan_selection(FLAT)
    assert plan.rule == BY_SELECTION and plan.labels[0] == "100-150 GeV" and len(plan.counts) == 8
    assert plan.notes == () and plan.authors_points  # enough for both, nothing to say
    assert bin_index(np.array([100.0, 149.99, 150.0, 500.0, 501.0]), plan.edges).tolist() == [
        0,
        0,
        1,
        7,
        -1,
    ]
    assert merge_bins([0, 1, 2, 3, 4], [5, 0, 9, 30], 10) == ([0, 3, 4], [14, 30])
    small = plan_selection(FLAT[:26])
    assert small.rule == BY_SELECTION and len(small.counts) < 8 and min(small.counts) >= 10
    assert "falls back to" in small.notes[0] and "26 showers" in small.notes[0]
    assert any("authors' metric is not computed" in n for n in small.notes)
    tiny = plan_selection(FLAT[: MIN_PER_BIN - 1])
    assert tiny.rule == BY_LAST and not tiny.edges
    assert "falls back to the last epoch" in tiny.notes[0] and "9 showers" in tiny.notes[0]
    fixed = plan_selection(np.repeat([50.0, 300.0], [30, 8]))
    assert fixed.labels == ("50+300 GeV",) and "falls back to 1 coarser bin" in fixed.notes[0]
    assert plan_selection(np.empty(0)).rule == BY_LAST


def test_the_first_epoch_is_kept_until_beaten_and_old_runs_keep_their_rule() -> None:
    history: list[dict] = []
    for epoch, m in enumerate([float("inf"), 3.0, 3.0, 2.0], 1):
        record = {"epoch": epoch, "metric": m}
        choose(history, record, BY_SELECTION)
        history.append(record)
    assert [h["selected"] for h in history] == [False, False, False, True]
    assert history[0]["metric"] == float("inf")  # a broken first epoch was still written first
    # a run whose first epochs were scored by the authors' metric alone keeps selecting by it
    old = [{"epoch": 1, "metric": 1.2, "selected": True}, {"epoch": 2, "metric": 1.5}]
    rule, notes = selection_rule(plan_selection(FLAT), old)
    assert rule == BY_AUTHORS and "keeps selecting by it" in notes[-1]
    assert old[0]["authors_metric"] == 1.2
    assert choose(old, {"epoch": 3, "metric": 1.0}, rule) and not old[0]["selected"]
    # epochs scored before the shape term had the hit count are not compared with later ones
    shape = {k: 0.0 for k in ("mean_x", "width_x")}
    old = [
        {"epoch": 1, "metric": 5.0, "authors_metric": 1, "selected": True,
         "bins": [{"pull_shape": shape}]},
    ]  # fmt: skip
    rule, notes = selection_rule(plan_selection(FLAT), old)
    assert rule == BY_SELECTION and "starts afresh" in notes[-1] and not old[0]["selected"]
    assert choose(old, {"epoch": 2, "metric": 50.0}, rule)  # worse, yet the first comparable one
    now = [{"epoch": 1, "metric": 5.0, "authors_metric": 1, "selected": True,
            "bins": [{"pull_shape": shape | {"hits": 0.0}}]}]  # fmt: skip
    assert selection_rule(plan_selection(FLAT), now)[1] == list(plan_selection(FLAT).notes)
    assert now[0]["selected"]


def test_a_small_run_trains_and_says_why_the_selection_falls_back(tmp_path: Path, cli) -> None:
    """Issue 23: `caloquant train --data small.h5 --model conv2d --epochs 3` on 256 showers
    stopped in 5 s ('the validation set has 0 shower(s) within 5 GeV of 336 GeV'). Now it trains
    and the selection falls back to coarser bins (26 held-out showers); with 4 held-out showers,
    to the last epoch."""
    before = torch.get_num_threads()
    try:
        s, e = toy_showers(256, 7, 100.0, 500.0)
        small = write_showers(tmp_path / "small.h5", s, e)
        args = ["--model", "conv2d", "--width", "0.1", "--threads", "1"]
        r = cli("train", "--data", small, *args, "--epochs", "3", "-o", tmp_path / "run")
        assert r.code == 0, r.err
        log = " ".join(r.err.split())  # rich wraps long lines
        assert "selection: the validation set has 26 showers" in log
        assert "the selection metric needs at least 10 per bin, so it falls back to" in log
        val = json.loads((tmp_path / "run" / "validation.json").read_text())
        assert val["selected_by"] == BY_SELECTION and len(val["epochs"]) == 3
        assert "falls back to" in val["plan"]["notes"][0] and min(val["plan"]["counts"]) >= 10
        assert all(np.isfinite(h["selection_metric"]) for h in val["epochs"])
        assert f"selected epoch {val['selected_epoch']} by selection metric" in r.out

        tiny = write_showers(tmp_path / "tiny.h5", s[:40], e[:40])  # 4 held out
        r = cli(
            "train", "--data", tiny, *args, "--epochs", "2", "--batch", "8", "-o", tmp_path / "b"
        )
        assert r.code == 0, r.err
        summary = json.loads((tmp_path / "b" / "summary.json").read_text())
        assert summary["selected_by"] == BY_LAST and summary["best_epoch"] == 2
        assert "last epoch" in summary["selection"]
        assert "4 showers" in " ".join(r.err.split()) and "the last epoch" in r.out
        val = json.loads((tmp_path / "b" / "validation.json").read_text())
        assert [h["selected"] for h in val["epochs"]] == [False, True]
    finally:
        torch.set_num_threads(before)
