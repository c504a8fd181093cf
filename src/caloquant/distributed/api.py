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

What to make is a :class:`~caloquant.distributed.config.GenerateConfig`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.data import SHARD_MANIFEST, provenance, verify_shards
from caloquant.distributed.cluster import (
    connect,
    dashboard_available,
    local_cluster,
    quiet_dask,
    security_from,
)
from caloquant.distributed.config import GenerateConfig
from caloquant.distributed.plan import (
    Shard,
    check_out_dir,
    manifest,
    plan_shards,
    run_id,
    shard_seed,
)
from caloquant.distributed.producers import ShardProducer, producer_for
from caloquant.distributed.worker import ShardTask, make_shard, threads_per_host
from caloquant.errors import CaloquantError
from caloquant.fileio import check_output, write_json
from caloquant.runtime import usable_cores


@dataclass
class GenerateProgress:
    """Reported after every finished shard (and once at the start)."""

    showers_done: int
    showers_total: int
    shards_done: int
    shards_total: int
    showers_per_s: float  # this session's showers / its wall time since tasks were submitted
    eta_s: float | None


@dataclass
class GenerateResult:
    out_dir: Path
    manifest: dict[str, Any]
    shards_made: int
    shards_reused: int
    seconds: float
    # showers made in this session / wall time from submission to the last shard
    showers_per_s: float


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _energy_spec(cfg: GenerateConfig, producer: ShardProducer) -> dict[str, Any]:
    """The run's energies as its identity records them, checked against what the producer
    can make (the config has checked them on their own already)."""
    import hashlib

    lo_ok, hi_ok = producer.energy_range_gev
    if cfg.energies is not None:
        e = cfg.energies
        lo, hi = float(e.min()), float(e.max())
        spec = {
            "kind": "list",
            "sha256": hashlib.sha256(e.tobytes()).hexdigest(),
            "min_gev": lo,
            "max_gev": hi,
        }
    else:
        assert cfg.energy_range is not None  # the config holds exactly one of the two
        lo, hi = cfg.energy_range
        spec = {"kind": "uniform", "range_gev": [lo, hi]}
    if producer.identity()["kind"] == "engine" and hi > hi_ok:
        raise CaloquantError(f"energy must be at most {hi_ok:g} GeV for the engine, got {hi:g}")
    if not cfg.allow_extrapolation and (lo < lo_ok or hi > hi_ok):
        raise CaloquantError(
            f"energies {lo:g}-{hi:g} GeV fall outside the model's valid range "
            f"{lo_ok:g}-{hi_ok:g} GeV; allow extrapolation "
            "(--allow-extrapolation) to force"
        )
    return spec


def _as_config(config: GenerateConfig | int | None, options: dict[str, Any]) -> GenerateConfig:
    """The one place where the keyword form of earlier releases, ``generate(out_dir, n,
    model=..., ...)``, becomes a :class:`GenerateConfig` (scripts and notebooks keep working)."""
    if isinstance(config, GenerateConfig):
        if options:
            raise CaloquantError(
                "give the options in the GenerateConfig or as keywords, not both "
                f"(got {', '.join(sorted(options))} as keywords)"
            )
        return config
    if config is not None:
        if "n" in options:
            raise TypeError("generate() got the number of showers twice (n)")
        options = {"n": config, **options}
    return GenerateConfig(**options)


