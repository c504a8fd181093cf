"""Run a simulation: chunks of showers over worker processes, streamed, resumable, atomic.

Showers are cut into fixed-size chunks. Each Geant4 shower is seeded from (seed, shower
index) and each GFlash chunk from (seed, chunk index), so a file does not depend on the
number of workers. Chunks are appended to a temporary output in order as they finish (the
file appears under its name only when complete). Geant4 chunks are also saved atomically in a
hidden folder beside the output (``.OUT.h5.chunks-<key>/``, the key hashing every argument
that changes the showers): a run interrupted by Ctrl-C or a kill leaves no output file, and a
rerun with the same arguments reuses the finished chunks; the folder is removed on success, and
after a failure before any chunk finished (nothing to resume from).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path, check_output
from caloquant.options import (
    MAX_ENERGY_GEV as MAX_ENERGY_GEV,  # the engines' limit, 10 TeV
    MAX_WORKERS,
    check_float,
    check_int,
)
from caloquant.sim.engines import (
    ENGINES as ENGINES,
    SimConfig,
    check_energies,
    init_worker,
    make_engine,
    work_chunk,
)

CELL_CUT_GEV = 1e-6  # the 3DGAN data's cell threshold: cells below it are set to 0
SUM_NAMES = ("e_silicon", "e_silicon_outside_grid", "e_absorber", "e_escaped", "g4_steps")
SUM_DOC = {
    "e_silicon": "energy deposited in all silicon of the pad grid, before the cell cut (GeV)",
    "e_silicon_outside_grid": "energy deposited in silicon outside the pad grid (GeV)",
    "e_absorber": "energy deposited in passive material: absorber and gaps (GeV)",
    "e_escaped": "energy carried out of the calorimeter (kinetic, plus 2 m_e per positron) (GeV)",
    "g4_steps": "Geant4 steps in the calorimeter (0 for GFlash)",
}


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


def _last_error_line(log: str | None) -> str:
    """The last line of a worker's log that reads like an error (the log itself is removed
    with the chunk folder when no chunk was finished)."""
    try:
        text = Path(log).read_text(errors="replace")[-20000:] if log else ""
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().strip("-=*W ")]
    hits = [ln for ln in lines if "rror" in ln or "xception" in ln or "fatal" in ln.lower()]
    line = (hits or lines or [""])[-1]
    if line.startswith(("caloquant.errors.CaloquantError: ", "CaloquantError: ")):
        line = line.split(": ", 1)[1]
    return line[:200]


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
                            ex.submit(
                                work_chunk, i, starts[i], energies[starts[i] : starts[i] + size]
                            )
                        )
                    fin, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in fin:
                        i, cells, sums, cpu = f.result()
                        finished(i, cells, sums, cpu, True)
            except cf.process.BrokenProcessPool:
                detail = _last_error_line(log)
                kept = workdir is not None and any(workdir.glob("chunk_*.npz"))
                raise CaloquantError(
                    "a simulation worker died"
                    + (f": {detail}" if detail else "")
                    + (f" (see {log})" if kept and log else "")
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
    from caloquant.data import ShowerWriter, check_format, provenance

    out = check_output(output)
    cfg = config or SimConfig()
    e = check_energies(energies)
    workers = check_int(workers, "--workers", 1, MAX_WORKERS)
    check_format(fmt)
    cell_cut_gev = check_float(cell_cut_gev, "--cell-cut (GeV)", minimum=0.0)
    cfg.check()
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
        _drop_unused(workdir)
        raise KeyboardInterrupt from None
    except BaseException:
        _drop_unused(workdir)  # a failed start leaves no hidden chunk folder
        raise
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


def _drop_unused(workdir: Path | None) -> None:
    """Remove a chunk folder that holds no finished chunk (nothing to resume from)."""
    if workdir is not None and workdir.is_dir() and not any(workdir.glob("chunk_*.npz")):
        shutil.rmtree(workdir, ignore_errors=True)


def draw_energies(
    n: int,
    seed: int,
    energy: float | None = None,
    energy_range: tuple[float, float] | None = None,
    energies: np.ndarray | None = None,
) -> np.ndarray:
    """Incident energies (GeV) as in ``caloquant sample`` (same seed, same energies), checked
    like its options (``caloquant.data.Energies``): 0 < E <= 10 TeV, n <= 1,000,000."""
    from caloquant.data import Energies

    return Energies(n, seed, energy, energy_range, energies).values()
