"""The cached steps of `caloquant run` (``caloquant.run`` orders them): the settings they read
(``StudyVariant``, ``StudySettings``), the content-keyed step cache (``Steps``) and one function
per step: the Monte Carlo reference, a model's float32 checkpoint, a quantized variant, showers,
a validation, the benchmark. Each returns its JSON-ready record, reused when a step of the same
name finished with the same inputs; files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from caloquant.fileio import file_sha256, write_json

if TYPE_CHECKING:  # the report stage loads matplotlib: imported when the report is made
    from caloquant.report.study_inputs import Checked

Record = dict[str, Any]  # a step's JSON-ready result, with its "_key"


@dataclass(frozen=True)
class StudyVariant:
    """A variant the study builds of every model: a precision on a backend by a recipe (``fp32``:
    the PyTorch checkpoint itself). Not the benchmark's ``Variant``, a model loaded to time."""

    name: str
    precision: str = "fp32"
    backend: str = "torch"
    recipe: str = "physics"
    head_to_head: bool = False

    @property
    def is_fp32(self) -> bool:
        return self.precision == "fp32" and self.backend == "torch"


@dataclass(frozen=True)
class StudySettings:
    """Every setting of one study, defaults filled in (``RunConfig.resolve``): what the steps
    read, report.json's ``config`` (``to_dict``) and the values in the steps' cache keys."""

    models: tuple[str, ...]
    quick: bool
    threads: int
    seed: int
    n_flat: int  # reference showers flat in the model's energy range
    n_per_point: int  # reference showers at each of run.POINTS_GEV
    engine: str  # reference engine: geant4 or gflash
    tune_budget_s: float  # per quantize run
    bench_duration_s: float  # per benchmark grid point
    mc_budget_s: float  # the Monte Carlo timing in the benchmark
    classifier: bool
    variants: tuple[StudyVariant, ...]  # fp32 first: every variant is compared with it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "models": list(self.models),
            "variants": [asdict(v) for v in self.variants],
        }


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "model"


class Steps:
    """The content-keyed steps of one run folder: ``run(name, inputs, fn)`` returns ``fn()``'s
    JSON-ready result, or the one stored under ``RUN_DIR/steps/`` when a step of that name
    finished with the same inputs (and its output files still exist). The key hashes the inputs
    (settings, the keys of the steps it reads) and the caloquant version."""

    def __init__(self, run_dir: Path, console: Console) -> None:
        from caloquant.version import __version__

        self.run_dir, self.dir, self.version = run_dir, run_dir / "steps", __version__
        self.console, self.say = console, console.print
        self.log: list[dict[str, Any]] = []

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[], Record]) -> Record:
        key = _hash({"step": name, "inputs": inputs, "caloquant": self.version})
        path = self.dir / f"{_slug(name)}.json"
        if path.exists():
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError:
                rec = {}
            if rec.get("key") == key and all(Path(p).exists() for p in rec.get("outputs", [])):
                sec = rec["seconds"]
                self.console.print(f"[dim]- {name}: reused (key {key}, {sec:.0f} s when made)[/]")
                self.log.append({"step": name, "key": key, "reused": True, "seconds": sec})
                return dict(rec["result"], _key=key)
        self.console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn()
        sec = round(time.perf_counter() - t0, 2)  # as stored
        outputs = [str(p) for p in result.pop("_outputs", [])]
        write_json(
            path,
            {
                "step": name,
                "key": key,
                "inputs": inputs,
                "seconds": sec,
                "outputs": outputs,
                "result": result,
            },
        )
        self.console.print(f"[green]done[/] {name} in {sec:.0f} s")
        self.log.append({"step": name, "key": key, "reused": False, "seconds": sec})
        return dict(result, _key=key)


