"""Getting a Dask client: a local cluster on this machine, or an existing scheduler.

A Dask scheduler runs whatever tasks it is sent, so the local cluster listens on 127.0.0.1
only (scheduler, workers and dashboard), and a remote scheduler can be reached over TLS with
mutual authentication (Dask's ``Security``; see docs/generate.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError


def security_from(
    tls_ca_file: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Any:
    """A ``distributed.Security`` for the client.

    With files: the CA that signed the cluster's certificates, this client's certificate and
    key (PEM; the key may be inside the certificate file), encryption required. Without:
    Dask's configuration (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``
    and ``distributed.comm.require-encryption`` in a Dask YAML file or
    ``DASK_DISTRIBUTED__COMM__TLS__...`` variables).
    """
    from distributed import Security

    given = {"tls_ca_file": tls_ca_file, "tls_client_cert": tls_cert, "tls_client_key": tls_key}
    if all(v is None for v in given.values()):
        return Security()
    if tls_ca_file is None or tls_cert is None:
        raise CaloquantError(
            "TLS needs a CA file and a client certificate (--tls-ca-file and --tls-cert; "
            "--tls-key unless the key is in the certificate file)"
        )
    flags = {"tls_ca_file": "--tls-ca-file", "tls_client_cert": "--tls-cert"}
    for name, v in given.items():
        if v is not None and not Path(v).is_file():
            raise CaloquantError(f"{v}: {flags.get(name, '--tls-key')} file not found")
    files = {k: str(v) for k, v in given.items() if v is not None}
    return Security(require_encryption=True, **files)


def _probe(address: str, security: Any, timeout: float) -> None:
    """Open and close one connection to the scheduler (handshake included), in a fresh event
    loop on a helper thread: a failed ``Client(...)`` leaves an object whose finaliser prints
    a traceback, so reachability is settled before a Client is made."""
    from distributed.comm import connect

    async def run() -> None:
        comm = await connect(address, timeout=timeout, **security.get_connection_args("client"))
        await comm.close()

    err: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # reported on the calling thread
            err.append(exc)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout + 5.0)
    if th.is_alive():
        raise CaloquantError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s")
    if err:
        reason = " ".join(str(err[0]).split())[:160] or type(err[0]).__name__
        raise CaloquantError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({reason})"
        )


def connect(address: str, security: Any = None, timeout: float = 10.0) -> Any:
    """A Client of the scheduler at ``address`` (tcp://HOST:PORT or tls://HOST:PORT)."""
    from distributed import Client

    security = security if security is not None else security_from()
    has_tls = security.get_connection_args("client").get("ssl_context")
    if address.startswith("tls://") and not has_tls:
        raise CaloquantError(
            f"scheduler {address} uses TLS but no certificates are configured "
            "(give --tls-ca-file, --tls-cert, --tls-key, or set distributed.comm.tls "
            "in the Dask configuration)"
        )
    _probe(address, security, timeout)
    try:
        return Client(address, security=security, timeout=timeout, set_as_default=False)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160]
        msg = f"cannot connect to the Dask scheduler at {address}: {reason}"
        raise CaloquantError(msg) from None


def dashboard_available() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def local_cluster(workers: int, threads: int) -> tuple[Any, Any]:
    """A cluster of ``workers`` processes on 127.0.0.1, one task at a time each, every engine
    with ``threads`` intra-op threads (workers x threads = the cores: no oversubscription)."""
    from distributed import Client, LocalCluster

    env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    dashboard = "127.0.0.1:0" if dashboard_available() else None  # a free port
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=dashboard,
        silence_logs=logging.CRITICAL,
        env=env,
        preload=["caloquant.distributed.worker"],
    )
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return cluster, client


@contextlib.contextmanager
def quiet_dask(level: int = logging.ERROR) -> Iterator[None]:
    """Keep Dask's own warnings (lost workers, retries: handled and reported by us) off the
    terminal; the previous level is restored."""
    log = logging.getLogger("distributed")
    old = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(old)
