"""Exact per-channel equalization (caloquant.precision.equalize): same function, other ranges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from caloquant.precision.equalize import equalize, find_pairs, input_ranges
from caloquant.precision.rewrite import fuse_upsample_conv


def _bn(cls: type[nn.Module], c: int, g: torch.Generator) -> nn.Module:
    bn = cls(c, eps=1e-3)
    with torch.no_grad():  # eval statistics and affine parameters far from the identity
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
        spread = torch.logspace(-2, 1, c)  # channel ranges over three decades
        bn.weight.copy_(torch.randn(c, generator=g) * spread)
        bn.bias.copy_(torch.randn(c, generator=g) * spread)
    return bn


class Stack(nn.Module):
    """conv -> LeakyReLU -> BN -> upsample -> zero pad -> conv -> LeakyReLU (functional) -> conv
    -> ReLU, with channel ranges spread over three decades (2D or 3D)."""

    def __init__(self, nd: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        conv = nn.Conv3d if nd == 3 else nn.Conv2d
        c1, c2, c3 = (int(v) for v in torch.randint(3, 9, (3,), generator=g))
        k = int(torch.randint(2, 4, (1,), generator=g))
        self.conv1 = conv(2, c1, k, padding=1)
        self.bn1 = _bn(nn.BatchNorm3d if nd == 3 else nn.BatchNorm2d, c1, g)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad = (nn.ZeroPad3d if nd == 3 else nn.ZeroPad2d)(1)
        self.conv2 = conv(c1, c2, k)
        self.conv3 = conv(c2, c3, 2)
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.conv3):
                m.weight.mul_(
                    torch.logspace(-1.5, 1.5, m.weight.shape[0]).view(
                        -1, *([1] * (m.weight.dim() - 1))
                    )
                )
            # small-range input channels carry large weights: every channel matters in the output
            self.conv2.weight.div_(torch.logspace(-2, 1, c1).view(1, -1, *([1] * nd)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(F.leaky_relu(self.conv1(x), 0.3))
        h = F.leaky_relu(self.conv2(self.pad(self.up(h))), 0.3)
        return F.relu(self.conv3(h))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_equalization_is_exact_on_random_stacks(nd: int, seed: int, alpha: float) -> None:
    m = Stack(nd, seed).eval()
    x = torch.randn(4, 2, *([6] * nd), generator=torch.Generator().manual_seed(seed + 100))
    w0 = m.conv2.weight.detach().clone()
    pairs = {(p.producer, p.consumer) for p in find_pairs(m)}
    assert pairs == {("bn1", "conv2"), ("conv2", "conv3")}
    eq, info = equalize(m, lambda mod: mod(x), alpha=alpha)
    with torch.no_grad():
        assert _rel(eq(x), m(x)) < 1e-5
        assert not torch.equal(eq.conv2.weight, w0)
        assert torch.equal(m.conv2.weight, w0)  # the original is untouched
    if alpha == 1.0:  # every live channel of the consumer's input gets the same range
        assert info["conv2"]["range_spread_after"] == pytest.approx(1.0, rel=1e-6)
        assert info["conv2"]["range_spread_before"] > 10


def test_chains_through_a_bias_or_a_batchnorm_after_the_producer_are_refused() -> None:
    class Renorm(nn.Module):  # conv -> BN -> conv: the producer of conv2 is the BN, never conv1
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn, self.conv2 = (
                nn.Conv2d(1, 4, 3),
                nn.BatchNorm2d(4),
                nn.Conv2d(4, 2, 3),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv2(torch.sigmoid(self.bn(self.conv1(x))))

    # sigmoid is not positively homogeneous: no pair at all
    assert find_pairs(Renorm()) == []


def test_equalization_is_exact_on_the_cern_3dgan_and_commutes_with_the_rewrite() -> None:
    import caloquant as cq
    from caloquant.models import condition_latent

    ck = cq.load().checkpoint
    gen = ck.generator.eval()
    e = torch.tensor([100.0, 250.0, 500.0]).repeat_interleave(4)
    z = torch.from_numpy(
        condition_latent(
            torch.randn(
                len(e), ck.spec.noise_dim, generator=torch.Generator().manual_seed(3)
            ).numpy(),
            e.numpy(),
            ck.spec,
        )
    )
    assert {(p.producer, p.consumer) for p in find_pairs(gen)} == {
        ("bn1", "conv2"),
        ("bn2", "conv3"),
        ("conv3", "conv4"),
    }
    eq, info = equalize(gen, lambda m: m(z), alpha=1.0, consumers=["conv2", "conv3"])
    assert set(info) == {"conv2", "conv3"} and info["conv2"]["range_spread_before"] > 5
    rewritten, convs = fuse_upsample_conv(eq)
    assert set(convs) == {"conv2", "conv3"}
    with torch.no_grad():
        ref = gen(z)
        assert _rel(eq(z), ref) < 1e-5
        assert _rel(rewritten(z), ref) < 1e-5
    after = input_ranges(eq, ["conv2"], lambda: eq(z))["conv2"]
    assert float(after[after > 0].max() / after[after > 0].min()) == pytest.approx(1.0, rel=1e-4)


def _per_tensor_int8_error(m: nn.Module, x: torch.Tensor, consumer: str) -> float:
    """Output error when ``consumer``'s input is quantized to int8 with one symmetric
    min-max scale (what the engines do for activations)."""
    amax = input_ranges(m, [consumer], lambda: m(x))[consumer].max()
    step = amax / 127

    def fq(_mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        return (torch.clamp(torch.round(inp[0] / step), -127, 127) * step,)

    with torch.no_grad():
        ref = m(x)
        h = dict(m.named_modules())[consumer].register_forward_pre_hook(fq)
        out = m(x)
        h.remove()
    return float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


@pytest.mark.parametrize("seed", range(3))
def test_equalization_reduces_the_int8_error_it_targets(seed: int) -> None:
    """An int8-hostile input (channel ranges over three decades): per-tensor int8 of the
    consumer's input loses the small channels; equalized, the same quantizer keeps them."""
    m = Stack(2, seed).eval()
    x = torch.randn(16, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    before = _per_tensor_int8_error(m, x, "conv2")
    eq, _ = equalize(m, lambda mod: mod(x), alpha=1.0, consumers=["conv2"])
    after = _per_tensor_int8_error(eq, x, "conv2")
    assert after < 0.5 * before, (before, after)
