"""Shower file formats: round trips, legacy layouts, chunked reads, atomic writes, bad input."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant.data import (
    MEV_PER_GEV,
    ShowerWriter,
    open_showers,
    provenance,
    read_showers,
    summarize,
    write_showers,
)
from caloquant.errors import CaloquantError
from tests.helpers import assert_one_line_error, write_h5


def fake_showers(
    n: int, grid: tuple[int, ...] = (25, 25, 25), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = rng.uniform(100, 500, n)
    s = rng.exponential(0.01, (n, *grid)).astype(np.float32)
    s[s < 0.01] = 0.0
    return s, e


@pytest.mark.parametrize("fmt", ["3dgan", "calochallenge"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    s, e = fake_showers(37)
    path = write_showers(
        tmp_path / "a.h5", s, e, fmt=fmt, attrs=provenance(model="m", precision="int8", seed=3)
    )
    with open_showers(path) as r:
        assert r.format == fmt and r.n == 37 and r.grid == (25, 25, 25)
        assert (
            r.attrs["precision"] == "int8"
            and r.attrs["seed"] == 3
            and "caloquant_version" in r.attrs
        )
        s2, e2 = r.read()
    np.testing.assert_allclose(s2, s, rtol=1e-6)
    np.testing.assert_allclose(e2, e, rtol=1e-6)


def test_calochallenge_units_are_mev_on_disk(tmp_path: Path) -> None:
    s, e = fake_showers(5, grid=(4, 5, 6))
    path = write_showers(tmp_path / "cc.h5", s, e, fmt="calochallenge")
    with h5py.File(path) as h5:
        assert h5["showers"].shape == (5, 120) and h5["incident_energies"].shape == (5, 1)
        np.testing.assert_allclose(h5["showers"][:], s.reshape(5, -1) * MEV_PER_GEV, rtol=1e-6)
        np.testing.assert_allclose(h5["incident_energies"][:, 0], e * MEV_PER_GEV, rtol=1e-6)
        assert h5["showers"].attrs["units"] == "MeV"
        assert h5["showers"].compression == "gzip" and h5["showers"].chunks is not None
    s2, _ = read_showers(path)
    assert s2.shape == (5, 4, 5, 6)  # grid restored from the grid_shape attribute


def test_calochallenge_foreign_file_cube_and_non_cube(tmp_path: Path) -> None:
    s, e = fake_showers(4, grid=(5, 5, 5))
    p = write_h5(
        tmp_path / "c.h5",
        showers=s.reshape(4, -1) * 1000,
        incident_energies=(e * 1000).reshape(-1, 1),
    )
    with open_showers(p) as r:
        assert r.grid == (5, 5, 5)
        np.testing.assert_allclose(r.energies(), e)
    p2 = write_h5(
        tmp_path / "d.h5",
        showers=np.zeros((4, 6480), np.float32),
        incident_energies=(e * 1000).reshape(-1, 1),
    )
    with pytest.raises(CaloquantError, match="cannot infer the voxel grid.*'grid_shape' attribute"):
        open_showers(p2)
    with open_showers(p2, grid=(45, 16, 9)) as r:
        assert r.grid == (45, 16, 9)


def test_legacy_target_and_non_cubic(tmp_path: Path) -> None:
    s, e = fake_showers(6, grid=(51, 51, 25))
    target = np.stack([np.zeros(6), e, np.ones(6)], axis=1)
    p = write_h5(tmp_path / "legacy.h5", ECAL=s, target=target)
    with open_showers(p) as r:
        assert r.format == "3dgan" and r.grid == (51, 51, 25)
        np.testing.assert_allclose(r.energies(), e)


def test_write_is_gzip_chunked_with_provenance(tmp_path: Path) -> None:
    s, e = fake_showers(40)
    p = write_showers(tmp_path / "g.h5", s, e, attrs=provenance(model="x", seed=1))
    with h5py.File(p) as h5:
        assert h5["ECAL"].compression == "gzip"
        assert h5["ECAL"].chunks[1:] == (25, 25, 25)
        assert h5["ECAL"].attrs["units"] == "GeV"
        assert h5.attrs["model"] == "x" and h5.attrs["n_showers"] == 40


def test_chunked_read_stays_within_memory_budget(tmp_path: Path) -> None:
    """A file ~10x larger than the budget is summarised with bounded Python-side memory."""
    grid = (10, 10, 10)
    path = tmp_path / "big.h5"
    n_blocks, block = 20, 256
    with ShowerWriter(path, grid) as w:
        for i in range(n_blocks):
            w.append(*fake_showers(block, grid, seed=i))
    total_bytes = n_blocks * block * 1000 * 4  # 20 MB of float32
    budget = 2 * 1024 * 1024  # 2 MB
    tracemalloc.start()
    tracemalloc.reset_peak()
    n = 0
    with open_showers(path) as r:
        for s, _ in r.iter_chunks(chunk=64):
            n += len(s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == n_blocks * block
    assert total_bytes > 8 * budget
    assert peak < budget, f"peak traced memory {peak} B for a {total_bytes} B file"


def test_summarize(tmp_path: Path) -> None:
    s, e = fake_showers(50)
    p = write_showers(tmp_path / "s.h5", s, e)
    summ = summarize(p, chunk=7)
    ratio = s.reshape(50, -1).sum(1) / e
    assert summ["n"] == 50
    assert summ["ecal_over_ep"]["mean"] == pytest.approx(ratio.mean(), rel=1e-5)
    assert summ["energy_gev"]["min"] == pytest.approx(e.min(), rel=1e-6)


def test_writer_failure_leaves_no_file(tmp_path: Path) -> None:
    s, e = fake_showers(10)
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with ShowerWriter(path, (25, 25, 25)) as w:
            w.append(s, e)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    bad = s.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(CaloquantError, match="NaN"):
        write_showers(path, bad, e)
    assert list(tmp_path.iterdir()) == []


def test_inspect_cli(tmp_path: Path, cli) -> None:
    s, e = fake_showers(12)
    p = write_showers(tmp_path / "i.h5", s, e)
    res = cli("inspect", p)
    assert res.code == 0 and "3dgan" in res.out and "12" in res.out
    res = cli("inspect", p, "--json")
    assert res.code == 0 and '"n": 12' in res.out


def test_inspect_warns_about_impossible_sampling_fractions(tmp_path: Path, cli) -> None:
    """Ecal/Ep > 1 cannot come from any calorimeter: inspect warns and says which unit the file
    seems to use (issue 26: int32 ADC counts showed Ecal/Ep = 17818 without a word)."""
    s, e = fake_showers(6)
    adc = write_h5(tmp_path / "adc.h5", ECAL=np.rint(s * 5e4).astype(np.int32), energy=e)
    res = cli("inspect", adc)
    assert res.code == 0, res.err
    (warning,) = [line for line in res.err.splitlines() if line.strip()]
    assert warning.startswith("warning:") and "impossible" in warning
    assert "not in GeV" in warning and "integer ADC counts" in warning
    (warning,) = summarize(write_showers(tmp_path / "mev.h5", s * 1000, e))["warnings"]
    assert "seem to be in MeV" in warning
    assert summarize(write_showers(tmp_path / "gev.h5", s, e))["warnings"] == []


def test_inspect_says_a_folders_manifest_is_corrupt(tmp_path: Path, cli) -> None:
    """A folder with a damaged manifest.json is not "a folder without one" (issue 26)."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text("{broken")
    assert_one_line_error(cli("inspect", tmp_path / "ds"), "manifest.json: corrupt or unreadable")
    (tmp_path / "ds" / "manifest.json").write_text('{"kind": "artifact"}')
    assert_one_line_error(cli("inspect", tmp_path / "ds"), "not a sharded-dataset manifest")
    (tmp_path / "ds" / "manifest.json").unlink()
    assert_one_line_error(cli("inspect", tmp_path / "ds"), "no manifest.json")


def _bad_files(tmp: Path) -> list[tuple[str, Path, str]]:
    s, e = fake_showers(4, grid=(5, 5, 5))
    good = write_showers(tmp / "good.h5", s, e)
    truncated = tmp / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp / "text.h5"
    text.write_text("this is not hdf5\n")
    nan_s = s.copy()
    nan_s[0, 1, 1, 1] = np.nan
    inf_e = e.copy()
    inf_e[1] = np.inf
    neg_s = s.copy()
    neg_s[2, 0, 0, 0] = -1.0
    return [
        ("missing", tmp / "nope.h5", "not found"),
        ("not hdf5", text, "not an HDF5"),
        ("truncated", truncated, "HDF5"),
        ("no keys", write_h5(tmp / "nokeys.h5", foo=np.zeros(3)), "unknown shower format"),
        ("misnamed energy", write_h5(tmp / "misnamed.h5", ECAL=s, Energy=e), "'energy'"),
        (
            "missing showers",
            write_h5(tmp / "cc_missing.h5", incident_energies=e.reshape(-1, 1)),
            "'showers'",
        ),
        ("ECAL 3-d", write_h5(tmp / "shape.h5", ECAL=s[:, 0], energy=e), "shape"),
        ("energy count", write_h5(tmp / "count.h5", ECAL=s, energy=e[:3]), "shape"),
        (
            "cc energies shape",
            write_h5(
                tmp / "ccshape.h5", showers=s.reshape(4, -1), incident_energies=np.ones((4, 2))
            ),
            "shape",
        ),
        (
            "string dtype",
            write_h5(tmp / "dtype.h5", ECAL=s, energy=np.array([b"a", b"b", b"c", b"d"])),
            "dtype",
        ),
        ("NaN cell", write_h5(tmp / "nan.h5", ECAL=nan_s, energy=e), "NaN"),
        ("Inf energy", write_h5(tmp / "inf.h5", ECAL=s, energy=inf_e), "Inf"),
        ("negative energy", write_h5(tmp / "negE.h5", ECAL=s, energy=-e), "negative"),
        ("zero energy", write_h5(tmp / "zeroE.h5", ECAL=s, energy=np.zeros(4)), "zero"),
        ("negative cell", write_h5(tmp / "negS.h5", ECAL=neg_s, energy=e), "negative cell"),
    ]


def test_bad_inputs_give_one_line_errors(tmp_path: Path, cli) -> None:
    for label, path, needle in _bad_files(tmp_path):
        res = cli("inspect", path)
        assert_one_line_error(res, needle)
        assert str(path.name) in res.err or label == "missing", label


@pytest.mark.parametrize("compression", ["gzip:1", "lz4", "zstd", "none", 4])
def test_compressions_round_trip_with_event_ids(tmp_path: Path, compression) -> None:
    s, e = fake_showers(37, grid=(6, 6, 6))
    with ShowerWriter(
        tmp_path / "c.h5", (6, 6, 6), compression=compression, first_event_id=1000
    ) as w:
        w.append(s[:20], e[:20])
        w.append(s[20:], e[20:])
    with open_showers(tmp_path / "c.h5") as r:
        s2, e2 = r.read()
        ids = r.event_ids()
    np.testing.assert_array_equal(s2, s)
    np.testing.assert_allclose(e2, e, rtol=1e-6)
    np.testing.assert_array_equal(ids, np.arange(1000, 1037))
    with h5py.File(tmp_path / "c.h5") as h5:
        assert h5["event_id"].dtype == np.int64
        assert (h5["ECAL"].compression == "gzip") == (compression in ("gzip:1", 4))


def test_background_writer_owns_its_blocks_and_reports_its_errors(tmp_path: Path) -> None:
    s, e = fake_showers(30, grid=(5, 5, 5))
    buf = s[:10].copy()
    with ShowerWriter(tmp_path / "a.h5", (5, 5, 5), queue_depth=1) as w:
        w.append(buf, e[:10])
        buf[:] = 7.0  # the caller reuses its buffer at once (as inference engines do)
        w.append(s[10:], e[10:])
    np.testing.assert_array_equal(read_showers(tmp_path / "a.h5")[0], s)

    class Failing(ShowerWriter):
        def _write(self, showers: np.ndarray, energies: np.ndarray, n0: int) -> None:
            if n0 > 0:  # the disk fills up at the second block
                raise OSError("No space left on device")
            super()._write(showers, energies, n0)

    with pytest.raises(OSError, match="No space"):
        with Failing(tmp_path / "b.h5", (5, 5, 5)) as w:
            for i in range(0, 30, 5):
                w.append(s[i : i + 5], e[i : i + 5])
    assert not (tmp_path / "b.h5").exists() and not list(tmp_path.glob(".b.h5*"))


def test_sample_cli_compression(tmp_path: Path, cli) -> None:
    from caloquant.models import SPEC_3DGAN, Checkpoint, build, save_checkpoint

    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    gen, _ = build(SPEC_3DGAN)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(SPEC_3DGAN, gen.eval()))
    res = cli(
        "sample",
        "--model",
        tmp_path / "m.pt",
        "--n",
        6,
        "--energy",
        200,
        "--compression",
        "lz4",
        "-o",
        tmp_path / "s.h5",
    )
    assert res.code == 0, res.err
    with h5py.File(tmp_path / "s.h5") as h5:
        assert h5["ECAL"].shape == (6, 25, 25, 25) and h5["ECAL"].compression != "gzip"
    assert_one_line_error(
        cli(
            "sample",
            "--model",
            tmp_path / "m.pt",
            "--n",
            6,
            "--energy",
            200,
            "--compression",
            "gzip:12",
            "-o",
            tmp_path / "t.h5",
        ),
        "gzip level",
    )


def test_error_messages_print_user_text_verbatim(tmp_path: Path, cli) -> None:
    """File names with rich markup in them: `[/x]` crashed the error printer (MarkupError) and
    `run[red].h5` was printed as `run.h5`."""
    for name in ("[/x].h5", "run[red].h5"):
        res = cli("inspect", tmp_path / name)
        assert_one_line_error(res, name)


def test_output_names_print_verbatim(tmp_path: Path, cli) -> None:
    """A file name with rich markup in it is written and reported as it is: `[/x].h5` crashed
    the success line after the showers were written, `run[red].h5` was printed `run.h5`; the
    same for `inspect`'s table title."""
    for name in ("[/x]", "run[red]"):
        path = tmp_path / f"{name}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        res = cli("sample", "--n", 3, "--energy", 200, "-o", path)
        assert res.code == 0 and "Traceback" not in res.err, res.err
        assert f"{name}.h5" in " ".join(res.out.split()), res.out
        res = cli("inspect", path)
        assert res.code == 0 and f"{name}.h5" in res.out, res.out
