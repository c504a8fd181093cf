"""``generate``: a sharded shower dataset made by Dask workers, resumable and fault tolerant.

The client plans the shards (:mod:`caloquant.distributed.plan`), submits one task per
missing shard (:func:`caloquant.distributed.worker.make_shard`) and records every finished
shard's count and checksum in ``manifest.json``, rewritten atomically as shards arrive.
So at any moment the directory holds only complete shard files (each written atomically by
its worker) and a manifest listing the ones verified so far:

* a worker that dies: Dask runs its task again on another worker (the shard's content is a
  function of its index, so a repeat writes the same bytes);
* Ctrl-C: the client records what is finished, cancels the rest and stops its local
  cluster; ``resume=True`` re-checks the recorded shards' checksums and makes the others.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.data import SHARD_MANIFEST, compression_options, provenance, verify_shards
from caloquant.distributed.cluster import connect, dashboard_available, local_cluster, quiet_dask, security_from
from caloquant.distributed.plan import Shard, check_out_dir, manifest, plan_shards, run_id, shard_seed
from caloquant.distributed.producers import ShardProducer, producer_for
from caloquant.distributed.worker import ShardTask, make_shard, threads_per_host, usable_cores
from caloquant.errors import CaloquantError
from caloquant.fileio import write_json


@dataclass
class GenerateProgress:
    """Reported after every finished shard (and once at the start)."""

    showers_done: int
    showers_total: int
    shards_done: int
    shards_total: int
    showers_per_s: float  # this session's showers over its wall time since tasks were submitted
    eta_s: float | None


@dataclass
class GenerateResult:
    out_dir: Path
    manifest: dict[str, Any]
    shards_made: int
    shards_reused: int
    seconds: float
    showers_per_s: float  # showers made in this session / wall time from submission to the last shard


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _energy_spec(n: int, energy_range: tuple[float, float] | None, energies: np.ndarray | None,
                 producer: ShardProducer, allow_extrapolation: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    import hashlib

    from caloquant.data import check_chunk

    if (energy_range is None) == (energies is None):
        raise CaloquantError("give exactly one of energy_range (LO:HI, GeV) or energies (one per shower)")
    lo_ok, hi_ok = producer.energy_range_gev
    if energies is not None:
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        if e.shape[0] != n:
            raise CaloquantError(f"energies holds {e.shape[0]} values but n is {n}")
        check_chunk(np.zeros((0,)), e, "energies")
        lo, hi = float(e.min()), float(e.max())
        spec = {"kind": "list", "sha256": hashlib.sha256(e.tobytes()).hexdigest(), "min_gev": lo, "max_gev": hi}
    else:
        lo, hi = (float(x) for x in energy_range)  # type: ignore[union-attr]
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or not lo < hi:
            raise CaloquantError(f"energy range {lo:g}:{hi:g} must satisfy 0 < LO < HI (GeV)")
        e, spec = None, {"kind": "uniform", "range_gev": [lo, hi]}
    if producer.identity()["kind"] == "engine" and hi > hi_ok:
        raise CaloquantError(f"energy must be at most {hi_ok:g} GeV for the engine, got {hi:g}")
    if not allow_extrapolation and (lo < lo_ok or hi > hi_ok):
        raise CaloquantError(f"energies {lo:g}-{hi:g} GeV fall outside the model's valid range {lo_ok:g}-{hi_ok:g} GeV; "
                             "allow extrapolation to force")
    return spec, e


def generate(
    out_dir: str | Path,
    n: int,
    *,
    model: str | Path | None = None,
    engine: str | None = None,
    energy_range: tuple[float, float] | None = None,
    energies: np.ndarray | None = None,
    shard_size: int | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    security: Any = None,
    resume: bool = False,
    batch: int = 64,
    compression: str = "lz4",
    allow_extrapolation: bool = False,
    engine_config: Any = None,
    connect_timeout: float = 10.0,
    retries: int = 2,
    progress: Callable[[GenerateProgress], None] | None = None,
    log: Callable[[str], None] = print,
) -> GenerateResult:
    """Make ``n`` showers in shards of ``shard_size`` under ``out_dir`` (see module docstring).

    model / engine: a built-in model name, checkpoint or quantize artifact directory (default:
    the built-in ``cern-3dgan``), or a Monte Carlo engine name (``geant4``, ``gflash``;
    ``engine_config``: a ``caloquant.sim.SimConfig`` for geometry, physics and gun, its seed
    replaced by ``seed``).
    energy_range (LO, HI) GeV drawn uniformly per shard, or energies: one per shower.
    shard_size: showers per shard (default 1000 for models, 20 for Geant4, 500 for GFlash).
    scheduler: address of an existing Dask scheduler (tcp:// or tls://; ``security`` from
    :func:`security_from`, default: Dask's configuration); else a local cluster of ``workers``
    processes (default: cores // 2, engines: cores) with ``threads`` engine threads each
    (default: cores // workers, engines: 1).
    Workers must see ``out_dir`` and the model at the same paths (a shared file system). On a
    remote cluster without ``threads``, a task uses its host's cores divided by the task slots
    (Dask threads) of all workers on that host.
    """
    import caloquant

    t_start = time.perf_counter()
    out = Path(out_dir).absolute()
    plan_shards(n, shard_size or 1)  # refuse a bad n or shard size first
    compression_options(compression)  # and an unknown codec
    if retries < 0:
        raise CaloquantError(f"retries must be >= 0, got {retries}")
    if threads is not None and threads < 1:
        raise CaloquantError(f"threads must be at least 1, got {threads}")
    if scheduler is not None and workers is not None:
        raise CaloquantError("workers applies to the local cluster; with a scheduler, the cluster has its own workers")
    producer = producer_for(model, engine, batch, seed, engine_config)
    shard_size = shard_size or producer.default_shard_size
    shards = plan_shards(n, shard_size)
    e_spec, e_all = _energy_spec(n, energy_range, energies, producer, allow_extrapolation)
    identity = {"producer": producer.identity(), "seed": int(seed), "n": int(n), "shard_size": int(shard_size),
                "energies": e_spec, "compression": str(compression), "format": "3dgan"}
    previous = check_out_dir(out, identity, resume)  # read-only; refuses another run's directory
    done: dict[int, dict[str, Any]] = {}
    if previous is not None:
        recorded = previous["shards"]
        done = {int(s["index"]): s for s, good in zip(recorded, verify_shards(out, recorded)) if good}
        bad = len(recorded) - len(done)
        log(f"resume: {len(done)} of {len(shards)} shards complete and valid"
            + (f"; {bad} failed the checksum and are made again" if bad else ""))
    if threads is None:
        threads = producer.engine_threads  # None: each remote worker uses its cores / task slots
    run = _Run(out, shards, producer, identity, e_all, previous, done, compression, threads, retries, progress, log,
               caloquant.__version__)
    if len(done) == len(shards):  # nothing to make: no cluster needed
        return run.finish(t_start, None)

    with quiet_dask(), _sigterm_as_interrupt():
        cluster = None
        if scheduler is not None:
            client = connect(scheduler, security if security is not None else security_from(), connect_timeout)
            log(f"connected to Dask scheduler {scheduler} ({len(client.scheduler_info(n_workers=-1)['workers'])} workers)")
        else:
            cores = usable_cores()
            one = producer.engine_threads == 1  # single-threaded engine: one worker per core
            workers = workers if workers is not None else (cores if one else max(1, cores // 2))
            threads = threads if threads is not None else (producer.engine_threads or max(1, cores // workers))
            cluster, client = local_cluster(workers, threads)
            dash = f"dashboard {cluster.dashboard_link}" if dashboard_available() else "no dashboard (install bokeh)"
            log(f"local Dask cluster on 127.0.0.1: {workers} worker process(es) x {threads} engine thread(s); {dash}")
        try:
            run.threads = threads
            return run.execute(client, t_start)
        finally:
            _close(client, cluster)


def _close(client: Any, cluster: Any) -> None:
    """Stop the client (and the local cluster: its workers die, so no task of ours goes on)."""
    with contextlib.suppress(Exception):  # already gone: nothing left to release
        client.close(timeout=5)
    if cluster is not None:
        with contextlib.suppress(Exception):  # its workers die with this process at the latest
            cluster.close(timeout=10)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A batch system ends a job with SIGTERM: handle it like Ctrl-C (record the finished
    shards, stop the workers). Only the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _stale_parts(out: Path) -> list[Path]:
    """Temporary shard files a dead worker left behind (ShowerWriter's ``.NAME.*.part``)."""
    return [p for p in out.glob(".shard-*.part") if p.is_file()]


@dataclass
class _Run:
    """One client session of a run: submits the missing shards, records the finished ones."""

    out: Path
    shards: list[Shard]
    producer: ShardProducer
    identity: dict[str, Any]
    e_all: np.ndarray | None
    previous: dict[str, Any] | None
    done: dict[int, dict[str, Any]]
    compression: str
    threads: int | None
    retries: int
    progress: Callable[[GenerateProgress], None] | None
    log: Callable[[str], None]
    version: str
    made: int = 0
    reused: int = 0

    def __post_init__(self) -> None:
        prev = self.previous or {}
        self.created = prev.get("created_utc", _now())
        self.worker_versions: list[dict[str, str]] = list(prev.get("worker_versions", []))
        self.reused = len(self.done)

    def save(self, complete: bool = False) -> dict[str, Any]:
        m = manifest(self.identity, len(self.shards), self.producer.describe(), self.producer.grid, list(self.done.values()),
                     complete, self.created, _now(), self.worker_versions)
        write_json(self.out / SHARD_MANIFEST, m)
        return m

    def report(self, t_submit: float) -> None:
        if self.progress is None:
            return
        el = time.perf_counter() - t_submit
        rate = self.made / el if el > 0 and self.made else 0.0
        total = sum(s.n for s in self.shards)
        left = total - sum(int(d["n"]) for d in self.done.values())
        self.progress(GenerateProgress(total - left, total, len(self.done), len(self.shards), rate, left / rate if rate else None))

    def tasks(self, host_threads: dict[str, int] | None) -> list[ShardTask]:
        d = self.producer.describe()
        rid = run_id(self.identity)
        # no creation time in the shard files: a shard is byte-identical whenever it is made
        attrs = {k: v for k, v in provenance(model=d.get("path"), engine=d.get("engine"), precision=d.get("precision"),
                                             backend=d.get("backend"), seed=self.identity["seed"], run_id=rid).items()
                 if k != "created_utc"}
        rng = None if self.e_all is not None else tuple(self.identity["energies"]["range_gev"])
        return [ShardTask(s.index, s.start, s.n, str(self.out / s.path), shard_seed(self.identity["seed"], s.index), rng,  # type: ignore[arg-type]
                          None if self.e_all is None else self.e_all[s.start : s.start + s.n], self.producer,
                          self.compression, self.threads, attrs, self.version, host_threads)
                for s in self.shards if s.index not in self.done]

    def execute(self, client: Any, t_start: float) -> GenerateResult:
        from distributed import as_completed

        self.out.mkdir(parents=True, exist_ok=True)
        for p in _stale_parts(self.out):
            p.unlink(missing_ok=True)
        self.save()
        rid = run_id(self.identity)
        host_threads = threads_per_host(client) if self.threads is None else None
        futures = [client.submit(make_shard, task, key=f"caloquant-shard-{rid}-{task.index}", pure=False,
                                 retries=self.retries, priority=-task.index) for task in self.tasks(host_threads)]
        t_submit = time.perf_counter()
        self.report(t_submit)
        last_save = time.perf_counter()
        try:
            for fut in as_completed(futures, loop=client.loop):
                res = self._result(fut)
                wv = res.pop("versions")
                if wv not in self.worker_versions:
                    self.worker_versions.append(wv)
                self.done[int(res["index"])] = res
                self.made += int(res["n"])
                if time.perf_counter() - last_save > 0.5:
                    self.save()
                    last_save = time.perf_counter()
                self.report(t_submit)
        except BaseException as exc:
            self.save()  # record what is finished before anything else can go wrong
            with contextlib.suppress(Exception):  # best effort: a second failure must not hide the first
                client.cancel(futures, force=True)
            if isinstance(exc, KeyboardInterrupt):
                self.log(f"interrupted: {len(self.done)} of {len(self.shards)} shards complete in {self.out}; "
                         "continue with resume (--resume)")
            raise
        wall = time.perf_counter() - t_submit
        return self.finish(t_start, wall)

    @staticmethod
    def _result(fut: Any) -> dict[str, Any]:
        index = str(fut.key).rsplit("-", 1)[-1]
        try:
            return fut.result()
        except CaloquantError as exc:
            raise CaloquantError(f"shard {index} failed: {exc}") from None
        except Exception as exc:
            raise CaloquantError(f"shard {index} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None

    def finish(self, t_start: float, wall: float | None) -> GenerateResult:
        if len(self.done) != len(self.shards):
            raise CaloquantError(f"{self.out}: only {len(self.done)} of {len(self.shards)} shards finished")
        m = self.save(complete=True)
        # every shard is in: temporary files left are a dead worker's (a worker Dask gave up for
        # dead but still writing would find its file gone and its result is not wanted anyway)
        for p in _stale_parts(self.out):
            p.unlink(missing_ok=True)
        rate = self.made / wall if wall else 0.0
        return GenerateResult(self.out, m, len(self.shards) - self.reused, self.reused, time.perf_counter() - t_start, rate)
