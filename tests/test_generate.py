"""caloquant generate: sharded, checksummed, resumable production on Dask, and the sharded reader.

Real Dask clusters of worker processes on 127.0.0.1 and a random 3DGAN checkpoint; kept small
(tens of showers per run, 2 workers) for 2 cores.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant.data import (
    SHARD_MANIFEST,
    ShardedReader,
    file_sha256,
    open_sharded,
    open_showers,
    read_shard_manifest,
    verify_shards,
)
from caloquant.distributed import GenerateConfig, generate, plan_shards, shard_seed
from caloquant.errors import CaloquantError
from tests.conftest import REPO
from tests.helpers import assert_one_line_error

distributed = pytest.importorskip("distributed")

RANGE = (100.0, 500.0)


@pytest.fixture(scope="module")
def cluster():
    """Two single-task worker processes on 127.0.0.1, shared by the tests of this module."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as c:
        yield c


def run(out: Path, ckpt: Path, cluster, n: int, shard_size: int, progress=None, **kw):
    kw.setdefault("energy_range", RANGE)
    kw.setdefault("threads", 1)
    cfg = GenerateConfig(
        n, model=ckpt, shard_size=shard_size, scheduler=cluster.scheduler_address, **kw
    )
    return generate(out, cfg, progress=progress, log=lambda m: None)