def reference_step(s: StudySettings, which: str, energies: np.ndarray, steps: Steps) -> Record:
    """Monte Carlo showers at ``energies``, in the per-user cache (shared by every run dir)."""
    from importlib.metadata import PackageNotFoundError, version

    from caloquant.sim import SimConfig, default_data_dir, helper_status, simulate
    from caloquant.sim.reference import packaged_points, write_packaged_points

    engine, e_hash, say = s.engine, _hash(energies.tolist()), steps.say
    if (
        which == "points"
        and engine == "geant4"
        and (packed := packaged_points(energies, SimConfig().geometry.hash))
    ):
        return steps.run(
            f"reference {which}",
            {"packaged": packed["sha256"], "energies": e_hash},
            lambda: write_packaged_points(packed, energies, say),
        )
    if engine == "geant4" and not (st := helper_status())["ready"]:
        say(
            f"Geant4 engine unavailable ({st.get('reason')}): reference made with the GFlash "
            "engine (fitted to Geant4)"
        )
        engine = "gflash"
    sim = SimConfig(engine=engine, seed=s.seed + (0 if which == "flat" else 7))
    try:
        g4 = version("geant4-pybind") if engine == "geant4" else None
    except PackageNotFoundError:
        g4 = None
    inputs = {
        "engine": engine,
        "seed": sim.seed,
        "n": len(energies),
        "energies": e_hash,
        "geometry": sim.geometry.hash,
        "geant4_pybind": g4,
    }
    cache = default_data_dir() / "run" / f"{which}-{_hash(inputs)}.h5"
    made = {"path": str(cache), "engine": engine, "n": len(energies)}

    def make() -> Record:
        if cache.exists():  # made by an earlier run into another folder
            say(f"reference {which}: cached {cache}")
            return {**made, "cached": True, "_outputs": [cache]}
        say(f"reference {which}: {len(energies)} {engine} showers -> {cache}")
        res = simulate(cache, energies, sim, workers=s.threads)
        return {
            **made,
            "cached": False,
            "cpu_s_per_shower": res["cpu_s_per_shower"],
            "wall_s": res["wall_s"],
            "_outputs": [cache],
        }

    return steps.run(f"reference {which}", inputs, make)


def model_step(model: str, steps: Steps) -> Record:
    """The float32 checkpoint of a model, keyed by the content of the file it comes from
    (a saved checkpoint carries its creation time, so its own bytes change from save to save)."""
    from caloquant.models import model_ref, save_checkpoint

    ref = model_ref(model)
    ref.require_float()  # the study starts from a float32 model: say so before any work
    digest = file_sha256(ref.path)[:16]
    slug = _slug(ref.path.stem if Path(model).exists() else model)
    path = steps.run_dir / "models" / slug / "fp32.pt"

    def make() -> Record:
        ckpt = ref.float_checkpoint()
        save_checkpoint(path, ckpt)
        return {
            "model": model,
            "slug": slug,
            "checkpoint": str(path),
            "arch": ckpt.spec.arch,
            "source_sha256": digest,
            "energy_range_gev": list(ckpt.spec.energy_range_gev),
            "fp32_bytes": path.stat().st_size,
            "_outputs": [path],
        }

    return steps.run(f"{slug}: fp32 checkpoint", {"source_sha256": digest}, make)


def quantize_step(model: Record, v: StudyVariant, s: StudySettings, steps: Steps) -> Record:
    from caloquant.api import load, quantize
    from caloquant.timing import RaceConfig, TimingConfig

    out = steps.run_dir / "models" / model["slug"] / v.name
    opts: dict[str, Any] = {"time_budget_s": s.tune_budget_s, "seed": s.seed}
    if s.quick:
        opts |= {
            "eval_n_per_point": 40,
            "calib_n": 128,
            "timing": TimingConfig(window_s=0.3, rounds=2),
            "race": RaceConfig(min_rounds=3, max_rounds=8, budget_s=20.0),
        }
    inputs = {
        "model": model["_key"],
        "variant": asdict(v),
        "threads": s.threads,
        "options": {k: o.to_dict() if hasattr(o, "to_dict") else o for k, o in opts.items()},
    }

    def make() -> Record:
        m = load(model["checkpoint"], s.threads)
        res = quantize(
            m,
            v.precision,
            backend=v.backend,
            recipe=v.recipe,
            head_to_head=v.head_to_head,
            threads=s.threads,
            **opts,
        )
        res.save(out)
        man = json.loads((out / "manifest.json").read_text())
        log = json.loads((out / "tuning_log.json").read_text())
        return {
            "artifact": str(out),
            "manifest": man,
            "trials": log["trials"],
            "chosen": log["chosen"],
            "_outputs": [out],
        }

    return steps.run(f"{model['slug']}: quantize {v.name}", inputs, make)


