"""`caloquant run`: the whole study in one command, as one HTML report (and its JSON).

A thin orchestrator over the stages' public APIs (``caloquant.sim``, the Python API
``caloquant.api`` for models, quantization, validation and benchmarks, ``caloquant.report``):

1. reference showers from the Monte Carlo (Geant4; GFlash in ``--quick`` or when Geant4
   cannot run here), cached per user by content (engine, seed, energies, geometry, versions);
2. for every model: fp32 and its reduced-precision variants (artifacts);
3. showers of every variant on the reference energies with the same latents as fp32;
4. validation against the reference and, paired, against the variant's own fp32;
5. one benchmark of every variant, with the Monte Carlo engine timed in the same run;
6. ``report.html`` (self-contained) and ``report.json``.

Every step is cached by content: its result is a JSON file under ``RUN_DIR/steps/`` keyed by a
hash of its inputs (configuration, caloquant version, the keys of the steps it reads). A
re-run, or a run resumed after an interruption, reuses finished steps; files are written
atomically (temporary name, then rename), so an interrupted run never leaves a half-written
report or step.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from caloquant.errors import CaloquantError
from caloquant.fileio import write_json

RUN_FORMAT = 1
POINTS_GEV = (100.0, 200.0, 300.0, 400.0, 500.0)


@dataclass(frozen=True)
class Variant:
    """One precision variant of a model: ``fp32`` is the PyTorch checkpoint itself."""

    name: str
    precision: str = "fp32"
    backend: str = "torch"
    recipe: str = "physics"
    head_to_head: bool = False

    @property
    def is_fp32(self) -> bool:
        return self.precision == "fp32" and self.backend == "torch"


FULL_VARIANTS = (Variant("fp32"), Variant("bf16", "bf16", "openvino"), Variant("fp16", "fp16", "openvino"),
                 Variant("int8_naive", "int8", "openvino", "naive"),
                 Variant("int8_physics", "int8", "openvino", "physics", head_to_head=True))
QUICK_VARIANTS = (Variant("fp32"), Variant("bf16", "bf16", "openvino"), Variant("int8_naive", "int8", "openvino", "naive"),
                  Variant("int8_physics", "int8", "openvino", "physics"))


@dataclass(frozen=True)
class RunConfig:
    """What `caloquant run` does. ``quick``: the default model only, a GFlash reference, naive
    and physics int8 plus one float variant, no head to head, time-boxed tuning, short bench."""

    models: tuple[str, ...] = ()
    quick: bool = False
    threads: int = 2
    seed: int = 1
    n_flat: int | None = None  # reference showers flat in the model's range (default: 1000, quick 400)
    n_per_point: int | None = None  # reference showers at each of POINTS_GEV (default 100; quick: none)
    engine: str | None = None  # reference engine: geant4 or gflash (default geant4, quick gflash)
    tune_budget_s: float | None = None  # per quantize run (default 540, quick 60)
    bench_duration_s: float | None = None  # per bench grid point (default 2, quick 0.6)
    mc_budget_s: float | None = None  # the Monte Carlo timing in the benchmark (default 300, quick 40)
    classifier: bool = True
    variants: tuple[Variant, ...] = field(default=())

    def resolved(self) -> dict[str, Any]:
        """Every setting with its default filled in (the quick or the full study)."""
        q = self.quick
        return {
            "models": list(self.models) or ([_default_model()] if q else _builtin_models()), "quick": q, "threads": self.threads, "seed": self.seed,
            "n_flat": self.n_flat if self.n_flat is not None else (400 if q else 1000),
            "n_per_point": self.n_per_point if self.n_per_point is not None else (0 if q else 100),
            "engine": self.engine or ("gflash" if q else "geant4"),
            # floats as floats: 20 and 20.0 must give the same step keys
            "tune_budget_s": float(self.tune_budget_s if self.tune_budget_s is not None else (60.0 if q else 540.0)),
            "bench_duration_s": float(self.bench_duration_s if self.bench_duration_s is not None else (0.6 if q else 2.0)),
            "mc_budget_s": float(self.mc_budget_s if self.mc_budget_s is not None else (40.0 if q else 300.0)),
            "classifier": self.classifier,
            "variants": [asdict(v) for v in _with_fp32(self.variants or (QUICK_VARIANTS if q else FULL_VARIANTS))],
        }


def _with_fp32(variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
    """fp32 comes first: every variant is compared with it (paired) and timed against it."""
    fp = [v for v in variants if v.is_fp32] or [Variant("fp32")]
    return (fp[0], *(v for v in variants if not v.is_fp32))


def _default_model() -> str:
    from caloquant.models import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


def _builtin_models() -> list[str]:
    """Every built-in model whose weights are installed (the default first): the CERN 3DGAN,
    and the Conv2D model trained here once it ships."""
    from caloquant.models import DEFAULT_MODEL
    from caloquant.models.registry import builtin_models

    return [str(DEFAULT_MODEL)] + [m.name for m in builtin_models() if m.name != DEFAULT_MODEL]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "model"


class Steps:
    """Content-keyed steps: ``run(name, inputs, fn)`` returns ``fn()``'s JSON-ready result,
    or the stored one when a step of that name finished with the same inputs (and its output
    files still exist). The key hashes the inputs and the caloquant version."""

    def __init__(self, run_dir: Path, console: Console) -> None:
        from caloquant import __version__

        self.dir, self.console, self.version = run_dir / "steps", console, __version__
        self.log: list[dict[str, Any]] = []

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = _hash({"step": name, "inputs": inputs, "caloquant": self.version})
        path = self.dir / f"{_slug(name)}.json"
        if path.exists():
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError:
                rec = {}
            if rec.get("key") == key and all(Path(p).exists() for p in rec.get("outputs", [])):
                self.console.print(f"[dim]- {name}: reused (key {key}, {rec['seconds']:.0f} s when made)[/]")
                self.log.append({"step": name, "key": key, "reused": True, "seconds": rec["seconds"]})
                return dict(rec["result"], _key=key)
        self.console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        outputs = [str(p) for p in result.pop("_outputs", [])]
        write_json(path, {"step": name, "key": key, "inputs": inputs, "seconds": round(seconds, 2), "outputs": outputs,
                          "result": result})
        self.console.print(f"[green]done[/] {name} in {seconds:.0f} s")
        self.log.append({"step": name, "key": key, "reused": False, "seconds": round(seconds, 2)})
        return dict(result, _key=key)


# --- the stages ----------------------------------------------------------------------------


def _reference(cfg: dict[str, Any], which: str, energies: np.ndarray, steps: Steps, say: Callable[[str], None]) -> dict[str, Any]:
    """Monte Carlo showers at ``energies``, in the per-user cache (shared by every run dir)."""
    from importlib.metadata import PackageNotFoundError, version

    from caloquant.sim import SimConfig, default_data_dir, helper_status, simulate

    engine = cfg["engine"]
    if which == "points" and engine == "geant4" and (packed := _packaged_points(energies, SimConfig().geometry.hash)):
        return steps.run(f"reference {which}", {"packaged": packed["sha256"], "energies": _hash(energies.tolist())},
                         lambda: _write_packaged(packed, energies, say))
    if engine == "geant4" and not (st := helper_status())["ready"]:
        say(f"Geant4 engine unavailable ({st.get('reason')}): reference made with the GFlash engine (fitted to Geant4)")
        engine = "gflash"
    sim = SimConfig(engine=engine, seed=cfg["seed"] + (0 if which == "flat" else 7))
    try:
        g4 = version("geant4-pybind") if engine == "geant4" else None
    except PackageNotFoundError:
        g4 = None
    inputs = {"engine": engine, "seed": sim.seed, "n": len(energies), "energies": _hash(energies.tolist()),
              "geometry": sim.geometry.hash, "geant4_pybind": g4}
    cache = default_data_dir() / "run" / f"{which}-{_hash(inputs)}.h5"

    def make() -> dict[str, Any]:
        if cache.exists():  # made by an earlier run into another folder
            say(f"reference {which}: cached {cache}")
            return {"path": str(cache), "engine": engine, "n": len(energies), "cached": True, "_outputs": [cache]}
        say(f"reference {which}: {len(energies)} {engine} showers -> {cache}")
        res = simulate(cache, energies, sim, workers=cfg["threads"])
        return {"path": str(cache), "engine": engine, "n": len(energies), "cached": False,
                "cpu_s_per_shower": res["cpu_s_per_shower"], "wall_s": res["wall_s"], "_outputs": [cache]}

    return steps.run(f"reference {which}", inputs, make)


def _packaged_points(energies: np.ndarray, geometry_hash: str) -> dict[str, Any] | None:
    """The Geant4 showers shipped in the package (100 per point, default geometry), when they
    cover ``energies`` (fixed points, at most as many showers per point as shipped): the
    points reference is then real Geant4 on every machine and costs no simulation."""
    from caloquant.sim.reference import packaged_reference_path, read_packed_header

    path = packaged_reference_path()
    if path is None:
        return None
    e, meta = read_packed_header(path)  # the showers are expanded only when the cached file is missing
    if meta.get("geometry_hash") != geometry_hash or meta.get("engine") != "geant4":
        return None
    pts, need = np.unique(energies, return_counts=True)
    have = dict(zip(*np.unique(e, return_counts=True)))
    if any(have.get(p, 0) < k for p, k in zip(pts, need)):
        return None
    return {"path": path, "sha256": _file_hash(path), "energies": e, "meta": meta}


def _write_packaged(packed: dict[str, Any], energies: np.ndarray, say: Callable[[str], None]) -> dict[str, Any]:
    from caloquant.data import write_showers
    from caloquant.sim import default_data_dir
    from caloquant.sim.reference import load_packed

    # the first k showers shipped at each point, in the order of ``energies``
    take = np.concatenate([np.flatnonzero(packed["energies"] == p)[:k] for p, k in zip(*np.unique(energies, return_counts=True))])
    meta = packed["meta"]
    attrs = {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}
    cache = default_data_dir() / "run" / f"points-packaged-{packed['sha256']}-{_hash(energies.tolist())}.h5"
    if not cache.exists():
        write_showers(cache, load_packed(packed["path"])[0][take], packed["energies"][take],
                      attrs=attrs | {"source": f"caloquant packaged Geant4 reference {packed['path'].name}"})
    say(f"reference points: {len(take)} Geant4 showers shipped with caloquant ({meta.get('physics_list')}, "
        f"Geant4 {meta.get('geant4_version')}) -> {cache}")
    return {"path": str(cache), "engine": "geant4", "n": int(len(take)), "cached": True, "packaged": True, "_outputs": [cache]}


def _model_step(model: str, run_dir: Path, steps: Steps, threads: int) -> dict[str, Any]:
    """The float32 checkpoint of a model, keyed by the content of the file it comes from
    (a saved checkpoint carries its creation time, so its own bytes change from save to save)."""
    from caloquant.api import load
    from caloquant.models import resolve_model

    src = resolve_model(model)
    if src.is_dir():
        raise CaloquantError(f"{model}: the run starts from a float32 model, not a reduced-precision artifact")
    digest = _file_hash(src)
    slug = _slug(src.stem if Path(model).exists() else model)
    path = run_dir / "models" / slug / "fp32.pt"

    def make() -> dict[str, Any]:
        m = load(model, threads)
        if m.checkpoint is None:
            raise CaloquantError(f"{model}: the run starts from a float32 model, not a reduced-precision artifact")
        m.save(path)
        return {"model": model, "slug": slug, "checkpoint": str(path), "arch": m.spec.arch, "source_sha256": digest,
                "energy_range_gev": list(m.spec.energy_range_gev), "fp32_bytes": path.stat().st_size, "_outputs": [path]}

    return steps.run(f"{slug}: fp32 checkpoint", {"source_sha256": digest}, make)


def _quantize_step(model: dict[str, Any], v: Variant, cfg: dict[str, Any], run_dir: Path, steps: Steps) -> dict[str, Any]:
    from caloquant.api import load, quantize
    from caloquant.timing import TimingConfig

    out = run_dir / "models" / model["slug"] / v.name
    q = cfg["quick"]
    opts: dict[str, Any] = {"time_budget_s": cfg["tune_budget_s"], "seed": cfg["seed"]}
    if q:
        opts |= {"eval_n_per_point": 40, "calib_n": 128, "timing": TimingConfig(window_s=0.3, rounds=2)}
    inputs = {"model": model["_key"], "variant": asdict(v), "threads": cfg["threads"],
              "options": {k: o.to_dict() if hasattr(o, "to_dict") else o for k, o in opts.items()}}

    def make() -> dict[str, Any]:
        m = load(model["checkpoint"], cfg["threads"])
        res = quantize(m, v.precision, backend=v.backend, recipe=v.recipe, head_to_head=v.head_to_head,
                       threads=cfg["threads"], **opts)
        res.save(out)
        man = json.loads((out / "manifest.json").read_text())
        log = json.loads((out / "tuning_log.json").read_text())
        return {"artifact": str(out), "manifest": man, "trials": log["trials"], "chosen": log["chosen"], "_outputs": [out]}

    return steps.run(f"{model['slug']}: quantize {v.name}", inputs, make)


def _sample_step(model: dict[str, Any], v: Variant, src: dict[str, Any], ref: dict[str, Any], which: str, seed: int,
                 cfg: dict[str, Any], run_dir: Path, steps: Steps, tag: str = "") -> dict[str, Any]:
    """Showers of a variant at the reference's energies; the same seed gives every variant of a
    model the same latents (paired with fp32)."""
    from caloquant.api import load
    from caloquant.data import read_showers, write_showers

    path = run_dir / "samples" / model["slug"] / f"{v.name}{tag}_{which}.h5"
    inputs = {"source": src["_key"], "reference": ref["_key"], "seed": seed}

    def make() -> dict[str, Any]:
        m = load(src.get("artifact") or src["checkpoint"], cfg["threads"])
        _, e = read_showers(ref["path"])
        lo, hi = model["energy_range_gev"]
        e = np.clip(e, lo, hi)
        t0 = time.perf_counter()
        showers, energies = m.sample(energies=e, seed=seed, batch=50)
        wall = time.perf_counter() - t0
        write_showers(path, showers, energies, attrs={"model": model["model"], "variant": v.name, "precision": m.precision,
                                                      "backend": m.backend, "seed": seed})
        return {"path": str(path), "n": len(e), "wall_s": round(wall, 2), "self_check": m.self_check, "_outputs": [path]}

    return steps.run(f"{model['slug']}: sample {v.name}{tag} ({which})", inputs, make)


def _validate_step(name: str, ref: dict[str, Any], cand: dict[str, Any], paired: bool, cfg: dict[str, Any], steps: Steps,
                   run_dir: Path, plots: bool) -> dict[str, Any]:
    from caloquant.api import validate
    from caloquant.report import validation_plots

    out = run_dir / "validation" / f"{_slug(name)}.json"
    pdir = run_dir / "plots" / _slug(name)
    inputs = {"ref": ref["_key"], "cand": cand["_key"], "paired": paired, "classifier": cfg["classifier"], "plots": plots}

    def make() -> dict[str, Any]:
        rep = validate(ref["path"], cand["path"], paired=paired, classifier=cfg["classifier"], seed=cfg["seed"]).to_dict()
        write_json(out, rep)
        pngs = [str(p) for p in validation_plots(rep, pdir)] if plots else []
        return {"json": str(out), "plots": pngs, "_outputs": [out, *pngs]}

    return steps.run(f"validate {name}", inputs, make)


def _bench_step(entries: list[dict[str, Any]], cfg: dict[str, Any], run_dir: Path, steps: Steps) -> dict[str, Any]:
    from caloquant.bench import BenchConfig, run_bench
    from caloquant.report import bench_plots
    from caloquant.sim import helper_status

    q = cfg["quick"]
    mc = "geant4" if helper_status()["ready"] else "gflash"
    opts: dict[str, Any] = {
        "threads": (1, 2) if cfg["threads"] >= 2 else (1,), "streams": (1,) if q else (1, 2),
        "batches": (1, 32) if q else (1, 32, 128), "duration_s": cfg["bench_duration_s"], "rounds": 2 if q else 4,
        "ceilings": not q, "mc_engine": mc, "mc_showers_per_point": 2 if q else 3, "mc_budget_s": cfg["mc_budget_s"],
        "seed": cfg["seed"], "oversubscribe": False,  # threads x streams above the core count: the engines cap it anyway
    }
    out = run_dir / "bench.json"
    inputs = {"models": [e["_key"] for e in entries], "options": opts}

    def make() -> dict[str, Any]:
        rep = run_bench([e["bench_name"] for e in entries], BenchConfig(**opts))
        rep["labels"] = {e["bench_name"]: e["label"] for e in entries}
        write_json(out, rep)
        pngs = [str(p) for p in bench_plots(rep, run_dir / "plots" / "bench")]
        return {"json": str(out), "plots": pngs, "_outputs": [out, *pngs]}

    return steps.run("benchmark", inputs, make)


# --- the run -------------------------------------------------------------------------------


def run(config: RunConfig, run_dir: str | Path, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the study into ``run_dir``; returns the report dictionary (report.json)."""
    from caloquant.report.html import write_report
    from caloquant.report.study import summary_table
    from caloquant.sim import draw_energies

    con = console or Console()
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.resolved()
    if cfg["n_flat"] < 20:
        raise CaloquantError(f"n_flat must be at least 20 showers, got {cfg['n_flat']}")
    if cfg["engine"] not in ("geant4", "gflash"):
        raise CaloquantError(f"engine must be geant4 or gflash, got '{cfg['engine']}'")
    t_start = time.perf_counter()
    steps = Steps(out, con)
    say = con.print
    variants = [Variant(**v) for v in cfg["variants"]]

    models = [_model_step(m, out, steps, cfg["threads"]) for m in cfg["models"]]
    lo, hi = models[0]["energy_range_gev"]
    refs = {"flat": _reference(cfg, "flat", draw_energies(cfg["n_flat"], cfg["seed"], energy_range=(lo, hi)), steps, say)}
    if cfg["n_per_point"]:
        pts = np.repeat(np.asarray([p for p in POINTS_GEV if lo <= p <= hi]), cfg["n_per_point"])
        refs["points"] = _reference(cfg, "points", pts, steps, say)

    per_model: list[dict[str, Any]] = []
    bench_entries: list[dict[str, Any]] = []
    for i, model in enumerate(models):
        entry: dict[str, Any] = {"model": model, "variants": {}}
        fp32 = next((v for v in variants if v.is_fp32), Variant("fp32"))
        # the head to head (other tools at the same tolerance, ~5 minutes a model) runs on the first
        # model only: with the Conv2D model trained here the whole study would pass its 30 minutes
        same: dict[tuple[Any, ...], str] = {}  # what a float variant runs as -> the first variant that runs so
        for v in (variants if i == 0 else [replace(v, head_to_head=False) for v in variants]):
            src = model if v.is_fp32 else _quantize_step(model, v, cfg, out, steps)
            if not v.is_fp32 and v.precision != "int8":
                # fp16 on a CPU without fp16 arithmetic runs as bf16: the same computation (same
                # engine, executed precision and paired physics) is not sampled, validated or timed twice
                man = src["manifest"]
                key = (v.backend, man["executed_precision"], man["physics"]["worst_ecal_rel"], man["physics"]["worst_moment_shift"])
                if key in same:
                    entry.setdefault("skipped", {})[v.name] = (f"runs as {man['executed_precision']} on this CPU, the same "
                                                               f"computation as {same[key]} (identical paired physics)")
                    say(f"[dim]{model['slug']} {v.name}: {entry['skipped'][v.name]}; not sampled, validated or timed again[/]")
                    continue
                same[key] = v.name
            samples = {w: _sample_step(model, v, src, r, w, cfg["seed"], cfg, out, steps) for w, r in refs.items()}
            entry["variants"][v.name] = {"variant": asdict(v), "source": src, "samples": samples}
            bench_entries.append({"bench_name": src.get("artifact") or src["checkpoint"], "_key": src["_key"],
                                  "label": f"{model['slug']} {v.name}"})
        # the statistical floor: a second, independent fp32 sample against the first
        closure = _sample_step(model, fp32, model, refs["flat"], "flat", cfg["seed"] + 1, cfg, out, steps, tag="_seed2")
        base = entry["variants"][fp32.name]["samples"]
        entry["closure"] = _validate_step(f"{model['slug']} fp32 closure", base["flat"], closure, False, cfg, steps, out, False)
        for name, ve in entry["variants"].items():
            plots_ref = name in (fp32.name, "int8_physics")
            ve["vs_reference"] = {w: _validate_step(f"{model['slug']} {name} vs {refs[w]['engine']} {w}", refs[w], s, False, cfg,
                                                    steps, out, plots_ref and w == "flat")
                                  for w, s in ve["samples"].items()}
            if name != fp32.name:
                ve["vs_fp32"] = _validate_step(f"{model['slug']} {name} vs fp32", base["flat"], ve["samples"]["flat"], True, cfg,
                                               steps, out, name in ("int8_physics", "int8_naive"))
        per_model.append(entry)
    bench_res = _bench_step(bench_entries, cfg, out, steps)

    con.rule("[bold]report")
    report, rows = _build_report(cfg, refs, per_model, bench_res, steps.log, wall_s=time.perf_counter() - t_start)
    write_report(report, out)
    con.print(summary_table(rows, report["tolerance"], report["mc_label"]))
    con.print(report["recommendation"], highlight=False)
    con.print(f"report: {out / 'report.html'} and {out / 'report.json'} "
              f"({sum(not s['reused'] for s in steps.log)} steps run, {sum(s['reused'] for s in steps.log)} reused, "
              f"{time.perf_counter() - t_start:.0f} s)")
    return report


