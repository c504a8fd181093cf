"""Exact per-channel equalization: move the range of a convolution's input into its weights.

An int8 engine quantizes a convolution's input with ONE scale per tensor (symmetric, as the
OpenVINO CPU plugin runs it) and the weights with one scale per output channel. When the
input channels have very different ranges (the CERN 3DGAN's conv2 input: per-channel maxima
from 6.6 to 106), the small channels get only a few int8 levels. Equalization rescales each
input channel c by 1/s_c where it is produced and multiplies the consumer's weights
W[:, c] by s_c. The function is unchanged; the quantizer sees other ranges.

Why it is exact. The chain from the producer to the consumer convolution may hold only maps
f with f(s * x) = s * f(x) channel by channel, for s > 0:
- zero padding (padding a scaled tensor with zeros is the scaled padded tensor);
- nearest upsampling, identity, dropout in eval mode (copies of values);
- ReLU and LeakyReLU (positively homogeneous: max(s x, a s x) = s max(x, a x) for s > 0).
The producer must own a per-output-channel affine map whose output can be divided by s_c:
- BatchNorm in eval mode: y = gamma (x - mu) / sqrt(var + eps) + beta -> divide gamma, beta;
- a convolution: divide its output channel's kernel and bias.
A BatchNorm *after* the producer would undo the scale (it renormalizes), so the walk back
from the consumer stops at the first module that is not in the list above and uses it only
if it is such a producer. The consumer sums over its input channels:
sum_c W[o, c] * x_c = sum_c (W[o, c] s_c) (x_c / s_c), bias untouched.

Choice of s (SmoothQuant, Xiao et al. 2023, written for linear layers; here per input
channel of a convolution): s_c = a_c^alpha / w_c^(1 - alpha), with a_c the largest |input|
of channel c over calibration data and w_c the largest |W[:, c]|. alpha = 1 gives every
input channel the same range and puts the spread into the weights (which are quantized per
output channel, so a large s_c coarsens the output channels that read channel c); alpha = 0
does the opposite (equal weight ranges per input channel); SmoothQuant's default is 0.5. s is
normalized to geometric mean 1; channels that never fire (a_c = 0) keep s_c = 1.

Why written by hand: torch.ao's ``_equalize`` covers Conv2d/Linear pairs only (no Conv3d,
nothing between the pair); NNCF's ChannelAlignment does not match through LeakyReLU, and
NNCF's SmoothQuant for convolutions works on the OpenVINO graph, where the BatchNorm is
already folded into a multiply the tuner cannot see as a producer. This pass works on the
torch module before export, so every engine gets the equalized graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS_MODULES = (
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.Upsample,
    nn.Identity,
    nn.Dropout,
    nn.ReLU,
    nn.LeakyReLU,
)
_PASS_FUNCTIONS = (F.relu, F.leaky_relu, torch.relu)


@dataclass
class Pair:
    """A producer whose output channels can be rescaled and the convolution that reads them."""

    producer: str
    consumer: str
    through: list[str] = field(default_factory=list)


def _passes_scale(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = mods.get(str(node.target))
        if isinstance(m, (nn.ConstantPad2d, nn.ConstantPad3d)) and getattr(m, "value", 0.0) != 0.0:
            return False
        if isinstance(m, nn.Upsample) and m.mode != "nearest":
            return False
        if isinstance(m, nn.LeakyReLU) and m.negative_slope < 0:
            return False
        return isinstance(m, _PASS_MODULES)
    if node.op == "call_function" and node.target in _PASS_FUNCTIONS:
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.0)
        return not isinstance(slope, (int, float)) or slope >= 0
    return False


def find_pairs(module: nn.Module) -> list[Pair]:
    """Every (producer, consumer convolution) chain the pass can rescale exactly. A chain is
    used only when each node on it has a single user and the consumer is a plain convolution
    (groups 1) that reads channel dimension 1."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - untraceable models are simply not equalized
        return []
    mods = dict(module.named_modules())
    pairs: list[Pair] = []
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(str(node.target)), _CONVS):
            continue
        if mods[str(node.target)].groups != 1 or mods[str(node.target)].padding_mode != "zeros":
            continue
        prev, through = node.args[0], []
        while isinstance(prev, fx.Node) and len(prev.users) == 1 and _passes_scale(prev, mods):
            through.append(str(prev.target) if prev.op == "call_module" else prev.name)
            prev = prev.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        prod = mods.get(str(prev.target))
        ok = (isinstance(prod, _BNS) and prod.affine) or (
            isinstance(prod, _CONVS) and prod.groups == 1
        )
        if ok and str(prev.target) not in used:
            used.add(str(prev.target))
            pairs.append(Pair(str(prev.target), str(node.target), through[::-1]))
    return pairs


def input_ranges(
    module: nn.Module, consumers: list[str], run: Callable[[], object]
) -> dict[str, torch.Tensor]:
    """Largest |input| per channel of each consumer over what ``run()`` feeds the module."""
    mods = dict(module.named_modules())
    amax: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def h(_m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            x = inp[0].detach()
            a = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(1)
            amax[name] = a if name not in amax else torch.maximum(amax[name], a)

        return h

    handles = [mods[c].register_forward_pre_hook(hook(c)) for c in consumers]
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return amax


def scales(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant scales per input channel of ``weight`` (O, I, k...), geometric mean 1."""
    w = weight.detach().abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1).double()
    a = act_max.double()
    live = (a > 0) & (w > 0)
    s = torch.ones_like(a)
    s[live] = a[live] ** alpha / w[live] ** (1 - alpha)
    if live.any():
        s[live] /= torch.exp(torch.log(s[live]).mean())
    return s


def _divide_outputs(prod: nn.Module, s: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(prod, _BNS):
            prod.weight.div_(s.to(prod.weight))
            prod.bias.div_(s.to(prod.bias))
        else:
            shape = (-1,) + (1,) * (prod.weight.dim() - 1)
            prod.weight.div_(s.to(prod.weight).view(shape))
            if prod.bias is not None:
                prod.bias.div_(s.to(prod.bias))


def equalize(
    module: nn.Module,
    run: Callable[[nn.Module], object],
    alpha: float = 0.5,
    consumers: list[str] | None = None,
) -> tuple[nn.Module, dict[str, dict[str, float]]]:
    """An equalized copy of ``module`` (eval mode) and, per rescaled consumer, the spread of its
    input's per-channel ranges before and after (max/min over live channels).

    ``run(m)`` feeds calibration data through ``m``; ``consumers`` limits the pass to those
    convolutions (default: every one :func:`find_pairs` finds)."""
    pairs = [p for p in find_pairs(module) if consumers is None or p.consumer in consumers]
    if not pairs:
        return module, {}
    new = copy.deepcopy(module).eval()
    mods = dict(new.named_modules())
    ranges = input_ranges(new, [p.consumer for p in pairs], lambda: run(new))
    info: dict[str, dict[str, float]] = {}
    for p in pairs:
        a = ranges[p.consumer]
        cons = mods[p.consumer]
        s = scales(a, cons.weight, alpha)
        _divide_outputs(mods[p.producer], s)
        with torch.no_grad():
            cons.weight.mul_(s.to(cons.weight).view(1, -1, *([1] * (cons.weight.dim() - 2))))
        live = a > 0
        after = (a.double() / s)[live]
        info[p.consumer] = {
            "producer": p.producer,
            "alpha": alpha,  # type: ignore[dict-item]
            "range_spread_before": float(a[live].max() / a[live].min()) if live.any() else 1.0,
            "range_spread_after": float(after.max() / after.min()) if live.any() else 1.0,
        }
    return new, info
