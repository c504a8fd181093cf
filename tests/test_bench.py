"""`caloquant bench`: JSON structure, a 10x more expensive model measures much slower, streams
run concurrently, clear one-line errors. Small Conv2D generators only (no ../shared)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from caloquant.bench import RESULT_KEYS, BenchConfig, compare_runs, parse_int_list, parse_model_arg
from caloquant.errors import CaloquantError
from caloquant.models import Checkpoint, Conv2DGenerator, save_checkpoint, spec_conv2d
from caloquant.timing import TimingConfig, time_streams
from tests.helpers import assert_one_line_error

# FLOPs per shower grow about as width^2: 0.167 vs 1.659 GFLOP, a ratio of 9.9
CHEAP, DEAR = 0.25, 0.85


def _ckpt(path: Path, width: float) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, Checkpoint(spec_conv2d(width), Conv2DGenerator(width).eval()))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("bench")
    return _ckpt(d / "cheap.pt", CHEAP), _ckpt(d / "dear.pt", DEAR)


@pytest.fixture(scope="module")
def report(pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One real run through the CLI: both models on torch, the cheap one on OpenVINO too."""
    import sys

    from caloquant.cli import main

    out = tmp_path_factory.mktemp("bench_out")
    cheap, dear = pair
    argv = [
        "caloquant",
        "bench",
        "--model",
        str(cheap),
        "--model",
        str(dear),
        "--model",
        f"{cheap}@openvino:fp32",
        "--threads",
        "1",
        "--streams",
        "1,2",
        "--batch",
        "1,16",
        "--duration",
        "0.4",
        "--rounds",
        "2",
        "--json",
        str(out / "bench.json"),
        "--plots",
        str(out / "plots"),
    ]
    old = sys.argv
    sys.argv = argv
    try:
        main()
    except SystemExit as exc:  # typer exits 0 on success
        assert not exc.code, f"bench exited with {exc.code}"
    finally:
        sys.argv = old
    return json.loads((out / "bench.json").read_text()), out


def test_json_structure(report: tuple[dict, Path]) -> None:
    rep, out = report
    m = rep["machine"]
    for k in ("cpu_model", "logical_cores", "usable_cores", "flags", "libraries"):
        assert k in m, k
    assert m["libraries"]["torch"] and m["libraries"]["caloquant"]
    assert isinstance(m["flags"], list)
    # 3 models x 1 thread x 2 streams x 2 batches
    assert len(rep["results"]) == 3 * 1 * 2 * 2
    for r in rep["results"]:
        for k in RESULT_KEYS:
            assert k in r, k
        assert r["showers_per_s"] > 0 and r["ms_per_shower"] == pytest.approx(
            1000 / r["showers_per_s"], rel=1e-3
        )
        assert r["peak_rss_mb"] > 0 and r["model_bytes"] > 0
        assert (r["latency_ms_p50"] is not None) == (r["batch"] == 1)
        assert r["ceiling_gflops"] > 0 and r["achieved_gflops"] > 0
        # a fraction above 1 is a fault of the ceiling: None with the reason, never the number
        f = r["roofline_fraction"]
        assert (0 < f <= 1) if f is not None else "above" in r["roofline_note"], r
        assert r["speedup_vs_geant4_literature"] > 0
        assert (
            "other_load_pct" in r
            and r["retries"] in (0, 1, 2)
            and len(r["showers_per_s_windows"]) == 2
        )
        assert (
            min(r["showers_per_s_windows"]) - 0.01
            <= r["showers_per_s"]
            <= r["showers_per_s_best"] + 0.01
        )
        assert (
            r["process_peak_rss_mb"] >= r["peak_rss_mb"] - 50
        )  # the process holds every model of the run
    assert {r["backend"] for r in rep["results"]} == {"torch", "openvino"}
    # the host's own speed, probed every round (2 rounds + the end)
    probe = rep["host_probe"]
    assert len(probe["rounds"]) == 3 and all(p["fp32"] > 0 for p in probe["rounds"])
    fp32 = [p["fp32"] for p in probe["rounds"]]
    assert probe["fp32_spread"] == pytest.approx(
        (max(fp32) - min(fp32)) / float(np.median(fp32)), abs=1e-3
    )
    # ceilings measured in the same run, for every precision class (torch, kept as "gflops")
    row = rep["ceilings"]["gflops"]["1"]
    assert row["fp32"] and row["fp32"] > 0 and set(row) == {"fp32", "bf16", "fp16", "int8"}
    # and with each model's own engine: OpenVINO at the precision it runs here
    assert set(rep["ceilings"]["engines"]) == {"torch", "openvino"}
    assert rep["ceilings"]["engines"]["openvino"]["gflops"]["1"]["fp32"] > 0
    # per-op profile: shares of the known categories add up to 100 %
    for mi in rep["models"]:
        shares = mi["profile"]["shares_pct"]
        assert set(shares) == {
            "convolution",
            "normalization",
            "activation",
            "quantize/dequantize",
            "layout",
            "other",
        }
        assert sum(shares.values()) == pytest.approx(100, abs=0.5)
        assert shares["convolution"] > 30, mi["profile"]
        assert mi["model_rss_mb"] is not None and mi["flops_per_shower"] > 0
    g4 = rep["monte_carlo"]["geant4_literature"]
    assert g4["measured_here"] is False and g4["source"] and g4["hardware"]
    assert rep["monte_carlo"]["measured"] is None
    names = {p.name for p in (out / "plots").iterdir()}
    assert {
        "throughput_threads_streams.png",
        "speedup_vs_monte_carlo.png",
        "profile_pies.png",
    } <= names