@pytest.fixture(scope="module")
def dataset(cluster, random_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "ds"
    run(out, random_checkpoint, cluster, 50, 20)
    return out


def shard_shas(out: Path) -> dict[str, str]:
    return {s["path"]: s["sha256"] for s in read_shard_manifest(out)["shards"]}


def test_plan_is_a_function_of_n_shard_size_and_seed() -> None:
    shards = plan_shards(50, 20)
    assert [(s.start, s.n, s.path) for s in shards] == [
        (0, 20, "shard-00000.h5"),
        (20, 20, "shard-00001.h5"),
        (40, 10, "shard-00002.h5"),
    ]
    assert shard_seed(0, 1) == shard_seed(0, 1)
    assert len({shard_seed(0, 0), shard_seed(0, 1), shard_seed(1, 0)}) == 3


def test_config_checks_every_option_before_any_work(tmp_path: Path) -> None:
    ok = GenerateConfig(10, energy_range=[100, 500])
    assert (
        ok.energy_range == (100.0, 500.0)
        and ok.shard_size is None
        and GenerateConfig.default("compression") == "lz4"
    )
    bad = [
        ({"n": 0}, "--n"),
        ({"shard_size": 0}, "--shard-size"),
        ({"workers": 0}, "--workers"),
        ({"threads": 0}, "--threads"),
        ({"batch": 0}, "--batch"),
        ({"retries": -1}, "--retries"),
        ({"connect_timeout": 0}, "--connect-timeout"),
        ({"seed": -1}, "--seed"),
        ({"compression": "snappy"}, "--compression"),
        ({"energy_range": (500, 100)}, "--energy-range"),
        ({"energy_range": (100, float("inf"))}, "--energy-range"),
        ({"model": "x", "engine": "gflash"}, "exactly one"),
        ({"engine": "pythia"}, "unknown engine"),
        ({"scheduler": "tcp://127.0.0.1:1", "workers": 2}, "--workers"),
        ({"energy_range": None}, "exactly one"),
        ({"energies": np.full(10, 200.0)}, "exactly one"),
        ({"energy_range": None, "energies": np.full(7, 200.0)}, "7 values"),
    ]
    for change, needle in bad:
        with pytest.raises(CaloquantError, match=needle):
            GenerateConfig(**{"n": 10, "energy_range": RANGE, **change})
    e = np.full(10, 200.0)
    cfg = GenerateConfig(10, energies=e)
    assert (
        not cfg.energies.flags.writeable and e.flags.writeable
    )  # a frozen copy; the caller's array stays theirs
    # the keyword form of earlier releases maps onto the config; both at once is refused
    with pytest.raises(CaloquantError, match="shard size"):
        generate(tmp_path / "x", 10, energy_range=RANGE, shard_size=0)
    with pytest.raises(CaloquantError, match="not both"):
        generate(tmp_path / "x", cfg, seed=1)
    assert not (tmp_path / "x").exists()


def test_another_runs_directory_is_described_in_words(tmp_path: Path) -> None:
    """Resuming into another run's directory says what differs, in words (issue 26: a model's
    run resumed with an engine said "batch=None here")."""
    from caloquant.distributed.plan import check_out_dir, manifest
    from caloquant.fileio import write_json

    model = {"kind": "model", "sha256": "ab" * 32, "batch": 64}
    ident = {
        "producer": model,
        "seed": 0,
        "n": 10,
        "shard_size": 10,
        "energies": {"kind": "uniform", "range_gev": list(RANGE)},
        "compression": "lz4",
        "format": "3dgan",
    }
    m = manifest(ident, 1, model, (25, 25, 25), [], False, "t", "t", [])
    write_json(tmp_path / SHARD_MANIFEST, m)
    engine = {"kind": "engine", "engine": "gflash", "config_sha256": "cd" * 32}
    with pytest.raises(CaloquantError) as exc:
        check_out_dir(tmp_path, {**ident, "producer": engine}, resume=True)
    assert "None" not in str(exc.value)
    assert "a model with weights sha256 abababababab at batch 64 there" in str(exc.value)
    assert "the gflash engine (configuration cdcdcdcdcdcd) here" in str(exc.value)
    with pytest.raises(CaloquantError, match="--batch: 64 there, 128 here"):
        check_out_dir(tmp_path, {**ident, "producer": {**model, "batch": 128}}, resume=True)


def test_tls_errors_name_the_flags(tmp_path: Path) -> None:
    """The flags, not the Python parameters (issue 26: messages named `tls_ca_file`)."""
    from caloquant.distributed import security_from

    with pytest.raises(CaloquantError, match=r"\(--tls-ca-file and --tls-cert; --tls-key unless"):
        security_from(tmp_path / "ca.pem")
    with pytest.raises(CaloquantError, match="ca.pem: --tls-ca-file file not found"):
        security_from(tmp_path / "ca.pem", tmp_path / "c.pem")


def test_sharded_dataset_is_checksummed_and_reads_as_one(dataset: Path, cli) -> None:
    m = read_shard_manifest(dataset)
    assert m["complete"] and m["n"] == 50 and m["n_shards"] == 3 and m["seed"] == 0
    assert m["energies"] == {"kind": "uniform", "range_gev": list(RANGE)}
    assert (
        m["producer"]["kind"] == "model" and m["precision"] == "fp32" and m["versions"]["caloquant"]
    )
    assert [(s["path"], s["n"], s["event_id"]) for s in m["shards"]] == [
        ("shard-00000.h5", 20, [0, 20]),
        ("shard-00001.h5", 20, [20, 40]),
        ("shard-00002.h5", 10, [40, 50]),
    ]
    for s in m["shards"]:
        assert file_sha256(dataset / s["path"]) == s["sha256"]
        with h5py.File(dataset / s["path"]) as h5:  # a 3DGAN-layout file with int64 event ids
            assert h5["ECAL"].shape == (s["n"], 25, 25, 25) and h5["event_id"].dtype == np.int64
            assert (
                "created_utc" not in h5.attrs
            )  # no timestamp: shards are reproducible byte for byte
    assert sorted(p.name for p in dataset.iterdir()) == [
        SHARD_MANIFEST,
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]

    with open_showers(dataset) as r:  # a directory opens as one sample
        assert isinstance(r, ShardedReader) and r.n == 50 and r.grid == (25, 25, 25)
        np.testing.assert_array_equal(r.event_ids(), np.arange(50))
        s, e = r.read(15, 45)  # across two shard boundaries
        e_all = r.energies()
        blocks = list(r.iter_chunks(chunk=16))
    parts = [open_showers(dataset / f"shard-0000{i}.h5").read() for i in range(3)]
    np.testing.assert_array_equal(s, np.concatenate([p[0] for p in parts])[15:45])
    np.testing.assert_array_equal(e_all, np.concatenate([p[1] for p in parts]))
    assert [len(b[0]) for b in blocks] == [16, 16, 16, 2]
    assert e_all.min() >= RANGE[0] and e_all.max() <= RANGE[1]
    assert not np.allclose(
        parts[0][1][:10], parts[1][1][:10]
    )  # every shard has its own random stream

    res = cli("inspect", dataset, "--json")
    assert res.code == 0 and '"n": 50' in res.out
    res = cli(
        "validate",
        dataset,
        dataset / "shard-00000.h5",
        "--bins",
        "edges:100,500",
        "--json",
        dataset.parent / "v.json",
    )
    assert res.code == 0, res.err


def test_bad_inputs_give_one_line_errors_and_write_nothing(
    dataset: Path, random_checkpoint: Path, tmp_path: Path, cli
) -> None:
    before = (dataset / SHARD_MANIFEST).read_bytes()
    base = [
        "generate",
        "--model",
        random_checkpoint,
        "--energy-range",
        "100:500",
        "--shard-size",
        20,
    ]
    # another run's directory, with or without --resume
    assert_one_line_error(cli(*base, "--n", 50, "--seed", 7, "-o", dataset), "another run", "seed")
    assert_one_line_error(
        cli(*base, "--n", 51, "--resume", "-o", dataset), "another run", "number of showers"
    )
    other = tmp_path / "other.pt"
    shutil.copy(random_checkpoint, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # other bytes, so another model (the run is tied to the model's sha256)
    assert_one_line_error(
        cli(*base[:1], "--model", other, *base[3:], "--n", 50, "--resume", "-o", dataset),
        "another run",
        "model",
    )
    # the same run without --resume
    assert_one_line_error(cli(*base, "--n", 50, "-o", dataset), "finished run", "resume")
    assert (dataset / SHARD_MANIFEST).read_bytes() == before

    # an unreachable scheduler: one line within the timeout, nothing written
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        new = tmp_path / "new"
        t0 = time.perf_counter()
        res = cli(
            *base,
            "--n",
            10,
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            "--connect-timeout",
            2,
            "-o",
            new,
        )
        assert time.perf_counter() - t0 < 30
    assert_one_line_error(res, "cannot reach the Dask scheduler")
    assert not new.exists()

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert_one_line_error(cli(*base, "--n", 10, "-o", junk), "not empty")
    assert_one_line_error(
        cli(*base, "--n", 10, "--resume", "-o", tmp_path / "nothing"), "nothing to resume"
    )
    assert_one_line_error(
        cli(*base[:3], "--energy-range", "500:100", "--n", 10, "-o", new), "energy range"
    )
    assert_one_line_error(
        cli(*base[:3], "--energy-range", "10:50", "--n", 10, "-o", new), "valid range"
    )
    assert_one_line_error(
        cli(*base, "--n", 10, "--compression", "snappy", "-o", new), "unknown compression"
    )
    assert_one_line_error(cli(*base, "--n", 0, "-o", new), "positive")
    assert_one_line_error(
        cli(*base[:3], "--energy-range", "100:500", "--shard-size", 0, "--n", 10, "-o", new),
        "--shard-size",
    )
    assert_one_line_error(cli(*base, "--n", 10, "--workers", 0, "-o", new), "--workers")
    assert_one_line_error(cli(*base, "--n", 10, "--threads", 0, "-o", new), "--threads")
    assert_one_line_error(cli(*base, "--n", 10, "--retries", -1, "-o", new), "--retries")
    np.save(tmp_path / "e.npy", np.full(7, 200.0))
    assert_one_line_error(
        cli(*base[:3], "--energies", tmp_path / "e.npy", "--n", 10, "-o", new), "7 values"
    )
    assert_one_line_error(
        cli(
            "generate",
            "--model",
            tmp_path / "missing.pt",
            "--energy-range",
            "100:500",
            "--n",
            10,
            "-o",
            new,
        ),
        "not found",
    )
    assert_one_line_error(
        cli(*base[:3], "--engine", "gflash", "--energy-range", "100:500", "--n", 10, "-o", new),
        "exactly one",
    )
    assert_one_line_error(
        cli("generate", "--engine", "pythia", "--energy-range", "100:500", "--n", 10, "-o", new),
        "unknown engine",
    )
    assert_one_line_error(
        cli("generate", "--engine", "gflash", "--energy-range", "100:20000", "--n", 10, "-o", new),
        "at most",
    )
    assert not new.exists()


def test_reader_refuses_incomplete_or_damaged_datasets(dataset: Path, tmp_path: Path) -> None:
    part = tmp_path / "part"
    shutil.copytree(dataset, part)
    m = json.loads((part / SHARD_MANIFEST).read_text())
    m["complete"], m["shards"] = False, m["shards"][:2]
    (part / SHARD_MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CaloquantError, match="incomplete"):
        open_showers(part)
    with open_sharded(part, allow_incomplete=True) as r:
        assert r.n == 40
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    raw = bytearray((bad / "shard-00001.h5").read_bytes())
    raw[-100] ^= 0xFF
    (bad / "shard-00001.h5").write_bytes(bytes(raw))
    assert verify_shards(bad, read_shard_manifest(bad)["shards"]) == [True, False, True]
    with pytest.raises(CaloquantError, match="checksum"):
        open_sharded(bad, verify=True)


@pytest.mark.slow
def test_resume_remakes_a_damaged_shard_identically(
    dataset: Path, random_checkpoint: Path, cluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "shard-00001.h5").write_bytes(b"damaged")
    res = run(bad, random_checkpoint, cluster, 50, 20, resume=True)
    assert (res.shards_made, res.shards_reused) == (1, 2)
    assert shard_shas(bad) == shard_shas(dataset)


def test_resume_remakes_a_finished_shard_the_manifest_does_not_list(
    dataset: Path, random_checkpoint: Path, cluster, tmp_path: Path
) -> None:
    """Ctrl-C can land after a shard file is complete but before the manifest lists it (issue 26).
    Such a file has no recorded checksum to be verified by: --resume makes that shard again and
    says so; a stale or foreign file of that name is replaced by the run's own bytes."""
    out = tmp_path / "ds"
    shutil.copytree(dataset, out)
    m = json.loads((out / SHARD_MANIFEST).read_text())
    m["complete"] = False
    m["shards"] = [s for s in m["shards"] if s["path"] != "shard-00001.h5"]
    (out / SHARD_MANIFEST).write_text(json.dumps(m))
    shutil.copy(out / "shard-00000.h5", out / "shard-00001.h5")  # complete, but not shard 1
    logs: list[str] = []
    cfg = GenerateConfig(
        50,
        model=random_checkpoint,
        shard_size=20,
        scheduler=cluster.scheduler_address,
        energy_range=RANGE,
        threads=1,
        resume=True,
    )
    res = generate(out, cfg, log=logs.append)
    assert (res.shards_made, res.shards_reused) == (1, 2)
    assert any("1 shard files not in the manifest are made again" in line for line in logs), logs
    assert shard_shas(out) == shard_shas(dataset)
    assert file_sha256(out / "shard-00001.h5") == shard_shas(dataset)["shard-00001.h5"]


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(cluster, random_checkpoint: Path, tmp_path: Path) -> None:
    """SIGKILL one of two workers while both are busy: its task runs again elsewhere, and the
    dataset ends with exactly N unique event ids and valid checksums."""
    with distributed.Client(cluster, set_as_default=False) as client:
        pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_one(p) -> None:
        if p.shards_done == 1 and not killed:  # 7 shards to go, both workers busy
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    n = 80
    out = tmp_path / "ds"
    res = run(
        out, random_checkpoint, cluster, n, 10, progress=kill_one, threads=None
    )  # threads: the host's share
    assert {s["engine_threads"] for s in res.manifest["shards"]} == {
        max(1, len(os.sched_getaffinity(0)) // 2)
    }
    assert killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that worker process is gone
    m = read_shard_manifest(out)
    assert m["complete"] and len(m["shards"]) == 8
    assert all(verify_shards(out, m["shards"]))
    with open_showers(out) as r:
        ids = r.event_ids()
    assert len(ids) == n and len(np.unique(ids)) == n and ids.min() == 0 and ids.max() == n - 1
    assert not list(out.glob(".*.part"))


@pytest.mark.slow
def test_sigint_then_resume_equals_an_uninterrupted_run(
    cluster, random_checkpoint: Path, tmp_path: Path
) -> None:
    """Ctrl-C on `caloquant generate` (its own local cluster, 1 worker) leaves only complete
    shards; --resume on another cluster (2 workers) finishes it; every shard is then byte-for-byte
    the shard of an uninterrupted 2-worker run."""
    n, size = (
        120,
        6,
    )  # 20 shards: the interrupt must land while most are still to do (10 were once all done first)
    ref = tmp_path / "ref"
    run(ref, random_checkpoint, cluster, n, size, seed=3)

    out = tmp_path / "out"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("CALOQUANT_PROGRESS", None)
    cmd = [
        sys.executable,
        "-m",
        "caloquant.cli",
        "generate",
        "--model",
        str(random_checkpoint),
        "--n",
        str(n),
        "--shard-size",
        str(size),
        "--energy-range",
        "100:500",
        "--seed",
        "3",
        "--workers",
        "1",
        "--threads",
        "1",
        "-o",
        str(out),
    ]
    # as from a terminal: SIGINT at its default (an ignored SIGINT is inherited, and this test
    # process may have inherited or set one; caloquant's own Dask workers ignore it on purpose)
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if read_shard_manifest(out)["shards"]:
                    break
            except CaloquantError:
                pass  # not written yet
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"run ended before it could be interrupted: {proc.communicate()}"
        )
        os.killpg(
            proc.pid, signal.SIGINT
        )  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    m = read_shard_manifest(out)
    assert not m["complete"] and 0 < len(m["shards"]) < n // size
    assert all(verify_shards(out, m["shards"]))
    planned = {s.path: s.n for s in plan_shards(n, size)}
    for f in out.iterdir():  # only complete shards (listed or not), no temporary files
        assert f.name == SHARD_MANIFEST or f.name in planned, f.name
        if f.name in planned:
            with open_showers(f) as r:
                assert r.n == planned[f.name]

    res = run(out, random_checkpoint, cluster, n, size, seed=3, resume=True)
    assert res.shards_reused == len(m["shards"]) and res.shards_made == n // size - len(m["shards"])
    assert shard_shas(out) == shard_shas(
        ref
    )  # 1 worker + 2 workers, interrupted = 2 workers, uninterrupted


def test_ctrl_c_says_once_what_is_complete(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while shards are made: the interrupt carries how many are complete and how to go
    on, and `caloquant generate` says it in ONE line (not that line and then "interrupted"),
    exit 130; the manifest records the run. No cluster: a stand-in whose first wait is Ctrl-C."""
    import caloquant.distributed.api as api

    class Client:
        loop = None
        cancelled = False

        def submit(self, *args, **kwargs):
            return object()

        def cancel(self, futures, force=False):
            Client.cancelled = True

        def close(self, timeout=None):
            pass

    class Cluster:
        dashboard_link = "-"

        def close(self, timeout=None):
            pass

    def ctrl_c(futures, loop=None):
        raise KeyboardInterrupt
        yield  # a generator, as distributed.as_completed is

    monkeypatch.setattr(api, "local_cluster", lambda workers, threads: (Cluster(), Client()))
    monkeypatch.setattr(distributed, "as_completed", ctrl_c)
    out = tmp_path / "g"
    with pytest.raises(KeyboardInterrupt, match="0 of 2 shards complete in .*--resume"):
        generate(out, GenerateConfig(4, engine="gflash", energy_range=RANGE, shard_size=2))
    assert Client.cancelled and not read_shard_manifest(out)["complete"]
    shutil.rmtree(out)
    res = cli(
        *"generate --engine gflash --n 4 --energy-range 100:500 --shard-size 2".split(),
        "--workers",
        "1",
        "--threads",
        "1",
        "-o",
        out,
    )
    said = [ln for ln in res.err.splitlines() if "interrupted" in ln]  # (the cluster line before)
    assert res.code == 130 and len(said) == 1, res.err
    assert said[0].startswith("interrupted: 0 of 2 shards complete in ") and "--resume" in said[0]
    assert res.err.rstrip().endswith("(--resume)")


def _certificate_authority(tmp: Path, name: str):
    """A self-made CA and a certificate for 127.0.0.1 signed by it (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caloquant-test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {k: tmp / f"{name}-{k}.pem" for k in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.slow
def test_tls_cluster_needs_the_right_certificates(
    random_checkpoint: Path, tmp_path: Path, cli
) -> None:
    pytest.importorskip("cryptography")
    good = _certificate_authority(tmp_path, "good")
    wrong = _certificate_authority(tmp_path, "wrong")
    sec = distributed.Security(
        tls_ca_file=str(good["ca"]),
        require_encryption=True,
        **{
            f"tls_{role}_{k}": str(good[k])
            for role in ("scheduler", "worker", "client")
            for k in ("cert", "key")
        },
    )
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        protocol="tls",
        security=sec,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,
    ) as c:
        addr = c.scheduler_address
        assert addr.startswith("tls://127.0.0.1:")
        base = [
            "generate",
            "--model",
            random_checkpoint,
            "--energy-range",
            "100:500",
            "--n",
            20,
            "--shard-size",
            10,
            "--threads",
            1,
            "--scheduler",
            addr,
            "--connect-timeout",
            5,
        ]
        out = tmp_path / "out"
        assert_one_line_error(cli(*base, "-o", out), "uses TLS but no certificates")
        assert_one_line_error(
            cli(
                *base,
                "--tls-ca-file",
                wrong["ca"],
                "--tls-cert",
                wrong["cert"],
                "--tls-key",
                wrong["key"],
                "-o",
                out,
            ),
            "cannot reach",
        )
        assert not out.exists()
        res = cli(
            *base,
            "--tls-ca-file",
            good["ca"],
            "--tls-cert",
            good["cert"],
            "--tls-key",
            good["key"],
            "-o",
            out,
        )
        assert res.code == 0, res.err
    m = read_shard_manifest(out)
    assert (
        m["complete"]
        and sum(s["n"] for s in m["shards"]) == 20
        and all(verify_shards(out, m["shards"]))
    )


def _engine_ready(engine: str) -> None:
    sim = pytest.importorskip("caloquant.sim", reason="caloquant.sim (the engines) not installed")
    if engine == "geant4" and not sim.helper_status().get("ready"):
        pytest.skip(f"Geant4 helper not ready: {sim.helper_status()}")


@pytest.mark.parametrize("engine", ["gflash", pytest.param("geant4", marks=pytest.mark.slow)])
def test_engines_produce_shards_like_models(engine: str, cluster, tmp_path: Path) -> None:
    """The Monte Carlo engines behind the same shard machinery: N showers, event ids 0..N-1,
    energies per shard from the run's seed, the same dataset whoever makes it."""
    _engine_ready(engine)
    n, size = (40, 10) if engine == "gflash" else (4, 2)
    cfg = GenerateConfig(
        n,
        engine=engine,
        energy_range=(5.0, 20.0),
        shard_size=size,
        scheduler=cluster.scheduler_address,
    )
    a = generate(tmp_path / "a", cfg, log=lambda m: None)
    m = a.manifest
    assert m["complete"] and m["producer"]["engine"] == engine and m["precision"] == "Monte Carlo"
    with open_showers(tmp_path / "a") as r:
        np.testing.assert_array_equal(r.event_ids(), np.arange(n))
        s, e = r.read()
    assert (
        s.shape == (n, 25, 25, 25)
        and np.all((e >= 5) & (e <= 20))
        and np.all(s.reshape(n, -1).sum(1) > 0)
    )
    # one shard remade elsewhere (resume after its loss) is the same file
    (tmp_path / "a" / "shard-00001.h5").unlink()
    generate(tmp_path / "a", dataclasses.replace(cfg, resume=True), log=lambda m: None)
    assert shard_shas(tmp_path / "a") == {s["path"]: s["sha256"] for s in m["shards"]}
