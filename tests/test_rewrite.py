"""The exact sub-pixel rewrite of nearest-upsample + zero-pad + conv chains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from caloquant.models import Checkpoint, Generator3DGAN
from caloquant.precision import QuantizeConfig, Tolerance, load_artifact, quantize
from caloquant.precision.rewrite import fuse_upsample_conv, rewritten_convs
from caloquant.timing import RaceConfig, TimingConfig
from tests.helpers import UP_SPEC, UpGen


def _randomize_bn(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_3dgan_generator_rewrite_is_exact_and_cheaper() -> None:
    torch.manual_seed(0)
    g = Generator3DGAN().eval()
    with torch.no_grad():
        _randomize_bn(g, 1)
    g2, done = fuse_upsample_conv(g)
    assert done == ["conv2", "conv3"]
    z = torch.randn(16, 200) * 3
    with torch.no_grad():
        assert _rel(g2(z), g(z)) < 1e-5
    mods = rewritten_convs(g2)
    assert set(mods) == {"conv2", "conv3"}
    # conv2 sees a (7, 7, 8) input upsampled 2x, conv3 a (13, 14, 9) input upsampled (2, 2, 3)
    assert mods["conv2"].macs_ratio((7, 7, 8)) < 0.35
    assert mods["conv3"].macs_ratio((13, 14, 9)) < 0.4
    # the original is untouched
    assert isinstance(g.up1, nn.Upsample) and g.conv2.weight.shape == (6, 64, 6, 5, 8)


class Chain(nn.Module):
    def __init__(
        self,
        nd: int,
        scale: tuple[int, ...],
        pad: tuple[int, ...],
        k: tuple[int, ...],
        conv_pad: int,
    ) -> None:
        super().__init__()
        conv = nn.Conv3d if nd == 3 else nn.Conv2d
        padm = nn.ZeroPad3d if nd == 3 else nn.ZeroPad2d
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")
        self.pad = padm(pad)
        self.conv = conv(3, 4, k, padding=conv_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(self.pad(self.up(x))))


@pytest.mark.parametrize("nd", [2, 3])
def test_rewrite_exact_over_random_configurations(nd: int) -> None:
    rng = np.random.default_rng(nd)
    n_checked = 0
    for _ in range(25):
        scale = tuple(int(v) for v in rng.integers(1, 4, nd))
        pad = tuple(int(v) for v in rng.integers(0, 4, 2 * nd))
        k = tuple(int(v) for v in rng.integers(1, 7, nd))
        conv_pad = int(rng.integers(0, 2))
        size = tuple(int(v) for v in rng.integers(2, 6, nd))
        m = Chain(nd, scale, pad, k, conv_pad).eval()
        x = torch.randn(2, 3, *size)
        out_sizes = [
            s * L + pad[2 * (nd - 1 - i)] + pad[2 * (nd - 1 - i) + 1] + 2 * conv_pad - k[i] + 1
            for i, (s, L) in enumerate(zip(scale, size))
        ]
        if min(out_sizes) < 1:
            continue
        m2, done = fuse_upsample_conv(m)
        assert done == ["conv"], (scale, pad, k)
        with torch.no_grad():
            ref = m(x)
            got = m2(x)
        assert got.shape == ref.shape, (scale, pad, k, size)
        assert _rel(got, ref) < 1e-5, (scale, pad, k, size)
        n_checked += 1
    assert n_checked >= 15


class Branchy(nn.Module):
    """The upsampled tensor is used twice: rewriting the conv would drop the other use."""

    def __init__(self, mode: str = "nearest") -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.conv = nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up(x)
        return self.conv(u) + u[:, :, 1:-1, 1:-1]


def test_rewrite_leaves_unsafe_patterns_alone() -> None:
    m = Branchy().eval()
    assert fuse_upsample_conv(m) == (m, [])
    m = Chain(2, (2, 2), (0, 0, 0, 0), (3, 3), 0).eval()
    m.up.mode = "bilinear"
    assert fuse_upsample_conv(m)[1] == []
    m = Chain(2, (2, 2), (0, 0, 0, 0), (3, 3), 0).eval()
    m.conv.stride = (2, 2)
    assert fuse_upsample_conv(m)[1] == []


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_openvino_artifact_stores_the_compact_kernel(tmp_path: Path, precision: str) -> None:
    """The rewritten float conv is stored as its small original kernel (float16) and expanded
    by the engine at load: the file shrinks, and the reloaded artifact computes what was tuned."""
    ck = Checkpoint(UP_SPEC, UpGen().eval())
    tol = Tolerance(
        ecal_rel=1.0, moment_shift=10.0
    )  # any configuration passes: this test is about storage
    cfg = QuantizeConfig(
        backend="openvino",
        precision=precision,
        calib_n=32,
        eval_n_per_point=20,
        batch=8,
        seed=0,  # type: ignore[arg-type]
        tolerance=tol,
        timing=TimingConfig(window_s=0.2, rounds=1),
        # int8: every candidate passes and races the exact model; whichever wins is stored
        race=RaceConfig(min_rounds=3, max_rounds=8, budget_s=8.0),
    )
    res = quantize(ck, cfg)
    res.save(tmp_path / "art")
    assert res.manifest["rewrite"]["convs"] == ["conv"]
    art = load_artifact(tmp_path / "art")
    lat = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_allclose(
        art.generate(lat), res.chosen.model(lat).reshape(8, 8, 8, 8), rtol=1e-5, atol=1e-6
    )
    with torch.no_grad():
        ref = ck.generator(torch.from_numpy(lat)).numpy()
    if precision == "bf16":  # float16-stored kernel, bf16 compute: close to fp32, not equal
        assert np.abs(art.generate(lat) - ref).max() < 0.05 * np.abs(ref).max()
    compact = res.manifest["backend_options"]["compact_kernels"]
    if (
        precision == "bf16"
    ):  # every float weight stored in float16: the dense matrix and the rewritten conv
        assert compact == ["dense", "conv"]
    if compact:
        folded = (
            rewritten_convs(fuse_upsample_conv(ck.generator)[0])["conv"].conv.weight.numel() * 4
        )
        dense = sum(p.numel() for p in ck.generator.dense.parameters()) * 4
        assert (
            folded > 5 * ck.generator.conv.weight.numel() * 2
        )  # the folded kernel would dominate the file
        assert res.manifest["size_bytes"] < dense + folded / 2


def test_no_rewrite_keeps_the_graph(tmp_path: Path) -> None:
    ck = Checkpoint(UP_SPEC, UpGen().eval())
    cfg = QuantizeConfig(
        backend="openvino",
        precision="fp32",
        calib_n=16,
        eval_n_per_point=10,
        batch=8,
        rewrite=False,
        timing=TimingConfig(window_s=0.2, rounds=1),
    )
    res = quantize(ck, cfg)
    res.save(tmp_path / "a")
    assert res.manifest["rewrite"]["convs"] == []
    with_rw = quantize(
        ck,
        QuantizeConfig(
            backend="openvino",
            precision="fp32",
            calib_n=16,
            eval_n_per_point=10,
            batch=8,
            timing=TimingConfig(window_s=0.2, rounds=1),
        ),
    )
    with_rw.save(tmp_path / "b")
    assert with_rw.manifest["rewrite"]["convs"] == ["conv"]
    lat = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    a, b = load_artifact(tmp_path / "a").generate(lat), load_artifact(tmp_path / "b").generate(lat)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_engine_models_own_their_weights(backend: str) -> None:
    """The engine model must not point into the torch tensors it was converted from: the tuner's
    rewritten module is freed before the artifact is written. (OpenVINO's convert_model shares
    weights by default; the saved 3DGAN IR then held garbage biases and gave inf showers.)
    Overwriting the torch weights after conversion must leave the engine's answers unchanged."""
    from caloquant.precision.backends import make_backend

    module = fuse_upsample_conv(UpGen().eval())[0]
    be = make_backend(backend, module, 16, 1)
    lat = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)
    calib = np.random.default_rng(3).standard_normal((32, 16)).astype(np.float32)
    models = [be.float_model("fp32"), be.int8_model(calib, None, "minmax", "fp32")]
    before = [m(lat) for m in models]
    with torch.no_grad():
        for p in [*module.parameters(), *module.buffers()]:
            p.fill_(1e30)
    models.append(be.int8_model(calib, None, "minmax", "fp32"))  # built after the overwrite
    for m, ref in zip(models, [*before, before[1]]):
        out = m(lat)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))


def test_openvino_reports_the_precision_it_executes() -> None:
    """The compiled model's own answer, not the request: bf16 where the CPU has no fp16
    arithmetic and the plugin runs an f16 hint in bf16 (AMD Zen 4), fp16 where it has (AMX)."""
    from caloquant.precision.backends import make_backend
    from caloquant.runtime import cpu_identity

    be = make_backend("openvino", UpGen().eval(), 16, 1)
    assert be.float_model("fp32").executed_precision() == "fp32"
    flags = set(cpu_identity()["flags"])
    got = be.float_model("fp16").executed_precision()
    if not flags & {"avx512_fp16", "amx_fp16"}:
        assert got in ("bf16", "fp32"), got  # no fp16 arithmetic: never reported as fp16
    else:
        assert got == "fp16", got
    calib = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    assert be.int8_model(calib, None, "minmax", "fp32").executed_precision() == "int8+fp32"