def test_ten_times_more_expensive_model_is_at_least_three_times_slower(
    report: tuple[dict, Path],
) -> None:
    rep, _ = report
    flops = {m["model"]: m["flops_per_shower"] for m in rep["models"]}
    assert flops["dear.pt"] / flops["cheap.pt"] == pytest.approx(10, rel=0.15)
    # at batch 16 the convolutions dominate (at batch 1 fixed per-call costs narrow the gap)
    for streams in (1, 2):
        sps = {
            r["model"]: r["showers_per_s"]
            for r in rep["results"]
            if r["batch"] == 16 and r["streams"] == streams and r["backend"] == "torch"
        }
        assert sps["cheap.pt"] / sps["dear.pt"] >= 3, (streams, sps)


def test_streams_run_concurrently() -> None:
    """Two streams of a GIL-releasing 20 ms call give about twice the throughput of one."""

    def fake(x: np.ndarray) -> np.ndarray:
        time.sleep(0.02)
        return x

    from caloquant.bench.machine import RssSampler

    x = np.zeros((4, 3), dtype=np.float32)
    cfg = TimingConfig(window_s=0.3, warmup_s=0.02, min_calls=2)
    one = time_streams([fake], [x], cfg)
    rss = RssSampler()
    two = time_streams([fake, fake], [x, x], cfg, monitors=(rss,))
    assert one["showers_per_s"] == pytest.approx(4 / 0.02, rel=0.3)
    assert 1.6 < two["showers_per_s"] / one["showers_per_s"] < 2.4
    assert two["calls"] >= 4 and rss.peak > 0 and not two["time_boxed"]


