"""Training: models and recipes, streaming data, checkpoints and resume after SIGKILL, DDP with
torchrun, per-epoch validation and the selected model, bad input.

Tiny Conv2D models (width 0.1) on toy showers keep every run to a few seconds; the toy showers
sit at three fixed energies so the per-epoch optimisation metric has its energy windows filled.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch

from caloquant.data import write_showers
from caloquant.errors import CaloquantError
from caloquant.models import (
    Conv2DDiscriminator,
    Conv2DGenerator,
    Discriminator3DGAN,
    Generator3DGAN,
    load_checkpoint,
)
from caloquant.train import TrainConfig, Trainer, load_run_state, train
from caloquant.train.data import ShowerStream, split_rows
from caloquant.train.recipes import RECIPES
from caloquant.train.weights import rescale
from tests.ddp_first_step import MIXED_FAKE_SCALE
from tests.helpers import assert_one_line_error, toy_showers

REPO = Path(__file__).resolve().parents[1]
POINTS = (110.0, 150.0, 190.0)
TINY = ["--model", "conv2d", "--width", "0.1", "--batch", "4", "--threads", "1", "--val-n", "30"]


def toy_file(path: Path, per_point: int, seed: int, attrs: dict[str, object] | None = None) -> Path:
    """Toy showers at 110, 150 and 190 GeV, interleaved (so every file part has all three)."""
    parts = [toy_showers(per_point, seed + i, lo=p, hi=p) for i, p in enumerate(POINTS)]
    order = np.argsort(np.tile(np.arange(per_point), 3), kind="stable")
    s = np.concatenate([x[0] for x in parts])[order]
    e = np.concatenate([x[1] for x in parts])[order]
    return write_showers(path, s, e, attrs=attrs)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and on a busy 2-core host two threads wait on each
    other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("toy")
    return {
        "train": toy_file(d / "train.h5", 10, 0),
        "train2": toy_file(d / "train2.h5", 4, 10),
        "small": toy_file(d / "small.h5", 4, 30, {"engine": "geant4", "geometry_hash": "c0ffee"}),
        "val": toy_file(d / "val.h5", 4, 20),
    }


# the authors' recipe (the defaults add the energy stage, the physics term and no generator
# dropout; their own tests set them)
AUTHORS = {"energy_stage": False, "physics_loss": 0.0, "generator_dropout": True}
AUTHORS_FLAGS = ["--no-energy-stage", "--physics-loss", "0", "--generator-dropout"]


def tiny_cfg(toy: dict[str, Path], out: Path, **kw: object) -> TrainConfig:
    base = dict(
        **AUTHORS,
        data=[str(toy["train"])],
        out=str(out),
        model="conv2d",
        width=0.1,
        batch=4,
        threads=1,
        val_data=str(toy["val"]),
        val_n=30,
        epochs=1,
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def no_dropout(*modules: torch.nn.Module) -> None:
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, torch.nn.Dropout):
                sub.p = 0.0


# ---------------------------------------------------------------------------------------------
# models and recipes


def test_conv2d_discriminator_is_the_papers() -> None:
    d = Conv2DDiscriminator()
    trainable = sum(p.numel() for p in d.parameters())
    bn_stats = sum(b.numel() for n, b in d.named_buffers() if "running" in n)
    assert (
        abs(trainable + bn_stats - 714_000) < 1_000
    )  # "about 714,000 parameters" (Keras counts BN statistics)
    p, aux, ecal = d.eval()(torch.rand(3, 25, 25, 25))
    assert p.shape == aux.shape == ecal.shape == (3,) and torch.all((p > 0) & (p < 1))
    assert sum(p.numel() for p in Conv2DDiscriminator(0.5).parameters()) < trainable / 2


def test_conv2d_discriminator_learns_real_from_generated_only_in_mixed_batches(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """BatchNorm right before the heads: in training mode the batch mean of the real/fake logit
    is w . beta + b for any batch, so separate real and generated batches look alike on average
    (the trained-here run that showed it: d_bce 0.69-0.70 for 9 epochs); with the recipe's mixed
    batches a few discriminator updates separate them."""
    assert RECIPES["conv2d"].mixed_batches and not RECIPES["gan3d"].mixed_batches
    tr = Trainer(tiny_cfg(toy, tmp_path / "r", batch=8))
    parts, _ = split_rows([str(toy["train"])], [30], None)
    s, e = next(ShowerStream(parts, 8, 0, cell_scale=100.0, cell_threshold=1e-6).epoch(0))
    real = torch.from_numpy(s)
    fake, e_fake = tr.predict(8)
    logits: list[torch.Tensor] = []
    hook = tr.d_raw.generation.register_forward_hook(lambda m, i, o: logits.append(o.detach()))
    with torch.no_grad():
        tr.d_raw(real), tr.d_raw(fake)
    hook.remove()
    assert abs(float(logits[0].mean() - logits[1].mean())) < 1e-4  # blind on average, exactly
    is_real = torch.cat([torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)])
    target = torch.where(is_real, 0.9, 0.1)  # no label flips: a deterministic check
    seen = []
    for _ in range(40):
        out = tr.discriminator_backward(
            torch.cat([real, fake]), torch.cat([torch.from_numpy(e), e_fake]), is_real, target
        )
        tr.opt_d.step()
        seen.append((float(out.p_real[:8].mean() - out.p_real[8:].mean()), out.bce.item()))
    (sep0, bce0), (sep, bce) = seen[0], seen[-1]  # before the first update, after the last
    assert sep > 0.3 and sep > sep0 + 0.2, seen[::10]
    assert bce < 0.6 and bce < bce0 - 0.1, seen[::10]  # below chance (ln 2 = 0.69)


@pytest.mark.parametrize("arch", ["conv2d", "conv3d"])
def test_unit_conversion_is_exact(arch: str) -> None:
    """Training units (cells x s) <-> GeV by rescaling the first / last convolutions only."""
    torch.manual_seed(0)
    g, d = (
        (Conv2DGenerator(0.2), Conv2DDiscriminator(0.2))
        if arch == "conv2d"
        else (Generator3DGAN(), Discriminator3DGAN())
    )
    g.eval(), d.eval()
    s = 100.0
    g_gev, d_gev = rescale(g, d, s)
    z = torch.randn(3, 200)
    with torch.no_grad():
        x = g(z)
        torch.testing.assert_close(g_gev(z) * s, x, rtol=1e-5, atol=1e-6 * float(x.abs().max()))
        p, aux, ecal = d(x)
        p2, aux2, ecal2 = d_gev(x / s)
    torch.testing.assert_close(p2, p, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(aux2, aux, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ecal2 * s, ecal, rtol=1e-5, atol=1e-5)


def test_recipes_carry_the_authors_numbers() -> None:
    g3, c2 = RECIPES["gan3d"], RECIPES["conv2d"]
    assert (
        g3.loss_weights == (6.0, 0.1, 0.1)
        and g3.optimizer == "rmsprop"
        and g3.g_steps == 2
        and g3.flip_prob == 0.05
    )
    assert (
        c2.loss_weights == (6.0, 0.2, 0.1)
        and c2.optimizer == "adam"
        and (c2.lr_g, c2.lr_d) == (5e-4, 1e-4)
    )
    np.testing.assert_allclose(
        g3.ecal_target(np.array([100.0, 500.0])), [2.0, 10.0]
    )  # 2 * Ep/100, GeV
    ratio = np.polyval([0.0018, -0.023, 0.11, -0.28, 2.21], 2.0)
    np.testing.assert_allclose(
        c2.ecal_target(np.array([200.0])), [ratio * 2.0 * 100.0]
    )  # cells x 100
    assert c2.energy_range(1) == (100.0, 400.0) and c2.energy_range(2) == (2.0, 500.0)
    assert c2.lr_factor(79) == 1.0 and c2.lr_factor(90) == pytest.approx(np.exp(-0.12))


def test_the_recipe_follows_the_training_data() -> None:
    """On data of 100-500 GeV the Conv2D recipe generates showers only there (not 2-500), the
    model's valid range says so, and the ECAL target is the authors' form fitted to the data:
    a known Ecal/Ep curve is recovered from noisy showers."""
    from caloquant.train.recipes import fit_ecal

    c2 = RECIPES["conv2d"].for_data((100.0, 500.0), None)
    assert c2.energy_range(1) == (100.0, 400.0) and c2.energy_range(2) == (100.0, 500.0)
    assert c2.ecal_fit == RECIPES["conv2d"].ecal_fit
    rng = np.random.default_rng(0)
    e = rng.uniform(100, 500, 5000)
    true = (0.01, -0.05, 2.5)  # 100 Ecal/Ep = 0.01 u^2 - 0.05 u + 2.5
    ecal = np.polyval(true, e / 100) * e / 100 * rng.normal(1, 0.02, e.size)
    fit = fit_ecal(ecal, e, degree=2)
    np.testing.assert_allclose(fit, true, rtol=0.05, atol=0.01)
    fitted = RECIPES["conv2d"].for_data((100.0, 500.0), fit)
    np.testing.assert_allclose(
        fitted.ecal_target(np.array([300.0])), [np.polyval(fit, 3.0) * 3.0 * 100.0]
    )
    tr = Trainer(
        TrainConfig(data=["unused.h5"], out="unused", model="conv2d", width=0.1), recipe=c2
    )
    assert tr.spec.energy_range_gev == (100.0, 500.0)
    with pytest.raises(CaloquantError, match="does not overlap"):
        RECIPES["conv2d"].for_data((600.0, 700.0), None)


def test_init_from_the_cern_3dgan(
    cern_checkpoint: Path, toy: dict[str, Path], tmp_path: Path
) -> None:
    """--init with the imported Keras weights: training starts from them, and the export at
    step 0 is the CERN generator itself; one update of the authors' recipe stays finite."""
    cfg = TrainConfig(
        data=[str(toy["train"])],
        out=str(tmp_path / "r"),
        model="gan3d",
        batch=2,
        threads=1,
        init=str(cern_checkpoint),
        **AUTHORS,  # type: ignore[arg-type]
    )
    tr = Trainer(cfg)
    ref = load_checkpoint(cern_checkpoint)
    g, d = tr.export()
    for a, b in ((g, ref.generator), (d, ref.discriminator)):
        for (k, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, v2), k
    s, e = toy_showers(2, 3, 100, 500)
    losses = tr.step(s, e)
    assert all(np.isfinite(v) for v in losses.values())
    assert not torch.equal(tr.g_raw.output_conv.weight, ref.generator.output_conv.weight)


