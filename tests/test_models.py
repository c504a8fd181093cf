"""The CERN 3DGAN in PyTorch: Keras equivalence, checkpoints, sampling, bad input."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from caloquant.data import open_showers, read_showers
from caloquant.errors import CaloquantError
from caloquant.models import (
    SPEC_3DGAN,
    Checkpoint,
    NoiseStream,
    TorchGenerator,
    build,
    energies_for,
    import_keras_3dgan,
    load_checkpoint,
    sample_showers,
    save_checkpoint,
)
from tests import keras_numpy_reference as ref
from tests.helpers import assert_one_line_error, write_h5


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- equivalence with Keras, via an independent numpy implementation --------------------


def test_generator_matches_independent_keras_reference(keras_files: tuple[Path, Path]) -> None:
    ckpt = import_keras_3dgan(keras_files[0])
    w = ref.load(str(keras_files[0]))
    rng = np.random.default_rng(42)
    for ep in (100.0, 250.0, 500.0):
        z = (rng.standard_normal(200) * ep / 100).astype(np.float32)
        with torch.no_grad():
            got = ckpt.generator(torch.from_numpy(z[None]))[0].numpy()
        want = ref.generator(w, z.astype(np.float64))
        assert got.shape == want.shape == (25, 25, 25)
        assert want.max() > 0
        assert rel_err(got, want) < 1e-5, f"Ep={ep}: relative error {rel_err(got, want):.2e}"


def test_discriminator_matches_independent_keras_reference(keras_files: tuple[Path, Path]) -> None:
    ckpt = import_keras_3dgan(*keras_files)
    assert ckpt.discriminator is not None
    w = ref.load(str(keras_files[1]))
    rng = np.random.default_rng(7)
    # realistic inputs: showers of the generator itself (random cells would saturate the sigmoid)
    with torch.no_grad():
        showers = ckpt.generator(
            torch.from_numpy(rng.standard_normal((3, 200)).astype(np.float32) * 3)
        ).numpy()
    for x in showers:
        with torch.no_grad():
            p, aux, ecal = (t.item() for t in ckpt.discriminator(torch.from_numpy(x[None])))
        rp, raux, recal = ref.discriminator(w, x.astype(np.float64))
        assert abs(p - rp) / abs(rp) < 1e-5
        assert abs(aux - raux) / abs(raux) < 1e-5
        assert abs(ecal - recal) / recal < 1e-5


# --- the imported model makes physical showers -------------------------------------------


def test_import_and_sample_cern_3dgan(keras_files: tuple[Path, Path], tmp_path: Path, cli) -> None:
    model = tmp_path / "m.pt"
    res = cli("import-keras", keras_files[0], "--discriminator", keras_files[1], "-o", model)
    assert res.code == 0, res.err
    out = tmp_path / "s.h5"
    res = cli(
        "sample", "--model", model, "--n", 400, "--energy-range", "100:500", "--seed", 5, "-o", out
    )
    assert res.code == 0, res.err
    s, e = read_showers(out)
    assert s.shape == (400, 25, 25, 25) and 100 <= e.min() and e.max() <= 500
    ecal = s.reshape(400, -1).sum(1)
    idx = np.arange(25)
    mx = (s.sum(axis=(2, 3)) @ idx) / ecal
    my = (s.sum(axis=(1, 3)) @ idx) / ecal
    # centred on the middle transverse cell (index 12); statistical error of the mean << 0.1
    assert abs(mx.mean() - 12) < 0.2 and abs(my.mean() - 12) < 0.2
    sf = ecal / e
    # sampling fraction about 2 % (training target 0.02; this epoch gives ~0.017 +- 0.009 per
    # shower)
    assert 0.014 < sf.mean() < 0.024, sf.mean()
    # the hottest cell of the average shower is the central column
    avg = s.mean(0).sum(axis=2)
    assert np.unravel_index(avg.argmax(), avg.shape) == (12, 12)


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    gen, disc = build(SPEC_3DGAN)
    gen.eval()
    p = save_checkpoint(tmp_path / "c.pt", Checkpoint(SPEC_3DGAN, gen, disc, {"note": "x"}))
    ck = load_checkpoint(p)
    assert ck.spec == SPEC_3DGAN and ck.provenance["note"] == "x" and ck.discriminator is not None
    z = torch.randn(3, 200)
    with torch.no_grad():
        assert torch.equal(gen(z), ck.generator(z))


def test_corrupt_checkpoints(tmp_path: Path, random_checkpoint: Path, cli) -> None:
    data = random_checkpoint.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    wrong = tmp_path / "wrong.pt"
    payload = torch.load(random_checkpoint, weights_only=True)
    payload["generator"]["conv1.weight"] = torch.zeros(2, 2)
    torch.save(payload, wrong)
    nanw = tmp_path / "nan.pt"
    payload = torch.load(random_checkpoint, weights_only=True)
    payload["generator"]["dense.bias"][0] = float("nan")
    torch.save(payload, nanw)
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (trunc, "corrupt"),
        (junk, "corrupt"),
        (other, "not a caloquant checkpoint"),
        (wrong, "do not fit"),
        (nanw, "NaN"),
    ]
    pickled = tmp_path / "pickle.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    cases.append((pickled, "never unpickled"))  # and no two-line torch warning before it
    for path, needle in cases:
        out = tmp_path / f"{path.stem}_out.h5"
        res = cli("sample", "--model", path, "--n", 2, "--energy", 200, "-o", out)
        assert_one_line_error(res, needle)
        assert not out.exists()
    with warnings.catch_warnings(record=True) as caught:  # pytest would hide them from stderr
        warnings.simplefilter("always")
        with pytest.raises(CaloquantError, match="never unpickled"):
            load_checkpoint(pickled)
    assert not caught, [str(w.message) for w in caught]
    # whole messages, not cut mid-sentence (issue 26)
    res = cli("sample", "--model", trunc, "--n", 2, "--energy", 200, "-o", tmp_path / "t.h5")
    assert res.err.strip().endswith("failed finding central directory)"), res.err


def test_keras_file_of_another_architecture(
    keras_files: tuple[Path, Path], tmp_path: Path, cli
) -> None:
    # the discriminator file is a valid Keras file, but not a generator
    res = cli("import-keras", keras_files[1], "-o", tmp_path / "x.pt")
    assert_one_line_error(res, "not a 3DGAN Conv3D generator")
    # a generator-like file whose first convolution has another kernel size
    fake = tmp_path / "fake.hdf5"
    with h5py.File(keras_files[0]) as src, h5py.File(fake, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        src.copy("input_1", dst)
        src.copy("sequential_1", dst)
        del dst["sequential_1/conv3d_1/kernel:0"]
        dst["sequential_1/conv3d_1"].create_dataset(
            "kernel:0", data=np.zeros((5, 5, 5, 8, 64), np.float32)
        )
    res = cli("import-keras", fake, "-o", tmp_path / "y.pt")
    assert_one_line_error(res, "conv1.weight", "shape")
    plain = write_h5(tmp_path / "plain.h5", ECAL=np.zeros((1, 2, 2, 2)))
    res = cli("import-keras", plain, "-o", tmp_path / "z.pt")
    assert_one_line_error(res, "not a Keras weights file")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


# --- sampling ---------------------------------------------------------------------------------


def test_same_seed_same_output_independent_of_batch(random_checkpoint: Path) -> None:
    ck = load_checkpoint(random_checkpoint)
    g = TorchGenerator(ck.spec, ck.generator, 2)
    e = energies_for(10, 3, energy_range=(100, 500))
    a = sample_showers(g, e, seed=3, batch=10)
    b = sample_showers(g, e, seed=3, batch=3)
    c = sample_showers(g, e, seed=4, batch=10)
    # identical latents; the float results differ only by the kernels' batch-dependent summation
    # order
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6 * a.max())
    assert not np.allclose(a, c, atol=1e-3 * a.max())
    s1 = NoiseStream(10, 200, 3)
    blocks = np.concatenate([s1.take(3), s1.take(3), s1.take(4)])
    np.testing.assert_array_equal(blocks, NoiseStream(10, 200, 3).take(10))


def test_sample_cli_seed_noise_energies(random_checkpoint: Path, tmp_path: Path, cli) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for p in (a, b):
        assert (
            cli(
                "sample",
                "--model",
                random_checkpoint,
                "--n",
                6,
                "--energy-range",
                "100:500",
                "--seed",
                9,
                "-o",
                p,
            ).code
            == 0
        )
    sa, ea = read_showers(a)
    sb, eb = read_showers(b)
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(ea, eb)
    with open_showers(a) as r:
        assert r.attrs["seed"] == 9 and r.attrs["precision"] == "fp32"

    # explicit noise + energies: the model applies its own conditioning z = n * Ep/100
    noise = np.random.default_rng(0).standard_normal((4, 200)).astype(np.float32)
    energies = np.array([100.0, 200.0, 300.0, 450.0])
    np.save(tmp_path / "n.npy", noise)
    np.save(tmp_path / "e.npy", energies)
    out = tmp_path / "c.h5"
    res = cli(
        "sample",
        "--model",
        random_checkpoint,
        "--n",
        4,
        "--energies",
        tmp_path / "e.npy",
        "--noise",
        tmp_path / "n.npy",
        "--format",
        "calochallenge",
        "-o",
        out,
    )
    assert res.code == 0, res.err
    ck = load_checkpoint(random_checkpoint)
    with torch.no_grad():
        want = ck.generator(
            torch.from_numpy(noise * (energies[:, None] / 100).astype(np.float32))
        ).numpy()
    got, e = read_showers(out)
    np.testing.assert_allclose(e, energies, rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sample_bad_input(random_checkpoint: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "o.h5"
    np.save(tmp_path / "badnoise.npy", np.zeros((4, 100), np.float32))
    np.save(tmp_path / "nannoise.npy", np.full((4, 200), np.nan, np.float32))
    np.save(tmp_path / "e.npy", np.array([100.0, np.nan, 200.0, 300.0]))
    (tmp_path / "junk.npy").write_text("junk")
    np.save(tmp_path / "objects.npy", np.array([{"e": 1}] * 4, dtype=object), allow_pickle=True)
    m = ("--model", random_checkpoint, "--n", 4, "-o", out)
    cases = [
        (("--energy", 600), "outside the model's valid range"),
        (("--energy", 50), "outside the model's valid range"),
        (("--energy", -5), "negative"),
        (("--energy", 0), "zero"),
        (("--energy-range", "300:200"), "empty"),
        (("--energy-range", "abc"), "LO:HI"),
        (("--energy", 200, "--noise", tmp_path / "badnoise.npy"), "noise has shape"),
        (("--energy", 200, "--noise", tmp_path / "nannoise.npy"), "NaN"),
        (("--energy", 200, "--noise", tmp_path / "missing.npy"), "not found"),
        (("--energy", 200, "--noise", tmp_path / "junk.npy"), "no NumPy header"),
        (("--energies", tmp_path / "objects.npy"), "holds Python objects"),
        (("--energies", tmp_path / "e.npy"), "NaN"),
        ((), "exactly one of"),
    ]
    for extra, needle in cases:
        assert_one_line_error(cli("sample", *m, *extra), needle)
        assert not out.exists()
    # the flag, not the Python field (issue 26)
    assert "; --allow-extrapolation forces" in cli("sample", *m, "--energy", 600).err
    res = cli("sample", *m, "--energy", 600, "--allow-extrapolation")
    assert res.code == 0 and out.exists()


def test_conv2d_g4_is_valid_over_the_range_it_was_trained_for(tmp_path: Path, cli) -> None:
    """conv2d-g4 was trained on sets flat in 100-500 GeV, and both ends are accepted (issue 26:
    its spec recorded the extreme energies drawn, 100.02-499.987 GeV, and refused them)."""
    from caloquant.models import model_ref

    assert model_ref("conv2d-g4").float_checkpoint().spec.energy_range_gev == (100.0, 500.0)
    for e in (100, 500):
        out = tmp_path / f"{e}.h5"
        res = cli("sample", "--model", "conv2d-g4", "--n", 2, "--energy", e, "-o", out)
        assert res.code == 0, res.err
        assert out.exists()


def test_ctrl_c_during_sample_says_nothing_was_written(
    random_checkpoint: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-sample: exit 130, one line saying so, and no output or temporary file (issue
    26: it exited silently)."""
    import caloquant.models

    real = caloquant.models.generate_batches

    def interrupted(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(caloquant.models, "generate_batches", interrupted)
    out = tmp_path / "out" / "s.h5"
    res = cli(
        "sample", "--model", random_checkpoint, "--n", 8, "--batch", 2, "--energy", 200, "-o", out
    )
    assert res.code == 130 and res.err.strip() == "interrupted, nothing written", res.err
    assert not out.exists() and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_usage_errors_are_one_line_and_a_hint(cli) -> None:
    """Typer's usage errors (bad option value, unknown command or option) as the tool's other
    errors: one `error:` line, a hint to --help, exit 2 (issue 26: a 5-6 line box)."""
    cases = [
        (("sample", "--n", "abc"), "error: invalid value for '--n'", "caloquant sample"),
        (("smaple",), "error: no such command 'smaple'", "caloquant"),
        (("sample", "--bogus"), "error: no such option: --bogus", "caloquant sample"),
    ]
    for args, first, cmd in cases:
        res = cli(*args)
        lines = [line for line in res.err.splitlines() if line.strip()]
        assert res.code == 2 and len(lines) == 2, res.err
        assert lines[0].startswith(first) and lines[1] == f"try '{cmd} --help'", res.err
        assert_one_line_error(res, first.removeprefix("error: "))  # the hint line is allowed


def test_console_script_errors_without_traceback(tmp_path: Path) -> None:
    """The installed entry point itself (not just main()) exits non-zero with one line."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("caloquant")
    proc = subprocess.run(
        [str(exe), "inspect", str(tmp_path / "missing.h5")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().count("\n") == 0
        and "not found" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    for cmd in ("inspect", "import-keras", "sample", "run"):
        assert cmd in proc.stdout


def test_one_resolver_for_every_model_reference(keras_files, tmp_path: Path) -> None:
    """`model_ref` decides what a reference is for the CLI, the API, the study, the benchmark
    and the workers: a built-in name, a checkpoint, a Keras file (converted on load, as `cq.load`
    always did and `caloquant quantize` now does too) or an artifact folder (no float weights)."""
    from caloquant.models import DEFAULT_MODEL, model_ref

    d = model_ref(None)
    assert d.name == DEFAULT_MODEL and d.kind == "checkpoint" and d.path.is_file()
    k = model_ref(keras_files[0])
    assert k.kind == "keras" and k.is_float
    ck = k.float_checkpoint()
    assert ck.spec.arch == d.float_checkpoint().spec.arch
    art = tmp_path / "art"
    art.mkdir()
    a = model_ref(art)
    assert a.kind == "artifact" and not a.is_float
    with pytest.raises(CaloquantError, match="float32 model"):
        a.float_checkpoint()
    with pytest.raises(CaloquantError, match="model not found"):
        model_ref(tmp_path / "nothing.pt")