def test_a_pathologically_slow_model_is_timed_by_one_call() -> None:
    """Time-boxing: a first call over the budget is the whole measurement (no warm-up loop,
    no further calls), as for an fp16 kernel on a CPU without fp16 arithmetic."""
    calls = []

    def slow(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        time.sleep(0.3)
        return x

    x = np.zeros((2, 3), dtype=np.float32)
    r = time_streams(
        [slow], [x], TimingConfig(window_s=5.0, warmup_s=5.0, min_calls=3, first_call_budget_s=0.1)
    )
    assert r["time_boxed"] and len(calls) == 1 and r["calls"] == 1
    assert r["showers_per_s"] == pytest.approx(2 / 0.3, rel=0.3)


def test_compare_runs() -> None:
    base = {"model": "m", "backend": "torch", "precision": "fp32", "threads": 1, "streams": 1}
    a = {
        "results": [
            base | {"batch": 1, "showers_per_s": 100.0},
            base | {"batch": 8, "showers_per_s": 200.0},
        ]
    }
    b = {
        "results": [
            base | {"batch": 1, "showers_per_s": 105.0},
            base | {"batch": 8, "showers_per_s": 260.0},
        ]
    }
    c = compare_runs(a, b)
    assert c["points"] == 2 and c["within_10pct"] == 1
    assert c["max_rel_diff"] == pytest.approx(60 / 230)
    # a second model that is 3x the first in run a and 2x in run b: its ratio differs by 40 %
    other = base | {"model": "q", "backend": "openvino", "precision": "int8"}
    a["results"] += [other | {"batch": 1, "showers_per_s": 300.0}]
    b["results"] += [other | {"batch": 1, "showers_per_s": 210.0}]
    a["host_probe"] = {"rounds": [{"fp32": 100.0}, {"fp32": 110.0}], "fp32_spread": 0.1}
    b["host_probe"] = {"rounds": [{"fp32": 80.0}], "fp32_spread": 0.0}
    c = compare_runs(a, b)
    r = c["ratio_to_reference"]
    assert r["reference_model"] == "m" and r["points"] == 1
    assert r["max_rel_diff"] == pytest.approx(1 / 2.5)
    assert c["host_probe"]["fp32"]["rel_diff"] == pytest.approx(25 / 92.5) and c["host_changed"]


def test_parsers(pair: tuple[Path, Path]) -> None:
    cheap, _ = pair
    assert parse_int_list("1, 2,2,4", "--threads") == (1, 2, 4)
    r = parse_model_arg(f"{cheap}@OpenVINO:BF16")
    assert (r.path, r.backend, r.precision, r.short) == (
        cheap,
        "openvino",
        "bf16",
        "cheap.pt@openvino:bf16",
    )
    assert parse_model_arg(f"{cheap}@onnxruntime").precision == "fp32"
    assert parse_model_arg(str(cheap)).backend is None
    with pytest.raises(CaloquantError):
        BenchConfig(duration_s=0)
    with pytest.raises(CaloquantError):
        BenchConfig(mc_command="true")


def test_monte_carlo_slot(pair: tuple[Path, Path], cli, tmp_path: Path) -> None:
    """A Monte Carlo command timed in the same run fills the 'measured' slot."""
    cheap, _ = pair
    res = cli(
        "bench",
        "--model",
        cheap,
        "--threads",
        "1",
        "--streams",
        "1",
        "--batch",
        "2",
        "--duration",
        "0.1",
        "--no-profile",
        "--no-ceilings",
        "--mc-command",
        "sleep 0.2",
        "--mc-showers",
        "4",
        "--json",
        tmp_path / "b.json",
    )
    assert res.code == 0, res.err
    rep = json.loads((tmp_path / "b.json").read_text())
    mc = rep["monte_carlo"]["measured"]
    # 'sleep 0.2' cannot take less than 0.2 s for its 4 showers (upper bound loose: a loaded host)
    assert mc["measured_here"] is True and 0.05 <= mc["seconds_per_shower"] < 0.5
    r = rep["results"][0]
    assert r["speedup_vs_mc_measured"] == pytest.approx(
        mc["seconds_per_shower"] * r["showers_per_s"], rel=0.01
    )
    assert rep["ceilings"] is None and "profile" not in rep["models"][0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "/nonexistent/model.pt"], ["model not found"]),
        (["--model", "{cheap}", "--threads", "1,x"], ["--threads", "1,x"]),
        (["--model", "{cheap}", "--streams", "0"], ["--streams"]),
        (["--model", "{cheap}", "--batch", ""], ["--batch"]),
        (["--model", "{cheap}@tensorflow"], ["unknown backend", "tensorflow"]),
        (["--model", "{cheap}@onnxruntime:bf16"], ["not supported"]),
        (["--model", "{cheap}@openvino:int4"], ["unknown precision"]),
        (["--model", "{cheap}", "--duration", "0"], ["--duration"]),
        (["--model", "{cheap}", "--mc-command", "true"], ["--mc-showers"]),
        (
            ["--model", "{cheap}", "--mc-command", "false", "--mc-showers", "3"],
            ["--mc-command", "exited"],
        ),
        (
            ["--model", "{cheap}", "--mc-command", "/nonexistent/g4sim", "--mc-showers", "3"],
            ["--mc-command"],
        ),
        (["--model", "not-a-builtin-model"], ["model not found", "built-in"]),
        (["--model", "{tmp}"], ["not a caloquant artifact"]),
        (["--model", "{corrupt}"], ["corrupt"]),
    ],
)
def test_bad_input_is_one_line_error(
    pair: tuple[Path, Path], cli, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    cheap, _ = pair
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 100)
    args = [a.format(cheap=cheap, tmp=tmp_path, corrupt=corrupt) for a in args]
    if "--duration" not in args:
        args += ["--duration", "0.1"]
    res = cli(
        "bench", *args, "--no-profile"
    )  # ceilings on: bad input must fail before any measurement
    assert_one_line_error(res, *needles)