def test_init_takes_a_built_in_model_name(tmp_path: Path) -> None:
    """--init resolves like every --model (issue 26): a built-in name starts from its weights (the
    two-stage conv2d-g4 starts a two-stage run, the default recipe; a single-stage run cannot take
    it and says so in one line); an unknown name is refused when the configuration is made,
    naming the choices."""
    from caloquant.models import model_ref

    cfg = TrainConfig(data=["unused.h5"], out=str(tmp_path / "r"), width=0.5, init="conv2d-g4")
    assert cfg.init == "conv2d-g4" and cfg.energy_stage
    single = replace(cfg, **AUTHORS)  # type: ignore[arg-type]
    with pytest.raises(CaloquantError, match="holds a two-stage model"):
        Trainer(single)
    tr = Trainer(cfg)
    g, _ = tr.export()
    ref = model_ref("conv2d-g4").float_checkpoint()
    for (k, v), v2 in zip(g.state_dict().items(), ref.generator.state_dict().values()):
        torch.testing.assert_close(v, v2, msg=k)
    # a trained start skips the LeakyReLU-output warm-up of a generator trained from scratch
    assert tr.recipe.leaky_output_epochs > 0 and tr.g_raw.output_slope == 0.0
    assert Trainer(replace(cfg, init=None)).g_raw.output_slope > 0.0
    with pytest.raises(CaloquantError, match="built-in: cern-3dgan"):
        TrainConfig(data=["unused.h5"], out=str(tmp_path / "r"), init="conv2d-g5")