def sample_step(
    model: Record,
    v: StudyVariant,
    src: Record,
    ref: Record,
    which: str,
    seed: int,
    s: StudySettings,
    steps: Steps,
    tag: str = "",
) -> Record:
    """Showers of a variant at the reference's energies; the same seed gives every variant of a
    model the same latents (paired with fp32)."""
    from caloquant.api import load
    from caloquant.data import read_showers, write_showers

    path = steps.run_dir / "samples" / model["slug"] / f"{v.name}{tag}_{which}.h5"
    inputs = {"source": src["_key"], "reference": ref["_key"], "seed": seed}

    def make() -> Record:
        m = load(src.get("artifact") or src["checkpoint"], s.threads)
        _, e = read_showers(ref["path"])
        e = np.clip(e, *model["energy_range_gev"])
        t0 = time.perf_counter()
        showers, energies = m.sample(energies=e, seed=seed, batch=50)
        wall = time.perf_counter() - t0
        write_showers(
            path,
            showers,
            energies,
            attrs={
                "model": model["model"],
                "variant": v.name,
                "precision": m.precision,
                "backend": m.backend,
                "seed": seed,
            },
        )
        return {
            "path": str(path),
            "n": len(e),
            "wall_s": round(wall, 2),
            "self_check": m.self_check,
            "_outputs": [path],
        }

    return steps.run(f"{model['slug']}: sample {v.name}{tag} ({which})", inputs, make)


def validate_step(
    name: str, ref: Record, cand: Record, paired: bool, plots: bool, s: StudySettings, steps: Steps
) -> Checked:
    from caloquant.api import validate
    from caloquant.report import validation_plots
    from caloquant.report.study_inputs import Checked

    out = steps.run_dir / "validation" / f"{_slug(name)}.json"
    pdir = steps.run_dir / "plots" / _slug(name)
    inputs = {
        "ref": ref["_key"],
        "cand": cand["_key"],
        "paired": paired,
        "classifier": s.classifier,
        "plots": plots,
    }

    def make() -> Record:
        rep = validate(
            ref["path"], cand["path"], paired=paired, classifier=s.classifier, seed=s.seed
        ).to_dict()
        write_json(out, rep)
        pngs = [str(p) for p in validation_plots(rep, pdir)] if plots else []
        return {"json": str(out), "plots": pngs, "_outputs": [out, *pngs]}

    rec = steps.run(f"validate {name}", inputs, make)
    return Checked(Path(rec["json"]), tuple(Path(p) for p in rec["plots"]))


def bench_step(entries: list[Record], s: StudySettings, steps: Steps) -> Record:
    from caloquant.bench import BenchConfig, run_bench
    from caloquant.report import bench_plots
    from caloquant.sim import helper_status

    q = s.quick
    opts: dict[str, Any] = {
        "threads": (1, 2) if s.threads >= 2 else (1,),
        "streams": (1,) if q else (1, 2),
        "batches": (1, 32) if q else (1, 32, 128),
        "duration_s": s.bench_duration_s,
        "rounds": 2 if q else 4,
        "ceilings": not q,
        "mc_engine": "geant4" if helper_status()["ready"] else "gflash",
        "mc_showers_per_point": 2 if q else 3,
        "mc_budget_s": s.mc_budget_s,
        "seed": s.seed,
        "oversubscribe": False,  # threads x streams above the core count: the engines cap it
    }
    out = steps.run_dir / "bench.json"

    def make() -> Record:
        rep = run_bench([e["bench_name"] for e in entries], BenchConfig(**opts))
        rep["labels"] = {e["bench_name"]: e["label"] for e in entries}
        write_json(out, rep)
        pngs = [str(p) for p in bench_plots(rep, steps.run_dir / "plots" / "bench")]
        return {"json": str(out), "plots": pngs, "_outputs": [out, *pngs]}

    return steps.run("benchmark", {"models": [e["_key"] for e in entries], "options": opts}, make)
