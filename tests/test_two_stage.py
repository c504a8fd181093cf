"""The two-stage model: the energy stage reproduces a known response distribution, the shower
deposits exactly what it draws, and `caloquant train --energy-stage` yields a model whose energy
scale is the data's whatever its shape network has learnt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from caloquant.data import write_showers
from caloquant.models import (
    TWO_STAGE,
    EnergyStage,
    TorchGenerator,
    build,
    condition_latent,
    load_checkpoint,
    sample_showers,
    save_checkpoint,
    spec_conv2d,
    two_stage_spec,
)
from caloquant.models.checkpoint import Checkpoint
from caloquant.train import TrainConfig, train
from caloquant.train.energy import fit_energy_stage
from tests.helpers import toy_showers


@pytest.fixture(autouse=True)
def one_thread():
    """Small models: one thread is fastest, and on a busy 2-core host two threads wait on each
    other (the training test took 224 s with two threads beside other work, 19 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def response(ep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Geant4-like response Ecal/Ep: mean falling with log Ep (leakage), resolution
    2 % + 30 %/sqrt(Ep), a low tail (an exponential component, skewness about -0.5)."""
    mean = 0.95 - 0.04 * np.log(ep / 100.0)
    sd = mean * (0.02 + 0.3 / np.sqrt(ep))
    return mean + sd * (rng.standard_normal(len(ep)) - 0.3 * rng.exponential(1.0, len(ep)) + 0.3)


def test_the_energy_stage_reproduces_a_known_response() -> None:
    """Fitted to 8,000 showers flat in 100-500 GeV, the stage's mean response and resolution
    in each 50 GeV bin equal the true ones (from 400,000 draws of the true distribution) within
    4 standard errors of the training sample in that bin (the fit cannot know more than that)."""
    rng = np.random.default_rng(1)
    ep = rng.uniform(100.0, 500.0, 8000)
    stage = EnergyStage()
    fit = fit_energy_stage(stage, ep, response(ep, rng) * ep)
    assert all(p.requires_grad is False for p in stage.parameters())
    assert fit.n == 8000 and np.isfinite(fit.nll)
    e_true = rng.uniform(100.0, 500.0, 400_000)
    u_true = response(e_true, rng)
    with torch.no_grad():
        e_t = torch.tensor(e_true / 100.0, dtype=torch.float32).unsqueeze(1)
        gen = torch.Generator().manual_seed(7)
        u_model = stage(e_t, torch.randn(len(e_t), 1, generator=gen)).squeeze(1).numpy()
    for lo in range(100, 500, 50):
        t = (e_true >= lo) & (e_true < lo + 50)
        n_train = int(((ep >= lo) & (ep < lo + 50)).sum())
        m, s = u_true[t].mean(), u_true[t].std()
        mm, sm = u_model[t].mean(), u_model[t].std()
        assert abs(mm - m) < 4 * s / np.sqrt(n_train), (lo, mm, m)
        # the standard error of a standard deviation, with the tail's kurtosis (~4): s sqrt(3/4n)
        assert abs(sm - s) < 4 * s * np.sqrt(0.75 / n_train), (lo, sm, s)
    # a wrong response is told apart by the same bounds (the test can fail)
    lo_bin = (e_true >= 100) & (e_true < 150)
    n_lo = int(((ep >= 100) & (ep < 150)).sum())
    shifted = u_model[lo_bin] * 1.01
    assert abs(shifted.mean() - u_true[lo_bin].mean()) > 4 * u_true[lo_bin].std() / np.sqrt(n_lo)


def test_a_two_stage_shower_deposits_what_its_energy_stage_draws(tmp_path: Path) -> None:
    spec = two_stage_spec(spec_conv2d(0.1))
    assert spec.arch == TWO_STAGE and spec.noise_dim == 201 and spec.latent_dim == 202
    torch.manual_seed(0)
    g, d = build(spec)
    assert d is not None
    rng = np.random.default_rng(0)
    ep = rng.uniform(100.0, 500.0, 64)
    fit_energy_stage(g.energy, ep, response(ep, rng) * ep)
    g.eval()
    energies = np.array([100.0, 250.0, 500.0] * 4)
    showers = sample_showers(TorchGenerator(spec, g), energies, seed=3)
    assert showers.shape == (12, 25, 25, 25) and np.all(showers >= 0)
    noise = np.random.default_rng(3).standard_normal((12, spec.noise_dim)).astype(np.float32)
    latent = torch.from_numpy(condition_latent(noise, energies, spec))
    with torch.no_grad():
        u = g.energy(latent[:, 201:202], latent[:, 200:201]).squeeze(1).numpy()
    again = sample_showers(TorchGenerator(spec, g), energies, noise=noise)
    np.testing.assert_allclose(
        again.reshape(12, -1).sum(1, dtype=np.float64), u * energies, rtol=2e-5
    )
    # the checkpoint round trip keeps the fitted energy stage and the GeV unit
    save_checkpoint(tmp_path / "m.pt", Checkpoint(spec, g, d))
    ck = load_checkpoint(tmp_path / "m.pt")
    np.testing.assert_array_equal(
        sample_showers(TorchGenerator(ck.spec, ck.generator), energies, noise=noise), again
    )


def test_training_with_an_energy_stage_gives_the_datas_energy_scale(tmp_path: Path) -> None:
    """One tiny epoch leaves the shape network untrained, yet the model's mean response at
    150 GeV is the data's within statistical errors: the energy is right by construction. The
    shape network starts from a single-stage model (``--init``), recorded by its checksum."""
    from caloquant.fileio import file_sha256

    torch.manual_seed(3)
    save_checkpoint(tmp_path / "init.pt", Checkpoint(spec_conv2d(0.1), *build(spec_conv2d(0.1))))
    s, e = toy_showers(400, 5, lo=100.0, hi=200.0)
    write_showers(tmp_path / "train.h5", s[:160], e[:160])  # 10 steps: the shape stays crude
    sv, ev = toy_showers(40, 6, lo=100.0, hi=200.0)
    write_showers(tmp_path / "val.h5", sv, ev)
    res = train(
        TrainConfig(
            data=[str(tmp_path / "train.h5")],
            val_data=str(tmp_path / "val.h5"),
            out=str(tmp_path / "run"),
            model="conv2d",
            width=0.1,
            batch=16,
            epochs=1,
            threads=1,  # a tiny model: one thread is fastest on a busy 2-core host
            energy_stage=True,
            energy_range=(100.0, 200.0),
            init=str(tmp_path / "init.pt"),
        )
    )
    ck = load_checkpoint(res.model)
    assert ck.spec.arch == TWO_STAGE and "energy_stage_fit" in ck.provenance
    assert ck.provenance["init"]["sha256"] == file_sha256(tmp_path / "init.pt")
    # the starting model is scored first ("epoch 0"): training cannot make the result worse
    epochs = json.loads((tmp_path / "run" / "validation.json").read_text())["epochs"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    r_data = s.reshape(len(s), -1).sum(1) / e  # the 160 training showers and 240 more
    sel = np.abs(e - 150.0) < 25.0
    n_model = 400
    fake = sample_showers(TorchGenerator(ck.spec, ck.generator), np.full(n_model, 150.0), seed=1)
    assert np.all(np.isfinite(fake)) and np.all(fake >= 0)
    r_model = fake.reshape(n_model, -1).sum(1, dtype=np.float64) / 150.0
    err = np.hypot(r_data[sel].std() / np.sqrt(sel.sum()), r_model.std() / np.sqrt(n_model))
    assert abs(r_model.mean() - r_data[sel].mean()) < 4 * err, (r_model.mean(), r_data[sel].mean())
    assert 0.5 < r_model.std() / r_data[sel].std() < 1.5


def test_quantizers_leave_the_energy_stage_in_float32() -> None:
    """Naive int8 (every unit the engine would quantize) of a two-stage model changes where the
    energy goes, never how much: the energy stage and the normalisation are outside the model's
    quantized scope (without it, OpenVINO int8 on the normalisation ops lost 67-79 % of the
    energy at 300-500 GeV)."""
    from caloquant.precision.backends import make_backend

    spec = two_stage_spec(spec_conv2d(0.1))
    torch.manual_seed(0)
    g, _ = build(spec)
    rng = np.random.default_rng(0)
    ep = rng.uniform(100.0, 500.0, 256)
    fit_energy_stage(g.energy, ep, response(ep, rng) * ep)
    g.eval()
    energies = np.array([100.0, 300.0, 500.0] * 8)
    latent = condition_latent(rng.standard_normal((24, spec.noise_dim)), energies, spec)
    calib = condition_latent(
        rng.standard_normal((64, spec.noise_dim)), rng.uniform(100.0, 500.0, 64), spec
    )
    with torch.no_grad():
        ref = g(torch.from_numpy(latent)).numpy()
    for name in ("openvino", "torch"):
        backend = make_backend(name, g, spec.latent_dim, 1)
        units = backend.units(calib)
        assert units and all("energy" not in u for u in units), (name, units)
        if name == "openvino":
            out = np.asarray(backend.int8_model(calib, None, "minmax")(latent))
            assert np.abs(out - ref).max() > 0  # the shape network did run in int8
            np.testing.assert_allclose(
                out.reshape(24, -1).sum(1), ref.reshape(24, -1).sum(1), rtol=1e-4
            )