def test_valid_range_is_the_range_the_data_were_made_for(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """The model's valid energy range is the one its training data were made for, as their
    generator declared it (a file attribute, a reference set's manifest) or --energy-range, not
    the extreme energies drawn (issue 26: conv2d-g4 refused 100 and 500 GeV)."""
    from caloquant.train.data import declared_energy_range

    declared = toy_file(tmp_path / "declared.h5", 10, 40, {"energy_range_gev": [100.0, 200.0]})
    res = train(tiny_cfg(toy, tmp_path / "run", data=[str(declared)]))
    ck = load_checkpoint(res.model)
    assert ck.spec.energy_range_gev == (100.0, 200.0)
    assert "energy_range_gev attribute" in ck.provenance["energy_range"]
    # a shard of a reference set, beside the set's manifest: the set's definition declares it
    (tmp_path / "train").mkdir()
    shard = toy_file(tmp_path / "train" / "shard_0000.h5", 2, 50)
    (tmp_path / "train" / "manifest.json").write_text(json.dumps({"set": "train", "shards": []}))
    parts, _ = split_rows([str(shard)], [6], None)
    assert declared_energy_range(parts) == ((100.0, 500.0), ANY)
    # nothing declared: None (the run falls back to the extremes, and says so in its log)
    parts, _ = split_rows([str(toy["train"])], [30], None)
    assert declared_energy_range(parts) is None
    # declared by the training command; data outside it, or an impossible range, are refused
    with pytest.raises(CaloquantError, match="outside --energy-range 120:300"):
        train(tiny_cfg(toy, tmp_path / "run2", energy_range=(120, 300)))
    with pytest.raises(CaloquantError, match="--energy-range"):
        tiny_cfg(toy, tmp_path / "run3", energy_range=(0, 300))
    # one check for the CLI's "LO:HI" and the Python API's pair: the shared parse_energy_range,
    # with its 10 TeV limit
    assert tiny_cfg(toy, tmp_path / "run3", energy_range="120:300").energy_range == (120.0, 300.0)
    for bad in ((100, 2e4), "100:20000", (100, float("inf")), "abc"):
        with pytest.raises(CaloquantError, match="--energy-range"):
            tiny_cfg(toy, tmp_path / "run3", energy_range=bad)


# ---------------------------------------------------------------------------------------------
# data


def test_stream_covers_each_row_once_resumes_and_shards(toy: dict[str, Path]) -> None:
    files = [str(toy["train"]), str(toy["train2"])]
    parts, held = split_rows(files, [30, 12], 0.1)
    assert [(p.start, p.stop) for p in parts] == [(0, 27), (0, 11)] and [
        (p.start, p.stop) for p in held
    ] == [(27, 30), (11, 12)]

    def ids(stream: ShowerStream, epoch: int, start: int = 0) -> list[np.ndarray]:
        # a shower's identity: its energy and total energy (unique in toy data)
        return [
            np.round(s.reshape(len(s), -1).sum(1) * 1e3 + e, 3)
            for s, e in stream.epoch(epoch, start)
        ]

    one = ShowerStream(parts, batch=6, seed=1, shuffle_buffer=16)
    ep0 = ids(one, 0)
    assert len(ep0) == 38 // 6
    seen = np.concatenate(ep0)
    assert len(np.unique(seen)) == len(seen)  # no row twice
    with_all = ShowerStream(parts, batch=38, seed=1)
    assert (
        len(np.unique(np.concatenate(ids(with_all, 0)))) == 38
    )  # the whole training set, no held-out row
    assert [a.tolist() for a in ids(one, 0, start=3)] == [
        a.tolist() for a in ep0[3:]
    ]  # resume mid-epoch
    assert ids(one, 1)[0].tolist() != ep0[0].tolist()  # another epoch, another order
    r0, r1 = (
        ShowerStream(parts, batch=6, seed=1, rank=r, world=2, shuffle_buffer=16) for r in (0, 1)
    )
    for a, b, full in zip(ids(r0, 0), ids(r1, 0), ep0):
        assert np.concatenate([a, b]).tolist() == full.tolist()  # two ranks = one process's batch


def test_the_exported_generator_is_the_moving_average(toy: dict[str, Path], tmp_path: Path) -> None:
    """``ema``: validation and export see the exponential moving average of the generator's
    weights (the first update copies, then ema * average + (1 - ema) * weights), a resume keeps
    it, and ``ema=0`` exports the raw generator."""
    cfg = tiny_cfg(toy, tmp_path / "r", ema=0.5)
    tr = Trainer(cfg)
    name = next(k for k, v in tr.g_raw.state_dict().items() if k.endswith("weight"))
    s, e = toy_showers(4, 5, 110, 190)
    seen = []
    for _ in range(3):
        tr.step(s, e)
        seen.append(tr.g_raw.state_dict()[name].clone())
    expected = 0.25 * seen[0] + 0.25 * seen[1] + 0.5 * seen[2]
    torch.testing.assert_close(tr.export()[0].state_dict()[name], expected)
    assert not torch.allclose(expected, seen[2])
    # BatchNorm statistics are averaged too
    bn = next(k for k in tr.g_raw.state_dict() if k.endswith("running_mean"))
    avg = tr.g_ema.module.state_dict()[bn]  # type: ignore[union-attr]
    assert not torch.allclose(avg, tr.g_raw.state_dict()[bn])
    # a resume (last.pt is written with torch.save, read with weights_only) keeps the average
    torch.save(tr.state(), tmp_path / "state.pt")
    again = Trainer(cfg)
    again.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    torch.testing.assert_close(again.export()[0].state_dict()[name], expected)
    torch.testing.assert_close(again.g_ema.module.state_dict()[bn], avg)  # type: ignore[union-attr]
    raw = Trainer(replace(cfg, ema=0.0))
    raw.step(s, e)
    assert torch.equal(raw.export()[0].state_dict()[name], raw.g_raw.state_dict()[name])


def test_the_discriminator_can_see_the_cells_to_a_power(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """``d_input_power``: the discriminator's losses are computed on cells ** p (shifted so that
    an empty cell keeps a finite gradient); the ECAL term stays on the raw cells; 1 leaves the
    cells as they are."""
    tr = Trainer(tiny_cfg(toy, tmp_path / "r", d_input_power=0.5))
    s, e = toy_showers(4, 5, 110, 190)
    x, energies = torch.from_numpy(s), torch.from_numpy(e)
    torch.testing.assert_close(tr.d_input(x), (x + 1e-6) ** 0.5 - 1e-3)
    empty = torch.zeros(2, 3, requires_grad=True)
    tr.d_input(empty).sum().backward()
    assert torch.isfinite(empty.grad).all()  # type: ignore[arg-type]
    d = tr.d_raw.eval()
    ecal = x.flatten(1).sum(1)
    with torch.no_grad():
        seen = tr.losses(d, x, torch.ones(len(e)), energies, ecal)
        torch.testing.assert_close(seen.p_real, d(tr.d_input(x))[0])
        assert not torch.allclose(seen.p_real, d(x)[0])
    assert float(seen.ecal) == 0.0  # the ECAL term read the raw sums
    assert Trainer(tiny_cfg(toy, tmp_path / "r")).d_input(x) is x


def test_the_physics_term_draws_the_real_batch_energies_and_reaches_the_generator(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """``physics_loss`` W > 0: the generator updates generate at the real batch's energies and
    their loss has W times the physics term (logged as g_phys); W = 0 draws its own energies."""
    s, e = toy_showers(4, 5, 110, 190)
    seen: list[np.ndarray] = []
    for w in (0.0, 1.0):
        tr = Trainer(tiny_cfg(toy, tmp_path / f"r{w}", physics_loss=w))
        generate = tr.generate
        seen.clear()

        def spy(module, noise, energies, generate=generate):  # type: ignore[no-untyped-def]
            seen.append(energies.numpy().copy())
            return generate(module, noise, energies)

        tr.generate = spy  # type: ignore[method-assign]
        out = tr.step(s * tr.recipe.cell_scale, e)
        g_updates = seen[-tr.recipe.g_steps :]
        if w:
            assert out["g_phys"] > 0 and np.isfinite(out["g_phys"])
            assert all(np.array_equal(g, e) for g in g_updates)
        else:
            assert out["g_phys"] == 0.0
            assert not any(np.array_equal(g, e) for g in g_updates)
    layered = Trainer(
        tiny_cfg(
            toy,
            tmp_path / "layers",
            physics_loss=1.0,
            physics_layers=True,
            physics_layer_cells=True,
        )
    )
    assert np.isfinite(layered.step(s * layered.recipe.cell_scale, e)["g_phys"])


def test_without_generator_dropout_the_trained_network_is_the_deployed_one(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """``generator_dropout=False``: the generator's training-mode passes are deterministic (no
    dropout layer left), its checkpoint has the same keys; the authors' recipe keeps dropout."""
    outs = {}
    for on in (True, False):
        tr = Trainer(tiny_cfg(toy, tmp_path / f"r{on}", generator_dropout=on))
        kinds = {type(m) for m in tr.g_raw.modules()}
        assert (torch.nn.Dropout in kinds) is on
        torch.manual_seed(3)
        lat = tr.draw(16)  # noise and energies
        with torch.no_grad():
            a, b = (tr.generate(tr.g_raw, *lat) for _ in range(2))
        assert torch.equal(a, b) is not on
        outs[on] = set(tr.export()[0].state_dict())
    assert outs[True] == outs[False]


def test_a_run_keeps_the_value_of_a_setting_it_predates(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """A run saved before ``physics_loss`` existed resumes with the authors' loss it was trained
    with, under the command that started it (the default); asking for another value explicitly
    is refused."""
    default = TrainConfig.__dataclass_fields__["physics_loss"].default
    cfg = tiny_cfg(toy, tmp_path / "r", physics_loss=default)
    saved = {k: v for k, v in cfg.to_dict().items() if k != "physics_loss"}
    assert cfg.physics_loss == 5.0
    cfg.check_resumable(saved, tmp_path / "r")
    assert cfg.physics_loss == 0.0
    with pytest.raises(CaloquantError, match="physics_loss=0.0"):
        tiny_cfg(toy, tmp_path / "r", physics_loss=1.0).check_resumable(saved, tmp_path / "r")
    # a run saved under an older default (the single generator) resumes under the command that
    # started it, now that the default is the two-stage model
    old = {**cfg.to_dict(), "energy_stage": False}
    again = tiny_cfg(toy, tmp_path / "r", energy_stage=True)
    again.check_resumable(old, tmp_path / "r")
    assert again.energy_stage is False


def test_stream_memory_is_bounded_by_the_shuffle_buffer(tmp_path: Path) -> None:
    import tracemalloc

    n = 512
    s, e = toy_showers(n, 4, 100, 500)
    path = write_showers(tmp_path / "big.h5", s, e)
    del s
    parts, _ = split_rows([str(path)], [n], None)
    stream = ShowerStream(parts, batch=16, seed=0, shuffle_buffer=64)
    tracemalloc.start()
    try:
        rows = sum(len(b) for b, _ in stream.epoch(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == n
    shower = 25**3 * 4
    assert (
        peak < (2 * 64 + 64 + 16 + 8) * shower < 0.5 * n * shower
    )  # two windows, a block, a batch: not the file


# ---------------------------------------------------------------------------------------------
# a whole run


def test_run_writes_a_model_that_the_cli_accepts(toy: dict[str, Path], tmp_path: Path, cli) -> None:
    data = [str(toy["train2"]), str(toy["small"])]
    res = train(
        tiny_cfg(
            toy,
            tmp_path / "run",
            epochs=2,
            batch=6,
            checkpoint_every=3,
            data=data,
            tensorboard=True,
        )
    )
    run = tmp_path / "run"
    assert res.steps == 2 * (24 // 6) and res.epochs_done == 2
    val = json.loads((run / "validation.json").read_text())
    metrics = [h["metric"] for h in val["epochs"]]
    assert [h["epoch"] for h in val["epochs"]] == [1, 2] and all(np.isfinite(metrics))
    assert val["selected_epoch"] == res.best_epoch == 1 + int(np.argmin(metrics))
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, res.steps + 1)) and float(
        rows[-1]["showers_per_s"]
    ) > 0
    ck = load_checkpoint(run / "model.pt")
    assert (
        ck.spec.arch == "3dgan-conv2d"
        and ck.provenance["epoch"] == res.best_epoch
        and ck.discriminator is not None
    )
    # where the showers came from, from the files' own attributes (the toy train2 file has none)
    assert ck.provenance["data_sources"] == {
        "train_rows_per_engine": {"unknown": 12, "geant4": 12},
        "geometry_hashes": ["c0ffee"],
        "physics_lists": [],
    }
    assert load_run_state(run / "last.pt")["step"] == res.steps
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    r = cli(
        "sample",
        "--model",
        run / "model.pt",
        "--n",
        "12",
        "--energy",
        "150",
        "-o",
        tmp_path / "s.h5",
        "--threads",
        "1",
    )
    assert r.code == 0, r.err
    r = cli("validate", toy["val"], tmp_path / "s.h5", "--bins", "points:150")
    assert r.code == 0, r.err
    r = cli(
        "bench",
        "--model",
        run / "model.pt",
        "--threads",
        "1",
        "--streams",
        "1",
        "--batch",
        "2",
        "--duration",
        "0.2",
        "--rounds",
        "1",
        "--no-profile",
        "--no-ceilings",
    )
    assert r.code == 0, r.err
    # resuming a finished run with the same number of epochs does nothing
    assert train(tiny_cfg(toy, run, epochs=2, batch=6, resume=True, data=data)).steps == res.steps


def test_bf16_training_steps(toy: dict[str, Path], tmp_path: Path) -> None:
    tr = Trainer(tiny_cfg(toy, tmp_path / "r", precision="bf16", channels_last=True))
    s, e = toy_showers(4, 5, 110, 190)
    before = tr.g_raw.output_conv.weight.detach().clone()
    for _ in range(2):
        losses = tr.step(s * 100, e)
    assert all(np.isfinite(v) for v in losses.values())
    assert tr.g_raw.output_conv.weight.dtype == torch.float32 and not torch.equal(
        tr.g_raw.output_conv.weight, before
    )


def _run_cli(args: list[str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "caloquant.cli", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )


def _logged_steps(run: Path) -> list[int]:
    try:
        return [int(r["step"]) for r in csv.DictReader((run / "log.csv").open())]
    except (FileNotFoundError, KeyError, ValueError):
        return []


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """12 showers, batch 4: 3 steps per epoch, 2 epochs; checkpoints at steps 2, 3 (epoch end), 4,
    6. The run is killed once step 5 is logged, resumes from step 4 and must end where an
    uninterrupted run (started at the same time) ends."""
    every, total = 2, 2 * (12 // 4)
    args = [
        *TINY,
        *AUTHORS_FLAGS,  # 12 showers: too few for the energy stage's fit
        "--data",
        str(toy["small"]),
        "--val-data",
        str(toy["val"]),
        "--epochs",
        "2",
        "--seed",
        "7",
        "--checkpoint-every",
        str(every),
    ]
    full = _run_cli([*args, "-o", str(tmp_path / "full")])  # both at once: 1 thread each on 2 cores
    killed = _run_cli([*args, "-o", str(tmp_path / "killed")])
    deadline = time.time() + 120
    while time.time() < deadline and 5 not in _logged_steps(tmp_path / "killed"):
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = max(_logged_steps(tmp_path / "killed"))
    saved = load_run_state(tmp_path / "killed" / "last.pt")["step"]
    assert (
        done < total and done - every <= saved <= done
    )  # killed mid-run; at most one interval lost
    resumed = _run_cli([*args, "--resume", "-o", str(tmp_path / "killed")])
    for p in (full, resumed):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    a, b = (load_run_state(tmp_path / r / "last.pt") for r in ("full", "killed"))
    assert a["step"] == b["step"] == total
    for part in ("generator", "discriminator", "opt_g", "opt_d"):
        ta, tb = a[part], b[part]
        flat_a = ta["state"] if part.startswith("opt") else ta
        flat_b = tb["state"] if part.startswith("opt") else tb
        for k, v in flat_a.items():
            for name, x in v.items() if isinstance(v, dict) else [("", v)]:
                y = flat_b[k][name] if isinstance(v, dict) else flat_b[k]
                assert torch.equal(x, y), f"{part}.{k}{name} differs after resume"
    assert _logged_steps(tmp_path / "killed") == list(range(1, total + 1))  # every step logged once
    ga, gb = (
        load_checkpoint(tmp_path / r / "model.pt").generator.state_dict()
        for r in ("full", "killed")
    )
    assert all(torch.equal(v, gb[k]) for k, v in ga.items())


def test_a_crash_while_writing_a_checkpoint_keeps_the_last_good_one(
    toy: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save, calls = torch.save, []

    def failing_save(obj: object, f: object, *a: object, **k: object) -> None:
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint: half a file, then the disk is "full"
            Path(str(f)).write_bytes(b"PK\x03\x04 truncated")
            raise OSError(28, "No space left on device")
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        train(tiny_cfg(toy, tmp_path / "run", checkpoint_every=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert load_run_state(tmp_path / "run" / "last.pt")["step"] == 2
    assert (
        sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []
    )  # no temp file left
    assert train(tiny_cfg(toy, tmp_path / "run", checkpoint_every=2, resume=True)).steps == 30 // 4


# ---------------------------------------------------------------------------------------------
# data parallel


def test_resume_refuses_a_run_started_with_another_recipe(
    toy: dict[str, Path], tmp_path: Path
) -> None:
    """A run started before the recipe changed (here: the discriminator's separate batches) is not
    switched to the new one mid-run."""
    run = tmp_path / "run"
    train(tiny_cfg(toy, run, checkpoint_every=2))
    cfg = json.loads((run / "config.json").read_text())
    cfg["recipe"]["mixed_batches"] = False
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CaloquantError, match=r"another recipe \(mixed_batches differ\)"):
        train(tiny_cfg(toy, run, epochs=2, resume=True))


@pytest.mark.slow
def test_torchrun_two_processes_average_the_gradients(toy: dict[str, Path], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_first_step.py"),
        str(toy["small"]),
        str(toy["val"]),
        str(tmp_path),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    ddp_grads = torch.load(tmp_path / "grads.pt", weights_only=True)

    # one process, the two half-batches one after the other, gradients averaged by hand
    cfg = tiny_cfg(toy, tmp_path / "single", batch=8, data=[str(toy["small"])])
    tr = Trainer(cfg)
    no_dropout(tr.g_raw, tr.d_raw)
    parts, _ = split_rows(cfg.data, [12], None)
    s, e = next(ShowerStream(parts, 8, cfg.seed, cell_scale=100.0, cell_threshold=1e-6).epoch(0))
    noise = torch.randn(8, 200, generator=torch.Generator().manual_seed(3))
    e_fake = torch.linspace(100.0, 400.0, 8, dtype=torch.float64)
    expect: dict[str, list[torch.Tensor]] = {}
    is_real = torch.cat([torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)])
    for half in (slice(0, 4), slice(4, 8)):
        tr.discriminator_backward(
            torch.from_numpy(s[half]), torch.from_numpy(e[half]), True, torch.full((4,), 0.9)
        )
        tr.generator_backward(noise[half], e_fake[half])
        for name, mod in (("d", tr.d_raw), ("g", tr.g_raw)):
            for k, prm in mod.named_parameters():
                expect.setdefault(f"{name}.{k}", []).append(prm.grad.clone())
        real = torch.from_numpy(s[half])
        tr.discriminator_backward(
            torch.cat([real, MIXED_FAKE_SCALE * real.flip(0)]),
            torch.cat([torch.from_numpy(e[half]), e_fake[half]]),
            is_real,
            torch.where(is_real, 0.9, 0.1),
        )
        tr.generator_backward(noise[half], e_fake[half], context=real)
        for name, mod in (("d", tr.d_raw), ("g", tr.g_raw)):
            for k, prm in mod.named_parameters():
                expect.setdefault(f"mixed.{name}.{k}", []).append(prm.grad.clone())
    assert set(expect) == set(ddp_grads)
    for k, (g0, g1) in expect.items():
        mean = (g0 + g1) / 2
        torch.testing.assert_close(
            ddp_grads[k], mean, rtol=1e-4, atol=1e-5 * float(mean.abs().max()) + 1e-12
        )
    state = load_run_state(tmp_path / "run" / "last.pt")
    assert state["world"] == 2 and len(state["rng"]) == 2 and state["step"] == 12 // 8
    assert load_checkpoint(tmp_path / "run" / "model.pt").provenance["steps"] == 12 // 8


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_ends_in_one_line(
    toy: dict[str, Path], tmp_path: Path, cli, random_checkpoint: Path
) -> None:
    s, e = toy_showers(6, 1, 110, 190, grid=12)
    other = write_showers(tmp_path / "grid12.h5", s, e)
    r = cli("train", *TINY, "--data", other, "-o", tmp_path / "a")
    assert_one_line_error(r, "grid", "(12, 12, 12)")
    import h5py

    with h5py.File(tmp_path / "empty.h5", "w") as h5:
        h5.create_dataset("ECAL", shape=(0, 25, 25, 25), dtype="f4")
        h5.create_dataset("energy", shape=(0,), dtype="f4")
    assert_one_line_error(
        cli("train", *TINY, "--data", tmp_path / "empty.h5", "-o", tmp_path / "b"), "no showers"
    )
    s, e = toy_showers(30, 2, 150, 150)
    s[5, 12, 12, 3] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as h5:
        h5.create_dataset("ECAL", data=s)
        h5.create_dataset("energy", data=e)
    r = cli(
        "train",
        *TINY,
        "--data",
        tmp_path / "nan.h5",
        "--val-data",
        toy["val"],
        "-o",
        tmp_path / "c",
    )
    assert_one_line_error(r, "NaN")
    assert_one_line_error(
        cli("train", *TINY, "--data", tmp_path / "missing.h5", "-o", tmp_path / "d"), "not found"
    )
    assert_one_line_error(
        cli("train", *TINY, "--data", str(tmp_path / "nothing*.h5"), "-o", tmp_path / "d"),
        "no file matches",
    )
    assert_one_line_error(
        cli(
            "train",
            "--model",
            "gan3d",
            "--width",
            "0.5",
            "--data",
            toy["train"],
            "-o",
            tmp_path / "e",
        ),
        "width",
    )
    assert_one_line_error(
        cli("train", "--model", "gan4d", "--data", toy["train"], "-o", tmp_path / "e"),
        "unknown model",
    )
    assert_one_line_error(
        cli("train", *TINY, "--data", toy["train"], "--precision", "fp16", "-o", tmp_path / "e"),
        "precision",
    )
    r = cli(
        "train",
        *TINY,
        "--data",
        toy["train"],
        "--val-data",
        toy["val"],
        "--init",
        random_checkpoint,
        "-o",
        tmp_path / "e",
    )
    assert_one_line_error(r, "3dgan-conv3d")
    assert_one_line_error(
        cli("train", *TINY, "--data", toy["train"], "--resume", "-o", tmp_path / "e"), "no last.pt"
    )

    # a run directory of another model or configuration
    train(tiny_cfg(toy, tmp_path / "run"))
    r = cli(
        "train", *TINY, "--data", toy["train"], "--val-data", toy["val"], "-o", tmp_path / "run"
    )
    assert_one_line_error(r, "already holds a training run")
    r = cli(
        "train",
        "--model",
        "gan3d",
        "--batch",
        "4",
        "--data",
        toy["train"],
        "--val-data",
        toy["val"],
        "--resume",
        "-o",
        tmp_path / "run",
    )
    assert_one_line_error(r, "model='conv2d'")
    r = cli(
        "train",
        *TINY[:-6],
        "--batch",
        "8",
        "--threads",
        "1",
        "--val-n",
        "30",
        "--data",
        toy["train"],
        "--val-data",
        toy["val"],
        "--resume",
        "-o",
        tmp_path / "run",
    )
    assert_one_line_error(r, "batch=4 (--batch)")  # names the flag
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "last.pt").write_bytes(b"not a checkpoint")
    r = cli(
        "train",
        *TINY,
        "--data",
        toy["train"],
        "--val-data",
        toy["val"],
        "--resume",
        "-o",
        tmp_path / "bad",
    )
    assert_one_line_error(r, "corrupt")
    with pytest.raises(CaloquantError, match="fewer than one batch"):
        train(tiny_cfg(toy, tmp_path / "f", batch=64))
    # too little validation data is no error: the selection falls back (tests/test_selection.py)


def test_selection_uses_the_metrics_own_points() -> None:
    from caloquant.physics import DEFAULT_METRIC_HALF_WIDTH_GEV, DEFAULT_METRIC_POINTS_GEV
    from caloquant.train.selection import AUTHORS_POINTS_GEV, HALF_WIDTH_GEV

    assert (
        AUTHORS_POINTS_GEV == tuple(DEFAULT_METRIC_POINTS_GEV)
        and HALF_WIDTH_GEV == DEFAULT_METRIC_HALF_WIDTH_GEV
    )


def test_validation_points_follow_the_held_out_energies() -> None:
    from caloquant.train.selection import in_windows, metric_points

    rng = np.random.default_rng(0)
    assert metric_points(rng.uniform(100, 500, 4000)) == [110.0, 150.0, 190.0]  # the authors'
    assert metric_points(np.repeat([50.0, 300.0], 5)) == [50.0, 300.0]  # fixed-energy sample
    e = rng.uniform(2, 500, 1000)
    pts = metric_points(e)
    assert len(pts) == 3 and all(in_windows(e, [p]).sum() >= 2 for p in pts)
    with pytest.raises(CaloquantError, match="at least 2"):
        metric_points(np.array([100.0, 200.0, 300.0]))
