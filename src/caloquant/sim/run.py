"""Run a simulation: chunks of showers over worker processes, streamed, resumable, atomic.

Showers are cut into fixed-size chunks. Each Geant4 shower is seeded from (seed, shower
index) and each GFlash chunk from (seed, chunk index), so a file does not depend on the
number of workers. Chunks are appended to a temporary output in order as they finish (the
file appears under its name only when complete). Geant4 chunks are also saved atomically in a
hidden folder beside the output (``.OUT.h5.chunks-<key>/``, the key hashing every argument
that changes the showers): a run interrupted by Ctrl-C or a kill leaves no output file, and a
rerun with the same arguments reuses the finished chunks; the folder is removed on success.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path
from caloquant.sim.geant4 import Gun, Physics
from caloquant.sim.geometry import Geometry, load_geometry

ENGINES = ("geant4", "gflash")
MAX_ENERGY_GEV = 10_000.0
CELL_CUT_GEV = 1e-6  # the 3DGAN data's cell threshold: cells below it are set to 0
SUM_NAMES = ("e_silicon", "e_silicon_outside_grid", "e_absorber", "e_escaped", "g4_steps")
SUM_DOC = {
    "e_silicon": "energy deposited in all silicon of the pad grid, before the cell cut (GeV)",
    "e_silicon_outside_grid": "energy deposited in silicon outside the pad grid (GeV)",
    "e_absorber": "energy deposited in passive material: absorber and gaps (GeV)",
    "e_escaped": "energy carried out of the calorimeter (kinetic, plus 2 m_e per positron) (GeV)",
    "g4_steps": "Geant4 steps in the calorimeter (0 for GFlash)",
}


@dataclass
class SimConfig:
    """Everything that determines the showers of a run (besides the energies)."""

    engine: str = "geant4"
    geometry: Geometry = field(default_factory=load_geometry)
    physics: Physics = field(default_factory=Physics)
    gun: Gun = field(default_factory=Gun)
    seed: int = 0
    gflash: dict[str, float] | None = None  # GFlash constants; None = the shipped fit
    chunk_size: int | None = None

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise CaloquantError(f"engine must be one of {', '.join(ENGINES)}, got '{self.engine}'")
        self.gun.check()
        if self.engine == "geant4":
            self.physics.check()
        elif self.gun.position_sigma_mm > 0 or self.gun.angle_sigma_mrad > 0:
            raise CaloquantError("the GFlash engine has no gun smearing (use the Geant4 engine)")
        elif self.physics.list != "em-analytic":
            raise CaloquantError("physics lists apply to the Geant4 engine only, not to GFlash")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise CaloquantError(f"chunk size must be positive, got {self.chunk_size}")

    @property
    def chunk(self) -> int:
        return self.chunk_size or (10 if self.engine == "geant4" else 500)

    def key(self, energies: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {
                    "engine": self.engine,
                    "geometry": self.geometry.hash,
                    "physics": self.physics.to_dict(),
                    "gun": vars(self.gun) | {},
                    "seed": self.seed,
                    "chunk": self.chunk,
                    "gflash": self.gflash if self.engine == "gflash" else None,
                },
                sort_keys=True,
                default=str,
            ).encode()
        )
        h.update(np.ascontiguousarray(energies, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def check_energies(energies: np.ndarray) -> np.ndarray:
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if e.size < 1:
        raise CaloquantError("number of showers must be positive")
    if not np.all(np.isfinite(e)):
        raise CaloquantError("energy is NaN or Inf")
    if np.any(e <= 0):
        raise CaloquantError(f"energy must be > 0 GeV (min {e.min():g})")
    if np.any(e > MAX_ENERGY_GEV):
        raise CaloquantError(
            f"energy must be at most {MAX_ENERGY_GEV:g} GeV (10 TeV), got {e.max():g}"
        )
    return e


def check_writable(path: Path) -> None:
    """Fail before simulating when the output cannot be written."""
    if path.is_dir():
        raise CaloquantError(f"{path}: is a directory, expected an output file name")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaloquantError(f"{path}: cannot create output directory ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CaloquantError(f"{path}: output directory {parent} is not writable")


# ---- worker side -----------------------------------------------------------------------
_ENGINE: Any = None


def init_worker(cfg: SimConfig, log: str | None) -> None:
    """Build the engine once per worker process (Geant4: one run manager per process); the
    initializer of every process pool that simulates (here and in :mod:`caloquant.sim.timing`)."""
    global _ENGINE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _ENGINE = make_engine(cfg, log)


def worker_engine() -> Any:
    """The engine :func:`init_worker` built in this worker process."""
    if _ENGINE is None:
        raise CaloquantError("no simulation engine in this process (init_worker was not run)")
    return _ENGINE


def make_engine(cfg: SimConfig, log: str | None = None) -> Any:
    if cfg.engine == "geant4":
        from caloquant.sim.geant4 import Session, redirect_output

        redirect_output(log)
        return _Geant4Engine(Session(cfg.geometry, cfg.physics, cfg.gun), cfg.seed)
    from caloquant.sim.gflash import GFlash

    return _GFlashEngine(GFlash(cfg.geometry, cfg.gflash, particle=cfg.gun.particle), cfg.seed)


class _Geant4Engine:
    def __init__(self, session: Any, seed: int) -> None:
        self.session, self.seed = session, seed

    def run(
        self, chunk_index: int, start: int, energies: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from caloquant.sim.geant4 import shower_seeds

        return self.session.run(
            energies, shower_seeds(self.seed, np.arange(start, start + len(energies)))
        )


class _GFlashEngine:
    def __init__(self, gf: Any, seed: int) -> None:
        self.gf, self.seed = gf, seed

    def run(
        self, chunk_index: int, start: int, energies: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, chunk_index, 0x6F1A5]))
        )
        return self.gf.simulate(energies, rng)


def _work(
    chunk_index: int, start: int, energies: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, float]:
    t0 = time.process_time()
    cells, sums = _ENGINE.run(chunk_index, start, energies)
    return chunk_index, cells, sums, time.process_time() - t0


# ---- parent side -----------------------------------------------------------------------
def _save_chunk(d: Path, i: int, cells: np.ndarray, sums: np.ndarray, cpu_s: float) -> None:
    with atomic_path(d / f"chunk_{i:06d}.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, cells=cells, sums=sums, cpu_s=np.float64(cpu_s))


def _load_chunk(d: Path, i: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    p = d / f"chunk_{i:06d}.npz"
    if not p.is_file():
        return None
    try:
        with np.load(p) as z:
            return z["cells"], z["sums"], float(z["cpu_s"])
    except (OSError, ValueError, KeyError, EOFError):
        return None  # damaged by a kill mid-write: recompute


class _Terminate(Exception):
    pass


def _raise_terminate(signum: int, frame: Any) -> None:
    raise _Terminate()


class _InOrder:
    """Hands chunks to ``emit`` in index order, holding the ones that finish early."""

    def __init__(self, emit: Callable[[int, np.ndarray, np.ndarray, float], None]) -> None:
        self.emit, self.next, self.held = emit, 0, {}

    def put(self, i: int, cells: np.ndarray, sums: np.ndarray, cpu: float) -> None:
        self.held[i] = (cells, sums, cpu)
        while self.next in self.held:
            self.emit(self.next, *self.held.pop(self.next))
            self.next += 1


def run_chunks(
    cfg: SimConfig,
    energies: np.ndarray,
    workdir: Path | None,
    workers: int,
    emit: Callable[[int, np.ndarray, np.ndarray, float], None],
    progress: Callable[[int, int], None] | None = None,
    log: str | None = None,
) -> dict[str, Any]:
    """Simulate every chunk and pass it to ``emit`` in order (streaming). With a ``workdir``,
    finished chunks are also saved there and chunks found there are reused (resumable)."""
    n = len(energies)
    size = cfg.chunk
    starts = list(range(0, n, size))
    order = _InOrder(emit)
    have = {
        i: c
        for i in range(len(starts))
        if workdir is not None and (c := _load_chunk(workdir, i)) is not None
    }
    todo = [i for i in range(len(starts)) if i not in have]
    done = 0

    def finished(i: int, cells: np.ndarray, sums: np.ndarray, cpu: float, fresh: bool) -> None:
        nonlocal done
        if fresh and workdir is not None:
            _save_chunk(workdir, i, cells, sums, cpu)
        order.put(i, cells, sums, cpu)
        done += len(cells)
        if progress:
            progress(done, n)

    for i, (cells, sums, cpu) in have.items():
        finished(i, cells, sums, cpu, False)
    if progress and not have:
        progress(0, n)
    t0 = time.perf_counter()
    if todo and cfg.engine == "gflash":
        # in-process threads: the compiled kernel releases the GIL, so K threads use K cores
        # without the start-up and pickling cost of worker processes
        eng = make_engine(cfg)
        eng.run(0, 0, energies[:1])  # compile or load the kernel once, before the threads

        def one(i: int) -> tuple[int, np.ndarray, np.ndarray, float]:
            c0 = time.thread_time()
            cells, sums = eng.run(i, starts[i], energies[starts[i] : starts[i] + size])
            return i, cells, sums, time.thread_time() - c0

        with cf.ThreadPoolExecutor(max_workers=workers) as tx:
            queue, running = list(todo), set()
            while queue or running:
                while queue and len(running) < 2 * workers:
                    running.add(tx.submit(one, queue.pop(0)))
                fin, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for f in fin:
                    finished(*f.result(), True)
    elif todo:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(cfg, log)
        ) as ex:
            pending: set[cf.Future] = set()
            queue = list(todo)
            try:
                while queue or pending:
                    while queue and len(pending) < 2 * workers:
                        i = queue.pop(0)
                        pending.add(
                            ex.submit(_work, i, starts[i], energies[starts[i] : starts[i] + size])
                        )
                    fin, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in fin:
                        i, cells, sums, cpu = f.result()
                        finished(i, cells, sums, cpu, True)
            except cf.process.BrokenProcessPool:
                raise CaloquantError(
                    f"a simulation worker died (see {log or 'its output'})"
                ) from None
            except BaseException:
                for f in pending:
                    f.cancel()
                for proc in list((getattr(ex, "_processes", None) or {}).values()):
                    proc.terminate()  # our own workers: stop them now, not after their chunk
                raise
    return {"reused_chunks": len(have), "wall_s": time.perf_counter() - t0}


def simulate(
    output: str | os.PathLike[str],
    energies: np.ndarray,
    config: SimConfig | None = None,
    *,
    workers: int = 1,
    fmt: str = "3dgan",
    cell_cut_gev: float = CELL_CUT_GEV,
    progress: Callable[[int, int], None] | None = None,
    keep_chunks: bool = False,
) -> dict[str, Any]:
    """Simulate one shower per incident energy (GeV) and write them to ``output``.

    Cells hold the energy deposited in silicon per pad (GeV, not calibrated to the beam
    energy); cells below ``cell_cut_gev`` are set to 0. Per-shower sums (silicon, silicon
    outside the grid, absorber, escaped) go to extra datasets; attributes record engine,
    physics, cut, geometry (with hash), Geant4 and caloquant versions and the seed.
    Chunks are written as they finish, in order, into a temporary file renamed at the end.
    Geant4 runs keep finished chunks beside the output until success (resumable); GFlash
    runs are fast enough to redo. Returns a summary (path, n, wall time, showers/s, CPU s per
    shower).
    """
    from caloquant.data import FORMATS, ShowerWriter, provenance

    cfg = config or SimConfig()
    cfg.check()
    e = check_energies(energies)
    if workers < 1:
        raise CaloquantError(f"workers must be at least 1, got {workers}")
    if fmt not in FORMATS:
        raise CaloquantError(f"format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if not cell_cut_gev >= 0:
        raise CaloquantError(f"cell cut must be >= 0 GeV, got {cell_cut_gev}")
    out = Path(output)
    check_writable(out)
    g4v = None
    workdir = None
    if cfg.engine == "geant4":
        from caloquant.sim.helper import build_helper, geant4_version

        build_helper()  # compile once here, not in every worker
        g4v = geant4_version()
        workdir = out.parent / f".{out.name}.chunks-{cfg.key(e)}"
        workdir.mkdir(parents=True, exist_ok=True)
    attrs = provenance(
        engine=cfg.engine,
        physics_list=cfg.physics.label if cfg.engine == "geant4" else "gflash",
        production_cut_mm=cfg.physics.cut_mm if cfg.engine == "geant4" else None,
        geometry=cfg.geometry.name,
        geometry_hash=cfg.geometry.hash,
        geometry_json=json.dumps(cfg.geometry.to_dict()),
        geant4_version=g4v,
        particle=cfg.gun.particle,
        seed=cfg.seed,
        cell_cut_gev=cell_cut_gev,
        gun_position_sigma_mm=cfg.gun.position_sigma_mm,
        gun_angle_sigma_mrad=cfg.gun.angle_sigma_mrad,
        gflash_constants=json.dumps(cfg.gflash) if cfg.engine == "gflash" and cfg.gflash else None,
        units="GeV, energy deposited in silicon (not calibrated to the beam energy)",
    )
    n = len(e)
    sums = np.zeros((n, len(SUM_NAMES)))
    cpu = [0.0]
    old = signal.signal(signal.SIGTERM, _raise_terminate)
    t0 = time.perf_counter()
    try:
        with atomic_path(out, suffix=".h5") as tmp:
            with ShowerWriter(tmp, cfg.geometry.grid, fmt, attrs, expected_n=n, compression=1) as w:  # type: ignore[arg-type]

                def emit(i: int, cells: np.ndarray, sm: np.ndarray, c: float) -> None:
                    s = i * cfg.chunk
                    if cell_cut_gev > 0:
                        cells = np.where(cells < cell_cut_gev, np.float32(0), cells)
                    w.append(cells, e[s : s + len(cells)])
                    sums[s : s + len(cells)] = sm
                    cpu[0] += c

                stats = run_chunks(
                    cfg,
                    e,
                    workdir,
                    workers,
                    emit,
                    progress,
                    log=str(workdir / "geant4.log") if workdir is not None else None,
                )
            with h5py.File(tmp, "a") as h5:
                for k, name in enumerate(SUM_NAMES):
                    ds = h5.create_dataset(
                        name, data=sums[:, k].astype(np.float64), compression="gzip"
                    )
                    ds.attrs["doc"] = SUM_DOC[name]
    except _Terminate:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, old)
    if workdir is not None and not keep_chunks:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - t0
    return {
        "path": str(out),
        "n": n,
        "engine": cfg.engine,
        "wall_s": wall,
        "showers_per_s": n / wall if wall > 0 else None,
        "cpu_s_per_shower": cpu[0] / n,
        "reused_chunks": stats["reused_chunks"],
        "geometry_hash": cfg.geometry.hash,
    }


def draw_energies(
    n: int,
    seed: int,
    energy: float | None = None,
    energy_range: tuple[float, float] | None = None,
    energies: np.ndarray | None = None,
) -> np.ndarray:
    """Incident energies (GeV) as in ``caloquant sample`` (same seed, same energies), checked
    for 0 < E <= 10 TeV."""
    from caloquant.data import energies_for

    if n < 1:
        raise CaloquantError(f"number of showers must be positive, got {n}")
    return check_energies(energies_for(n, seed, energy, energy_range, energies))