def test_quantize_artifact_is_benchmarked(tmp_path: Path) -> None:
    """A `caloquant quantize` output directory is a bench input: its manifest's backend,
    precision and recipe are reported, and a rewritten artifact is credited with the FLOPs it
    executes (the sub-pixel rewrite needs fewer than the architecture)."""
    from caloquant.bench import run_bench
    from caloquant.models import Checkpoint
    from caloquant.precision import QuantizeConfig, Tolerance, quantize
    from tests.helpers import UP_SPEC, UpGen

    cfg = QuantizeConfig(
        backend="openvino",
        precision="int8",
        calib_n=32,
        eval_n_per_point=20,
        batch=8,
        seed=0,
        tolerance=Tolerance(ecal_rel=1.0, moment_shift=10.0),
        timing=TimingConfig(window_s=0.2, rounds=1),
    )
    quantize(Checkpoint(UP_SPEC, UpGen().eval()), cfg).save(tmp_path / "art")
    rep = run_bench(
        [str(tmp_path / "art")],
        BenchConfig(
            threads=(1,),
            streams=(1,),
            batches=(4,),
            duration_s=0.2,
            rounds=1,
            profile=False,
            ceilings=False,
        ),
    )
    info, row = rep["models"][0], rep["results"][0]
    assert (info["kind"], info["backend"], info["precision"], info["recipe"]) == (
        "artifact",
        "openvino",
        "int8",
        "physics",
    )
    assert info["flops_per_shower"] < 0.7 * info["flops_per_shower_architecture"]
    assert row["showers_per_s"] > 0 and row["model_bytes"] == info["model_bytes"] > 0


def test_oversubscribed_points_can_be_left_out(pair: tuple[Path, Path]) -> None:
    """``oversubscribe=False`` times only the points whose threads x streams fit the usable
    cores (the study's grid); a grid with no such point is a one-line error before any timing."""
    from caloquant.bench import run_bench
    from caloquant.runtime import usable_cores

    cheap, _ = pair
    cores = usable_cores()
    cfg = BenchConfig(
        threads=(1, cores),
        streams=(1, 2),
        batches=(2,),
        duration_s=0.05,
        rounds=1,
        profile=False,
        ceilings=False,
        oversubscribe=False,
    )
    rep = run_bench([str(cheap)], cfg)
    points = {(r["threads"], r["streams"]) for r in rep["results"]}
    assert points == {(t, s) for t in (1, cores) for s in (1, 2) if t * s <= cores}, points
    assert not any(r["oversubscribed"] for r in rep["results"])
    with pytest.raises(CaloquantError, match="usable cores"):
        run_bench(
            [str(cheap)],
            BenchConfig(threads=(cores + 1,), streams=(1,), batches=(2,), oversubscribe=False),
        )


