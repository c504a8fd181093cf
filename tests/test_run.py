"""`caloquant run --quick`: the whole study on a tiny configuration, its report (JSON and one
self-contained HTML file, opened in real headless Chromium), and content-keyed step caching."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# tiny: short tuning and benchmark (the report is the thing under test), 60 GFlash showers: at
# least 6 in each 50 GeV bin of the validations and more than the classifiers' 50 per sample
# (the validations are most of the run: their time grows with the showers)
TINY_SETTINGS = {
    "n_flat": 60,
    "tune_budget_s": 20,
    "bench_duration_s": 0.3,
    "mc_budget_s": 8,
    "threads": 2,
}
FLAG = {
    "n_flat": "--showers",
    "tune_budget_s": "--tune-budget",
    "bench_duration_s": "--bench-duration",
    "mc_budget_s": "--mc-budget",
    "threads": "--threads",
}
TINY = ["--quick", *(a for k, v in TINY_SETTINGS.items() for a in (FLAG[k], str(v)))]
SECTIONS = (
    "Recommendation",
    "Speed-up",
    "Per-op breakdown",
    "Throughput over threads and streams",
    "Shower shapes",
    "Moments",
    "Validation number",
    "Pixel-wise",
    "Sampling fraction",
    "Modern metrics",
    "Tuner",
    "Model sizes",
    "Machine",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `caloquant run --quick` into a new folder, through the real entry point."""
    import sys

    from caloquant.cli import main

    out = tmp_path_factory.mktemp("run") / "quick"
    argv = sys.argv
    sys.argv = ["caloquant", "run", *TINY, "-o", str(out)]
    try:
        with pytest.raises(SystemExit) as ex:
            main()
    finally:
        sys.argv = argv
    assert ex.value.code in (0, None)
    return out


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def _table(rep: dict, section: str, title_part: str) -> dict:
    s = next(s for s in rep["sections"] if s["title"] == section)
    return next(t for t in s["tables"] if title_part in t["title"])