def generate(
    out_dir: str | Path,
    config: GenerateConfig | int | None = None,
    *,
    progress: Callable[[GenerateProgress], None] | None = None,
    log: Callable[[str], None] = print,
    **options: Any,
) -> GenerateResult:
    """Make ``config.n`` showers in shards under ``out_dir`` (see the module docstring and
    :class:`GenerateConfig` for the options).

    ``progress`` is called after every finished shard (and once at the start), ``log`` with
    one-line messages (the cluster used, what a resume found). The keyword form
    ``generate(out_dir, n, model=..., energy_range=..., ...)`` builds the config from the
    keywords. Workers must see ``out_dir`` and the model at the same paths (a shared file
    system).
    """
    from caloquant.version import __version__

    cfg = _as_config(config, options)
    t_start = time.perf_counter()
    out = check_output(out_dir, folder=True).absolute()
    producer = producer_for(cfg.model, cfg.engine, cfg.batch, cfg.seed, cfg.engine_config)
    shard_size = cfg.shard_size or producer.default_shard_size
    shards = plan_shards(cfg.n, shard_size)
    e_spec = _energy_spec(cfg, producer)
    identity = {
        "producer": producer.identity(),
        "seed": int(cfg.seed),
        "n": int(cfg.n),
        "shard_size": int(shard_size),
        "energies": e_spec,
        "compression": str(cfg.compression),
        "format": "3dgan",
    }
    # read-only; refuses another run's directory
    previous = check_out_dir(out, identity, cfg.resume)
    done: dict[int, dict[str, Any]] = {}
    if previous is not None:
        recorded = previous["shards"]
        good = verify_shards(out, recorded)
        done = {int(s["index"]): s for s, ok in zip(recorded, good) if ok}
        bad = len(recorded) - len(done)
        listed = {int(s["index"]) for s in recorded}
        # a shard file the manifest does not list (finished while an interrupted run shut down)
        # has no recorded checksum to verify it by: it is made again, the same bytes
        unlisted = sum(s.index not in listed and (out / s.path).exists() for s in shards)
        log(
            f"resume: {len(done)} of {len(shards)} shards complete and valid"
            + (f"; {bad} failed the checksum and are made again" if bad else "")
            + (f"; {unlisted} shard files not in the manifest are made again" if unlisted else "")
        )
    # None: each remote worker uses its cores / task slots
    threads = cfg.threads if cfg.threads is not None else producer.engine_threads
    run = _Run(
        out,
        shards,
        producer,
        identity,
        cfg.energies,
        previous,
        done,
        cfg.compression,
        threads,
        cfg.retries,
        progress,
        log,
        __version__,
    )
    if len(done) == len(shards):  # nothing to make: no cluster needed
        return run.finish(t_start, None)

    with quiet_dask(), _sigterm_as_interrupt():
        cluster = None
        if cfg.scheduler is not None:
            security = cfg.security if cfg.security is not None else security_from()
            client = connect(cfg.scheduler, security, cfg.connect_timeout)
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
            log(f"connected to Dask scheduler {cfg.scheduler} ({n_workers} workers)")
        else:
            cores = usable_cores()
            one = producer.engine_threads == 1  # single-threaded engine: one worker per core
            workers = cfg.workers
            if workers is None:
                workers = cores if one else max(1, cores // 2)
            if threads is None:
                threads = max(1, cores // workers)
            cluster, client = local_cluster(workers, threads)
            dash = (
                f"dashboard {cluster.dashboard_link}"
                if dashboard_available()
                else "no dashboard (install bokeh)"
            )
            log(
                f"local Dask cluster on 127.0.0.1: {workers} worker process(es) x {threads} "
                f"engine thread(s); {dash}"
            )
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
        m = manifest(
            self.identity,
            len(self.shards),
            self.producer.describe(),
            self.producer.grid,
            list(self.done.values()),
            complete,
            self.created,
            _now(),
            self.worker_versions,
        )
        write_json(self.out / SHARD_MANIFEST, m)
        return m

    def report(self, t_submit: float) -> None:
        if self.progress is None:
            return
        el = time.perf_counter() - t_submit
        rate = self.made / el if el > 0 and self.made else 0.0
        total = sum(s.n for s in self.shards)
        left = total - sum(int(d["n"]) for d in self.done.values())
        self.progress(
            GenerateProgress(
                total - left,
                total,
                len(self.done),
                len(self.shards),
                rate,
                left / rate if rate else None,
            )
        )

    def tasks(self, host_threads: dict[str, int] | None) -> list[ShardTask]:
        d = self.producer.describe()
        rid = run_id(self.identity)
        # no creation time in the shard files: a shard is byte-identical whenever it is made
        prov = provenance(
            model=d.get("path"),
            engine=d.get("engine"),
            precision=d.get("precision"),
            backend=d.get("backend"),
            seed=self.identity["seed"],
            run_id=rid,
        )
        attrs = {k: v for k, v in prov.items() if k != "created_utc"}
        rng = None if self.e_all is not None else tuple(self.identity["energies"]["range_gev"])
        seed, e_all = self.identity["seed"], self.e_all
        # a writeable copy of the shard's energies: the config holds them read-only, and Dask
        # keeps that flag on the way to the worker
        return [
            ShardTask(
                s.index,
                s.start,
                s.n,
                str(self.out / s.path),
                shard_seed(seed, s.index),
                rng,  # type: ignore[arg-type]
                None if e_all is None else e_all[s.start : s.start + s.n].copy(),
                self.producer,
                self.compression,
                self.threads,
                attrs,
                self.version,
                host_threads,
            )
            for s in self.shards
            if s.index not in self.done
        ]

    def execute(self, client: Any, t_start: float) -> GenerateResult:
        from distributed import as_completed

        self.out.mkdir(parents=True, exist_ok=True)
        for p in _stale_parts(self.out):
            p.unlink(missing_ok=True)
        self.save()
        rid = run_id(self.identity)
        host_threads = threads_per_host(client) if self.threads is None else None
        futures = [
            client.submit(
                make_shard,
                task,
                key=f"caloquant-shard-{rid}-{task.index}",
                pure=False,
                retries=self.retries,
                priority=-task.index,
            )
            for task in self.tasks(host_threads)
        ]
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
            # best effort: a second failure must not hide the first
            with contextlib.suppress(Exception):
                client.cancel(futures, force=True)
            if isinstance(exc, KeyboardInterrupt):
                # the interrupt carries what is left: the CLI says it as its one line (exit 130)
                raise KeyboardInterrupt(
                    f"interrupted: {len(self.done)} of {len(self.shards)} shards complete in "
                    f"{self.out}; continue with resume (--resume)"
                ) from None
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
            msg = " ".join(str(exc).split())[:200]
            raise CaloquantError(f"shard {index} failed: {type(exc).__name__}: {msg}") from None

    def finish(self, t_start: float, wall: float | None) -> GenerateResult:
        if len(self.done) != len(self.shards):
            raise CaloquantError(
                f"{self.out}: only {len(self.done)} of {len(self.shards)} shards finished"
            )
        m = self.save(complete=True)
        # every shard is in: temporary files left are a dead worker's (a worker Dask gave up for
        # dead but still writing would find its file gone and its result is not wanted anyway)
        for p in _stale_parts(self.out):
            p.unlink(missing_ok=True)
        rate = self.made / wall if wall else 0.0
        return GenerateResult(
            self.out,
            m,
            len(self.shards) - self.reused,
            self.reused,
            time.perf_counter() - t_start,
            rate,
        )