# ---- roofline against the model's own engine; speed-up against Monte Carlo per core ----------


def test_each_row_is_held_to_its_own_engines_ceiling(report: tuple[dict, Path]) -> None:
    """The ceiling of a row is the one measured with its engine at the cores it used (OpenVINO
    rows: an OpenVINO matmul, not torch's), for the fastest precision the row executes, and no
    fraction above 1 appears."""
    from caloquant.bench.ceilings import ceiling_key
    from caloquant.runtime import usable_cores

    rep, _ = report
    engines = rep["ceilings"]["engines"]
    for r in rep["results"]:
        assert r["cores_used"] == min(r["threads"] * r["streams"], usable_cores()), r
        table = engines[r["backend"]]["gflops"][str(r["cores_used"])]
        ran = [ceiling_key(p) for p in r["executed_precision"].split("+")]
        # the fastest of the kernels the model runs
        own = max((table[p] for p in ran if table.get(p) is not None), default=None)
        assert r["ceiling_gflops"] == own
        assert r["ceiling_engine"] in {f"{r['backend']} {p}" for p in ran if table.get(p) == own}
        if r["roofline_fraction"] is not None:
            assert r["roofline_fraction"] == pytest.approx(r["achieved_gflops"] / own, abs=1e-3)
    assert all((m["best"]["roofline_fraction"] or 0) <= 1 for m in rep["models"])
    ov = [r for r in rep["results"] if r["backend"] == "openvino"]
    assert ov and engines["openvino"]["executed"]["fp32"] == "f32"


def test_openvino_int8_ceiling_is_measured_with_openvino_int8_kernels() -> None:
    """The int8 ceiling of OpenVINO is a matmul the plugin executes in int8 (u8 x i8), timed
    with OpenVINO; an engine without a precision has no ceiling rather than another's."""
    from caloquant.bench import measure_ceilings

    c = measure_ceilings(
        [1], {"openvino": ["int8"], "onnxruntime": ["bf16"]}, budget_s=0.02, sizes=(128,)
    )
    ov = c["engines"]["openvino"]
    assert set(ov["gflops"]["1"]) == {"int8"} and ov["gflops"]["1"]["int8"] > 0
    assert ov["executed"]["int8"] in ("u8", "i8"), ov["executed"]
    assert "OpenVINO" in ov["method"] and "FakeQuantize" in ov["method"]
    assert c["engines"]["onnxruntime"]["gflops"]["1"]["bf16"] is None
    assert "no ceiling" in c["engines"]["onnxruntime"]["missing"]["bf16"]
    assert c["gflops"] is c["engines"]["torch"]["gflops"]  # the key older readers use


def _row(backend: str, precision: str, achieved: float) -> dict:
    return {
        "model": f"m-{backend}-{precision}",
        "backend": backend,
        "precision": precision,
        "threads": 2,
        "streams": 1,
        "batch": 32,
        "cores_used": 2,
        "achieved_gflops": achieved,
        "showers_per_s": 1.0,
        "ms_per_shower": 1000.0,
        "peak_rss_mb": 1.0,
        "speedup_vs_geant4_literature": 17.0,
    }