def test_quick_run_writes_the_report(quick_run: Path) -> None:
    rep = _report(quick_run)
    assert [s["title"] for s in rep["sections"]] == list(SECTIONS)
    names = [r["variant"] for r in rep["variants"]]
    assert names == ["fp32", "bf16", "int8_naive", "int8_physics"]
    rows = {r["variant"]: r for r in rep["variants"]}
    assert rows["fp32"]["within_tolerance"] and rows["fp32"]["speedup_vs_fp32"] == pytest.approx(
        1.0
    )
    # the naive int8 moves the energy far more than the physics recipe (paired with fp32)
    assert rows["int8_naive"]["worst_ecal_dev"] > 2 * rows["int8_physics"]["worst_ecal_dev"]
    # speed-up against the Monte Carlo timed in this run, with its error
    for r in rows.values():
        assert r["speedup_vs_mc"] > 1 and r["speedup_vs_mc_err"] >= 0
    # each variant's CaloChallenge classifier AUCs against the Monte Carlo, in the summary table
    for r in rows.values():
        cc = r["auc_cc_vs_reference"]
        assert set(cc) == {"low_level", "high_level"}
        assert all(0.0 <= c["auc"] <= 1.0 and c["auc_err"] >= 0 for c in cc.values())
    summary = _table(rep, "Recommendation", "Fast and right")
    col = next(i for i, c in enumerate(summary["columns"]) if c.startswith("AUC vs"))
    assert all(" / " in row[col] for row in summary["rows"])
    # the recommendation names the fastest variant within tolerance
    good = [r for r in rep["variants"] if r["within_tolerance"]]
    best = max(good, key=lambda r: r["showers_per_s"])
    assert f"deploy {best['model']} {best['variant']} " in rep["recommendation"]
    # key tables with one row per variant (pixel-wise: every reduced variant against fp32)
    assert (
        len(_table(rep, "Speed-up", "paper Table 1")["rows"]) == 1 + 4
    )  # the Monte Carlo row + 4 variants
    assert [r[0] for r in _table(rep, "Pixel-wise", "Table 5")["rows"]] == [
        "cern-3dgan bf16",
        "cern-3dgan int8_naive",
        "cern-3dgan int8_physics",
    ]
    assert (
        len(_table(rep, "Sampling fraction", "Sampling fraction")["rows"]) == 5
    )  # closure + 4 variants
    # one self-contained file: every figure inline, nothing fetched
    html = (quick_run / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    n_img = html.count("<img ")
    assert n_img >= 10 and html.count('src="data:image/png;base64,') == n_img
    for s in SECTIONS:
        assert f'data-section="{s}"' in html
    assert not list(quick_run.rglob("*.part"))


def test_rerun_reuses_every_step(quick_run: Path, cli) -> None:
    before = _report(quick_run)
    res = cli("run", *TINY, "-o", quick_run)
    assert res.code == 0, res.err
    steps = _report(quick_run)["steps"]
    assert steps and all(s["reused"] for s in steps)
    assert [s["key"] for s in steps] == [s["key"] for s in before["steps"]]


def test_bench_results_are_matched_by_model_not_by_position(quick_run: Path) -> None:
    """The report finds each variant's speed by the file the benchmark timed: with the
    benchmark's models in another order the rows, speed-ups and recommendation stay the same."""
    from caloquant.run import RunConfig, run

    before = _report(quick_run)
    bench = Path(before["bench_json"])
    original = bench.read_text()
    rep = json.loads(original)
    rep["models"], rep["results"] = rep["models"][::-1], rep["results"][::-1]
    bench.write_text(json.dumps(rep))
    try:
        after = run(
            RunConfig(quick=True, **TINY_SETTINGS),  # type: ignore[arg-type]
            quick_run,
        )
    finally:
        bench.write_text(original)
    assert all(s["reused"] for s in after["steps"])
    assert (
        after["variants"] == before["variants"]
        and after["recommendation"] == before["recommendation"]
    )
    speed = _table(after, "Speed-up", "paper Table 1")["rows"]
    assert speed == _table(before, "Speed-up", "paper Table 1")["rows"]


def test_settings_resolve_to_the_same_config_and_step_keys() -> None:
    """The typed settings give report.json the same "config" as the dictionary they replaced
    (and so the steps the same keys): floats as floats, fp32 first, the quick defaults."""
    from caloquant.run import QUICK_VARIANTS, RunConfig, StudyVariant

    s = RunConfig(
        models=("cern-3dgan",),
        quick=True,
        n_flat=120,
        tune_budget_s=20,
        variants=(StudyVariant("int8", "int8", "openvino"), StudyVariant("fp32")),
    ).resolve()
    assert s.to_dict() == {
        "models": ["cern-3dgan"],
        "quick": True,
        "threads": 2,
        "seed": 1,
        "n_flat": 120,
        "n_per_point": 0,
        "engine": "gflash",
        "tune_budget_s": 20.0,
        "bench_duration_s": 0.6,
        "mc_budget_s": 40.0,
        "classifier": True,
        "variants": [
            {
                "name": "fp32",
                "precision": "fp32",
                "backend": "torch",
                "recipe": "physics",
                "head_to_head": False,
            },
            {
                "name": "int8",
                "precision": "int8",
                "backend": "openvino",
                "recipe": "physics",
                "head_to_head": False,
            },
        ],
    }
    assert (
        isinstance(s.tune_budget_s, float)
        and RunConfig(quick=True).resolve().variants == QUICK_VARIANTS
    )
    full = RunConfig(models=("cern-3dgan",)).resolve()
    assert (full.n_flat, full.n_per_point, full.engine, full.tune_budget_s) == (
        1000,
        100,
        "geant4",
        540.0,
    )
    assert (
        "1000 showers" in RunConfig.describe_defaults()
        and "400 showers" in RunConfig.describe_defaults()
    )


def test_interrupted_run_leaves_no_report_and_resumes(
    quick_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped in a step leaves the finished steps and no report; the next run redoes
    only the unfinished step (the physics int8 showers: the validations that read them are
    keyed by that step's inputs, the same again, and are reused)."""
    import caloquant.api
    from caloquant.run import RunConfig, run

    step = quick_run / "steps" / "cern-3dgan_sample_int8_physics_flat.json"
    assert step.exists()
    step.unlink()
    (quick_run / "report.html").unlink()
    (quick_run / "report.json").unlink()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    cfg = RunConfig(quick=True, **TINY_SETTINGS)  # type: ignore[arg-type]
    with monkeypatch.context() as mp:
        mp.setattr(caloquant.api, "load", interrupted)  # the sample step loads the artifact
        with pytest.raises(KeyboardInterrupt):
            run(cfg, quick_run)
    assert not (quick_run / "report.html").exists() and not (quick_run / "report.json").exists()
    assert not list(quick_run.rglob("*.part"))
    run(cfg, quick_run)
    ran = [s["step"] for s in _report(quick_run)["steps"] if not s["reused"]]
    assert ran == ["cern-3dgan: sample int8_physics (flat)"]


# ---- the report in a real browser -----------------------------------------------------------


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root only); else skip with the
    reason."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and this system has no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip(
            "chromium is not installed and installing it needs root (apt-get install chromium)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.skip(
                f"could not install chromium ({' '.join(cmd)}: "
                f"{proc.stderr.strip().splitlines()[-1:]})"
            )
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("apt-get install chromium succeeded but no chromium on PATH")
    return path


def _chrome(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    base = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


def test_report_in_headless_chromium(quick_run: Path, tmp_path: Path) -> None:
    page = (quick_run / "report.html").resolve().as_uri()
    dom = _chrome(["--dump-dom", page], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "console messages:\n" + "\n".join(console)
    # the page's own check ran after load: every image complete with a natural width
    m = re.search(r'data-images-decoded="(\d+)/(\d+)"', dom.stdout)
    assert m, "the report's load handler did not run"
    assert int(m.group(2)) >= 10 and m.group(1) == m.group(2), (
        f"{m.group(1)} of {m.group(2)} images decoded"
    )
    for s in SECTIONS:
        assert f'id="{re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")}"' in dom.stdout
    for title in (
        "Fast and right?",
        "Inference time and speed-up",
        "Pixel-wise comparison with fp32",
        "Sampling fraction Ecal/Ep",
        "Moment shifts against",
        "single validation number",
    ):
        assert re.search(rf"<caption>[^<]*{re.escape(title)}", dom.stdout), title
    shot = quick_run / "report_screenshot.png"
    png = _chrome([f"--screenshot={shot}", "--window-size=1400,2400", page], tmp_path)
    assert png.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000, png.stderr[
        -2000:
    ]
    out = os.environ.get("CALOQUANT_SCREENSHOT_DIR")
    if out:  # keep the screenshot for a person to look at
        shutil.copy(shot, Path(out) / "report_screenshot.png")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--engine", "foo"], "engine"),
        (["--showers", "5"], "at least 20"),
        (["--model", "/nonexistent/model.pt"], "not found"),
    ],
)
def test_bad_input_is_one_line_error(cli, tmp_path: Path, args: list[str], needle: str) -> None:
    from tests.helpers import assert_one_line_error

    assert_one_line_error(cli("run", "-o", tmp_path / "r", *args), needle)
    assert not (tmp_path / "r" / "report.html").exists()


def test_points_reference_comes_from_the_shipped_geant4_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-energy reference of the full run is the Geant4 set shipped in the package (the
    first k showers at each point), written once into the per-user cache; more showers per
    point than shipped, or another geometry, are not served from it."""
    import numpy as np

    from caloquant.data import read_showers
    from caloquant.sim import SimConfig
    from caloquant.sim.reference import (
        load_packaged_reference,
        packaged_points,
        write_packaged_points,
    )

    monkeypatch.setenv("CALOQUANT_DATA", str(tmp_path))
    geometry = SimConfig().geometry.hash
    energies = np.repeat([100.0, 300.0], 7)
    packed = packaged_points(energies, geometry)
    assert packed is not None and "showers" not in packed  # nothing expanded before it is needed
    res = write_packaged_points(packed, energies, lambda msg: None)
    assert (
        res["engine"] == "geant4"
        and res["n"] == 14
        and Path(res["path"]).parent == tmp_path / "run"
    )
    showers, e = read_showers(res["path"])
    shipped, shipped_e, _ = load_packaged_reference()
    np.testing.assert_array_equal(e, energies)
    np.testing.assert_array_equal(showers[:7], shipped[shipped_e == 100.0][:7])
    assert packaged_points(np.repeat([100.0], 101), geometry) is None  # 100 shipped per point
    assert packaged_points(energies, "another-geometry") is None


def test_a_float_variant_that_runs_as_another_is_not_repeated(quick_run: Path) -> None:
    """fp16 on a CPU without fp16 arithmetic runs as bf16: with the same paired physics it is the
    same computation, so the study neither samples, validates nor times it again and says so;
    on a CPU with fp16 arithmetic it is a variant of its own."""
    from caloquant.run import QUICK_VARIANTS, RunConfig, StudyVariant, run

    cfg = RunConfig(
        quick=True,
        **TINY_SETTINGS,  # type: ignore[arg-type]
        variants=(
            *QUICK_VARIANTS[:2],
            StudyVariant("fp16", "fp16", "openvino"),
            *QUICK_VARIANTS[2:],
        ),
    )
    rep = run(cfg, quick_run)
    bf, fp = (
        json.loads((quick_run / "models" / "cern-3dgan" / v / "manifest.json").read_text())
        for v in ("bf16", "fp16")
    )
    same = (
        bf["executed_precision"] == fp["executed_precision"]
        and bf["physics"]["worst_ecal_rel"] == fp["physics"]["worst_ecal_rel"]
    )
    ran = {s["step"] for s in rep["steps"] if not s["reused"]}
    sampled = any("sample fp16" in s for s in ran)
    variants = {r["variant"] for r in rep["variants"]}
    if same:
        assert (
            "cern-3dgan fp16" in rep["skipped_variants"] and not sampled and "fp16" not in variants
        )
        assert "benchmark" not in ran  # the same models as before: the benchmark step is reused
    else:
        assert sampled and "fp16" in variants
