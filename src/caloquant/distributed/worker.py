"""The task a worker runs: make one shard, write it atomically, return its count and checksum.

Runs in a Dask worker process (any host that sees the output directory at the same path).
Only small data crosses the network: the producer's description and the shard's parameters
in, a dict with ``n``, ``sha256`` and provenance out.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.runtime import usable_cores


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for shard ``index`` (picklable, a few hundred bytes plus the
    shard's energies when they come from a file)."""

    index: int
    start: int
    n: int
    path: str  # absolute path of the shard file
    seed: int
    energy_range: tuple[float, float] | None
    energies: np.ndarray | None
    producer: Any  # a ShardProducer
    compression: str
    threads: int | None
    attrs: dict[str, Any]
    caloquant_version: str
    # engine threads per task on each host (remote clusters)
    host_threads: dict[str, int] | None = None


def dask_setup(worker: Any) -> None:
    """Dask preload hook for the workers of caloquant's local cluster: Ctrl-C in a terminal
    reaches the whole process group, but stopping is the client's job (it records the finished
    shards, then closes the cluster), so the workers ignore SIGINT instead of dying with a
    traceback mid-shard."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _threads(task: ShardTask) -> int:
    """Engine threads: as asked, else this host's share (cores / task slots of all workers on
    the host, measured when the run started), else 1 (a worker that joined later)."""
    if task.threads is not None:
        return task.threads
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        host = get_address_host(get_worker().address)
    except ValueError:  # not inside a worker
        return 1
    return (task.host_threads or {}).get(host, 1)


def threads_per_host(client: Any) -> dict[str, int]:
    """For each host of the cluster: its cores divided by the task slots of all its workers, so
    that concurrent shards never ask for more threads than the host has."""
    from distributed.comm import get_address_host

    cores = client.run(usable_cores)
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for addr, info in client.scheduler_info(n_workers=-1)["workers"].items():
        h = get_address_host(addr)
        slots[h] = slots.get(h, 0) + int(info.get("nthreads", 1))
        host_cores[h] = max(host_cores.get(h, 1), int(cores.get(addr, 1)))
    return {h: max(1, host_cores[h] // max(1, s)) for h, s in slots.items()}


def make_shard(task: ShardTask) -> dict[str, Any]:
    """Produce, write (atomically, via ShowerWriter) and checksum one shard."""
    from caloquant.data import ShowerWriter, energies_for, file_sha256
    from caloquant.distributed.plan import versions
    from caloquant.distributed.producers import ShardWork
    from caloquant.version import __version__

    if __version__ != task.caloquant_version:
        raise CaloquantError(
            f"worker on {socket.gethostname()} runs caloquant {__version__}, "
            f"the client {task.caloquant_version}; install the same version "
            "everywhere"
        )
    t0 = time.perf_counter()
    threads = _threads(task)
    if task.energies is not None:
        e = np.asarray(task.energies, dtype=np.float64)
    else:
        e = energies_for(task.n, task.seed, energy_range=task.energy_range)
    out = Path(task.path)
    # no timestamps or thread counts in the file: a shard is byte-identical whoever makes it
    attrs = dict(task.attrs, shard_index=task.index, shard_seed=str(task.seed))
    work = ShardWork(task.index, task.start, e, task.seed, threads)
    with ShowerWriter(
        out,
        task.producer.grid,
        "3dgan",
        attrs,
        expected_n=task.n,
        compression=task.compression,
        first_event_id=task.start,
    ) as w:
        for showers, eb in task.producer.batches(work):
            w.append(showers, eb)
    return {
        "index": task.index,
        "path": out.name,
        "n": task.n,
        "sha256": file_sha256(out),
        "event_id": [task.start, task.start + task.n],
        "energy_gev": [float(e.min()), float(e.max())],
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 3),
        "engine_threads": threads,
        "host": socket.gethostname(),
        "versions": versions(),
    }