def test_a_mixed_model_is_held_to_the_fastest_kernel_it_runs() -> None:
    """A model with int8 and fp32 layers cannot beat the faster of the two kernels. On the AVX2
    class OpenVINO's int8 matmul (no VNNI) ran at 198 GOP/s and its fp32 one at 372 GFLOP/s;
    the tuner's int8+fp32 model reached 203 (mostly fp32 convolutions): held to the int8
    ceiling alone it was 'above the ceiling'; held to fp32's it is at 55 %. Where int8 is the
    faster kernel (VNNI, AMX) the same model is held to int8's."""
    from caloquant.bench.summary import finish_results

    for table, engine, frac in (
        ({"fp32": 372.0, "int8": 198.0}, "openvino fp32", 203.0 / 372.0),
        ({"fp32": 325.0, "int8": 947.0}, "openvino int8", 203.0 / 947.0),
    ):
        mixed = _row("openvino", "int8", 203.0) | {"executed_precision": "int8+fp32"}
        ceilings = {"engines": {"openvino": {"gflops": {"2": table}}}}
        finish_results([{"model": mixed["model"]}], [mixed], ceilings)
        assert mixed["ceiling_engine"] == engine and mixed["ceiling_gflops"] == max(table.values())
        assert mixed["roofline_fraction"] == pytest.approx(frac, abs=1e-4)


def test_roofline_fraction_never_above_one_nor_borrowed(caplog: pytest.LogCaptureFixture) -> None:
    """The AVX2 case of issue 25: torch's int8 ceiling is 1.1 GOP/s, OpenVINO's own int8 kernels
    run at 700: an OpenVINO int8 model at 72 GOP/s is at 10 % of OpenVINO's int8 ceiling, not
    at 6,560 % of torch's. Above its own ceiling a row reports no fraction (with a note and a
    warning); an engine or precision without a ceiling says so."""
    import logging

    from caloquant.bench.summary import finish_results

    ceilings = {
        "gflops": {"2": {"fp32": 184.0, "bf16": 190.0, "fp16": 3.0, "int8": 1.1}},
        "engines": {
            "torch": {"gflops": {"2": {"fp32": 184.0, "bf16": 190.0, "fp16": 3.0, "int8": 1.1}}},
            "openvino": {"gflops": {"2": {"fp32": 180.0, "int8": 720.0}}},
            "onnxruntime": {
                "gflops": {"2": {"fp32": 150.0, "bf16": None}},
                "missing": {"bf16": "no ceiling: ONNX Runtime builds no bf16 model"},
            },
        },
    }
    rows = [
        _row("openvino", "int8", 72.0),
        _row("openvino", "fp32", 200.0),  # above its own ceiling
        _row("torch", "int8", 72.0),  # above torch._int_mm's 1.1: not borrowed, not printed
        _row("onnxruntime", "bf16", 10.0),
        _row("onnxruntime", "int8", 10.0),  # int8 not measured for onnxruntime in this run
        _row("tflite", "fp32", 10.0),
    ]
    infos = [{"model": r["model"]} for r in rows]
    with caplog.at_level(logging.WARNING, logger="caloquant.bench.summary"):
        finish_results(infos, rows, ceilings)
    by = {(r["backend"], r["precision"]): r for r in rows}
    ov8 = by[("openvino", "int8")]
    assert ov8["ceiling_gflops"] == 720.0 and ov8["ceiling_engine"] == "openvino int8"
    assert ov8["roofline_fraction"] == pytest.approx(0.1) and ov8["roofline_note"] is None
    for key in (("openvino", "fp32"), ("torch", "int8")):
        assert by[key]["roofline_fraction"] is None and "above" in by[key]["roofline_note"]
    assert sum("roofline" in m.message for m in caplog.records) == 2
    for key in (("onnxruntime", "bf16"), ("onnxruntime", "int8"), ("tflite", "fp32")):
        assert by[key]["ceiling_gflops"] is None and by[key]["roofline_fraction"] is None
        assert by[key]["roofline_note"].startswith("no ceiling"), by[key]
    assert all(r["roofline_fraction"] is None or r["roofline_fraction"] <= 1 for r in rows)
    assert all(i["best"]["roofline_fraction"] in (None, pytest.approx(0.1)) for i in infos)