# --- the report ----------------------------------------------------------------------------


def _load(path: str) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def _png(step: dict[str, Any] | None, name: str) -> Path | None:
    if not step:
        return None
    return next((Path(p) for p in step.get("plots", []) if Path(p).name == name), None)


def _within(rep_fp32: dict[str, Any] | None, manifest: dict[str, Any] | None, ecal_rel: float) -> tuple[bool | None, float | None]:
    """A variant is within tolerance when the tuner found it so and this run's paired
    validation against fp32 agrees in every energy bin (|ratio - 1| <= tolerance + 2 sigma)."""
    if manifest is None:
        return True, None
    bins = [b["sampling_fraction"] for b in (rep_fp32 or {}).get("bins", [])]
    worst = max((abs(s["ratio"] - 1) for s in bins), default=None)
    ok = bool(manifest["meets_tolerance"]) and all(abs(s["ratio"] - 1) <= ecal_rel + 2 * s["ratio_err"] for s in bins)
    return ok, worst


def _build_report(cfg: dict[str, Any], refs: dict[str, Any], per_model: list[dict[str, Any]], bench_res: dict[str, Any],
                  log: list[dict[str, Any]], wall_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from caloquant.precision import Tolerance
    from caloquant.report import bench_machine_line, bench_mc_table, bench_profile_table, bench_results_table
    from caloquant.report import head_to_head_table, moments_table, resolution_table
    from caloquant.report.html import report_dict, section
    from caloquant.report.study import (metric_table, modern_table, moments_summary_table, pixelwise_table,
                                        sampling_fraction_table, sizes_table, speed_table, steps_table, summary_table,
                                        tuner_table)

    tol = Tolerance().to_dict()
    bench = _load(bench_res["json"])
    eng = bench["monte_carlo"].get("engine")
    mc_label = f"{eng['engine']} (measured)" if eng else "Monte Carlo"
    ref_engine = refs["flat"]["engine"]
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    vs_ref: list[tuple[str, dict[str, Any]]] = []
    vs_fp32: list[tuple[str, dict[str, Any]]] = []
    vs_points: list[tuple[str, dict[str, Any]]] = []
    tuners, h2h = [], []
    k = 0
    for entry in per_model:
        slug = entry["model"]["slug"]
        names = list(entry["variants"])
        fp_name = next(n for n, v in entry["variants"].items() if Variant(**v["variant"]).is_fp32)
        base_speed = bench["models"][k + names.index(fp_name)]["best"]["showers_per_s"]
        vs_ref.append((f"{slug} fp32 vs fp32 (second seed: statistical floor)", _load(entry["closure"]["json"])))
        for name, ve in entry["variants"].items():
            label = f"{slug} {name}"
            m = bench["models"][k]
            k += 1
            labels.append(label)
            man = ve["source"].get("manifest")
            rep_ref = _load(ve["vs_reference"]["flat"]["json"])
            vs_ref.append((f"{label} vs {ref_engine}", rep_ref))
            if "points" in ve["vs_reference"]:
                vs_points.append((f"{label} vs {refs['points']['engine']} points", _load(ve["vs_reference"]["points"]["json"])))
            rep_fp = _load(ve["vs_fp32"]["json"]) if "vs_fp32" in ve else None
            if rep_fp is not None:
                vs_fp32.append((label, rep_fp))
            ok, worst = _within(rep_fp, man, tol["ecal_rel"])
            if man is not None:
                tuners.append(tuner_table(label, man, ve["source"]["trials"], ve["source"]["chosen"]))
                h2h.append(head_to_head_table(man))
            b = m["best"]
            rows.append({"model": slug, "variant": name, "executed": m.get("executed_precision") or m["precision"],
                         "backend": m["backend"], "showers_per_s": b["showers_per_s"],
                         "best_point": f"{b['threads']} threads, {b['streams']} streams, batch {b['batch']}",
                         "speedup_vs_fp32": b["showers_per_s"] / base_speed,
                         "speedup_vs_mc": eng["flat_mean_s_per_shower"] * b["showers_per_s"] if eng else None,
                         "speedup_vs_mc_err": eng["flat_mean_s_per_shower_err"] * b["showers_per_s"] if eng else None,
                         "bytes": man["size_bytes"] if man else entry["model"]["fp32_bytes"],
                         "size_ratio": man["size_bytes"] / man["fp32_param_bytes"] if man else 1.0,
                         "layer_precisions": man["layer_precisions"] if man else None,
                         "worst_ecal_dev": worst, "within_tolerance": ok,
                         "auc_vs_reference": (rep_ref.get("classifier") or {}).get("auc"),
                         "metric_vs_reference": (rep_ref.get("optimisation_metric") or {}).get("total")})
    recommendation = _recommend(rows, bench, mc_label)
    first = per_model[0]
    fp32_name = next(n for n, v in first["variants"].items() if Variant(**v["variant"]).is_fp32)
    phys = first["variants"].get("int8_physics")
    fp32_ref = first["variants"][fp32_name]["vs_reference"]["flat"]
    phys_ref = phys["vs_reference"]["flat"] if phys else None
    phys_fp = phys.get("vs_fp32") if phys else None
    naive_fp = first["variants"].get("int8_naive", {}).get("vs_fp32")
    bplots = {Path(p).name: Path(p) for p in bench_res["plots"]}
    shapes = [(f"{who}: shower shape along {ax} ({scale})", _png(st, f"shape_{ax}_{scale}.png"))
              for who, st in ((f"fp32 vs {ref_engine}", fp32_ref), (f"physics int8 vs {ref_engine}", phys_ref),
                              ("physics int8 vs fp32 (same latents)", phys_fp))
              for ax in ("z", "y") for scale in ("linear", "log")]
    bench_note = (f"One benchmark run with every variant; load average before the run "
                  f"{(bench['machine'].get('load_before') or {}).get('loadavg_1_5_15', ['?'])[0]} on "
                  f"{bench['machine']['usable_cores']} usable cores (other processes share this machine: compare within the run).")
    skipped = {f"{e['model']['slug']} {n}": why for e in per_model for n, why in (e.get("skipped") or {}).items()}
    if skipped:
        bench_note += " Not repeated: " + "; ".join(f"{k} ({why})" for k, why in skipped.items()) + "."
    if eng := bench["monte_carlo"].get("engine"):
        lo_e, hi_e = eng["flat_range_gev"]
        bench_note += (f" The Monte Carlo time is {eng['engine']} ({eng.get('physics')}) on caloquant's calorimeter, timed in this "
                       f"run on one core at {len(eng['per_energy'])} energies and averaged over a flat {lo_e:g}-{hi_e:g} GeV spectrum "
                       "(the time per shower grows about linearly with the energy, so the speed-up of one energy differs from "
                       "this mean: see the per-energy table). The data-free analytic EM physics list and this geometry are not "
                       "the full Geant4 set-up the CERN 3DGAN was trained on, which costs more per shower: the literature bar "
                       "(17 s/shower, derived) is that set-up's scale.")
    sections = [
        section("Recommendation", recommendation, [summary_table(rows, tol, mc_label)]),
        section("Speed-up", bench_note, [speed_table(bench, labels), bench_mc_table(bench)],
                [("Speed-up against Monte Carlo (best grid point)", bplots.get("speedup_vs_monte_carlo.png"))]),
        section("Per-op breakdown", "Where the inference time goes, from each engine's own profiler (paper Table 2).",
                [bench_profile_table(bench)], [("Per-op time profile", bplots.get("profile_pies.png")),
                                               ("Achieved fraction of the matmul ceiling", bplots.get("roofline_fraction.png"))]),
        section("Throughput over threads and streams", "Paper Fig. 4.", [],
                [("Throughput against threads x streams", bplots.get("throughput_threads_streams.png"))], [bench_results_table(bench)]),
        section("Shower shapes", f"Paper Figs. 5-6: mean energy per slice, linear and log, with ratio panels; reference: {ref_engine}.",
                [], shapes),
        section("Moments", "Paper Table 3: shower position and width against the reference and, paired, against fp32.",
                [moments_summary_table(vs_ref, f"Moment shifts against the {ref_engine} reference, all energies"),
                 moments_summary_table(vs_fp32, "Moment shifts against fp32 (same latents)") if vs_fp32 else None],
                [], [moments_table(_load(fp32_ref["json"])), moments_table(_load(phys_fp["json"])) if phys_fp else None]),
        section("Validation number", "Paper Table 4: the 3DGAN authors' single number.", [metric_table(vs_ref)]),
        section("Pixel-wise", "Paper Table 5: cell-by-cell difference from fp32 on the same latent vectors.",
                [pixelwise_table(vs_fp32)] if vs_fp32 else [],
                [("physics int8 vs fp32: average-shower projections", _png(phys_fp, "projections.png")),
                 ("naive int8 vs fp32: average-shower projections", _png(naive_fp, "projections.png"))]),
        section("Sampling fraction", "Ecal/Ep against Ep, and the energy resolution.",
                [sampling_fraction_table(vs_ref), sampling_fraction_table(vs_points) if vs_points else None,
                 sampling_fraction_table(vs_fp32) if vs_fp32 else None],
                [(f"fp32 vs {ref_engine}: sampling fraction", _png(fp32_ref, "sampling_fraction.png")),
                 (f"physics int8 vs {ref_engine}: sampling fraction", _png(phys_ref, "sampling_fraction.png")),
                 (f"fp32 vs {ref_engine}: energy resolution", _png(fp32_ref, "energy_resolution.png"))],
                [resolution_table(_load(fp32_ref["json"]))]),
        section("Modern metrics", "Classifier test, Fréchet and kernel physics distances, separation power.", [modern_table(vs_ref)],
                [(f"physics int8 vs {ref_engine}: classifier ROC", _png(phys_ref, "classifier_roc.png")),
                 (f"physics int8 vs {ref_engine}: high-level features", _png(phys_ref, "features.png"))]),
        section("Tuner", "The tuner's trials (speed against physics: its frontier) and per-layer decisions.", tuners + h2h),
        section("Model sizes", "", [sizes_table(rows)]),
        section("Machine", bench_machine_line(bench).replace("[yellow]", "").replace("[/]", ""), [steps_table(log)]),
    ]
    meta = {"subtitle": f"{', '.join(cfg['models'])}; reference: {ref_engine}, {refs['flat']['n']} showers flat"
                        + (f" and {refs['points']['n']} at fixed energies" if "points" in refs else "")
                        + f"; {'quick' if cfg['quick'] else 'full'} study; this invocation {wall_s:.0f} s (finished steps reused)",
            "config": cfg, "tolerance": tol, "mc_label": mc_label, "recommendation": recommendation, "variants": rows,
            "skipped_variants": skipped,
            "references": {w: {k2: v for k2, v in r.items() if not k2.startswith("_")} for w, r in refs.items()},
            "steps": log, "wall_s": round(wall_s, 1), "machine": bench["machine"], "bench_json": bench_res["json"]}
    return report_dict("caloquant study report", sections, meta), rows


def _recommend(rows: list[dict[str, Any]], bench: dict[str, Any], mc_label: str) -> str:
    """One paragraph: the fastest variant within tolerance on this CPU, and what it beats."""
    cpu = bench["machine"]["cpu_model"]
    good = [r for r in rows if r["within_tolerance"]]
    if not good:
        return f"No variant is within tolerance on this CPU ({cpu}); deploy nothing reduced."
    best = max(good, key=lambda r: r["showers_per_s"])
    faster_bad = [r for r in rows if not r["within_tolerance"] and r["showers_per_s"] > best["showers_per_s"]]
    mc = (f", {best['speedup_vs_mc']:,.0f}±{best['speedup_vs_mc_err']:,.0f}x the {mc_label} Monte Carlo"
          if best["speedup_vs_mc"] else "")
    txt = (f"On this CPU ({cpu}), deploy {best['model']} {best['variant']} ({best['backend']}, runs {best['executed']}): "
           f"{best['showers_per_s']:.0f} showers/s at {best['best_point']}, {best['speedup_vs_fp32']:.2f}x PyTorch fp32{mc}, "
           f"{best['size_ratio']:.2f}x the fp32 size. It is the fastest variant within tolerance")
    if best["worst_ecal_dev"] is not None:
        txt += f" (worst |Ecal/Ecal_fp32 - 1| {best['worst_ecal_dev']:.4f} over the energy bins, same latents)"
    if best["auc_vs_reference"] is not None:
        txt += f"; against the reference its classifier AUC is {best['auc_vs_reference']:.3f}"
    txt += "."
    if faster_bad:
        txt += (" Faster but outside tolerance (the tuner's paired check of energy and moments, or this run's paired "
                "validation): " + ", ".join(
                    f"{r['variant']} ({r['showers_per_s']:.0f}/s, worst |Ecal ratio - 1| "
                    + ("-" if r["worst_ecal_dev"] is None else f"{r['worst_ecal_dev']:.3f}") + ")" for r in faster_bad) + ".")
    return txt