def _fake_mc(*_: object, **__: object) -> dict:
    """What `time_mc_engine` returns, with 2 s/shower at 100 GeV and 6 at 500 (none at 300)."""

    def point(mean: float, sem: float) -> dict:
        st = {"mean": mean, "sem": sem, "median": mean, "std": sem, "n": 3}
        return {"n": 3, "wall_s_per_shower": st, "cpu_s_per_shower": st}

    return {
        "engine": "gflash",
        "physics": "gflash",
        "label": "gflash (measured in this run)",
        "measured_here": True,
        "setup_s": 0.1,
        "per_energy": {"100": point(2.0, 0.1), "300": {"n": 0}, "500": point(6.0, 0.3)},
        "flat_mean_s_per_shower": 4.0,
        "flat_mean_s_per_shower_err": 0.2,
        "flat_range_gev": [100.0, 500.0],
    }


def test_speedup_against_monte_carlo_per_core(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every row carries the speed-up per core: showers/s per core used (threads x streams, at
    most the usable cores) against the Monte Carlo's per core = the speed-up at the row's
    cores / cores used, flat and per timed energy, with errors; tables and plots show it."""
    import caloquant.bench.core as core
    from caloquant.bench import run_bench
    from caloquant.report import bench as tables
    from caloquant.report.bench_figures import bench_plots
    from caloquant.runtime import usable_cores

    monkeypatch.setattr(core, "time_mc_engine", _fake_mc)
    cheap, _ = pair
    cfg = BenchConfig(
        threads=(1, 2),
        streams=(1, 2),
        batches=(2,),
        duration_s=0.05,
        rounds=1,
        profile=False,
        ceilings=False,
        mc_engine="gflash",
    )
    rep = run_bench([str(cheap)], cfg)
    assert len(rep["results"]) == 4
    for r in rep["results"]:
        cores = min(r["threads"] * r["streams"], usable_cores())
        assert r["cores_used"] == cores
        assert r["speedup_vs_mc_engine"] == pytest.approx(4.0 * r["showers_per_s"], rel=1e-3)
        assert r["speedup_vs_mc_engine_per_core"] == pytest.approx(
            r["speedup_vs_mc_engine"] / cores, rel=2e-3
        )
        assert r["speedup_vs_mc_engine_per_core_err"] == pytest.approx(
            r["speedup_vs_mc_engine_err"] / cores, rel=2e-3
        )
        per, two = (
            r["speedup_vs_mc_engine_per_core_per_energy"],
            r["speedup_vs_mc_engine_per_energy"],
        )
        assert set(per) == set(two) == {"100", "500"}  # the energies the Monte Carlo timed
        for e in per:
            assert per[e]["speedup"] == pytest.approx(two[e]["speedup"] / cores, rel=2e-3)
            assert per[e]["err"] == pytest.approx(two[e]["err"] / cores, rel=2e-3)
            assert per[e]["err"] > 0
    best = rep["models"][0]["best"]
    assert best["speedup_vs_mc_engine_per_core"] == pytest.approx(
        best["speedup_vs_mc_engine"] / best["cores_used"], rel=2e-3
    )
    # the report: the 2-thread figure labelled as such, the per-core one beside it
    from rich.console import Console

    con = Console(record=True, width=400)
    con.print(tables.bench_models_table(rep))
    con.print(tables.bench_results_table(rep))
    text = con.export_text()
    assert "gflash per core" in text and "thr x str cores" in text
    assert f"{best['speedup_vs_mc_engine_per_core']:,.0f} +-" in text
    assert (tmp_path / "p" / "speedup_vs_monte_carlo.png") in bench_plots(rep, tmp_path / "p")


def test_per_core_keys_are_none_without_a_timed_monte_carlo(report: tuple[dict, Path]) -> None:
    rep, _ = report
    for r in rep["results"]:
        for k in ("", "_err", "_per_energy"):
            assert r[f"speedup_vs_mc_engine_per_core{k}"] is None
