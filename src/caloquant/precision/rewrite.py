"""Exact graph rewrites applied before a model is exported to an inference engine.

``fuse_upsample_conv``: a nearest-neighbour upsampling by integer factors s, followed by
zero padding and a stride-1 convolution, is rewritten as one convolution on the
*low-resolution* input that computes all s_1*s_2*(*s_3) output phases as extra output
channels, followed by an interleave (reshape + permute) and a crop. It is the same function
(the new kernels are sums of the old kernel taps, so results agree to float32 rounding), and
it needs several times fewer multiply-adds, because the upsampled input repeats each value
s_1*s_2*s_3 times and the old convolution multiplied every copy separately. It also gives
the convolution s^d times more output channels, which vector units fill much better (the
3DGAN's conv2 and conv3 have only 6 output channels).

Why written by hand: the inference engines do not do this. OpenVINO, ONNX Runtime and
Inductor run the upsample and then the full convolution (checked with OpenVINO 2026.4
runtime graphs and torch 2.13 Inductor output code); the sub-pixel identity is known
(Shi et al. 2016, "efficient sub-pixel convolution") but no library applies it to an
existing network. The rewrite is a torch.fx pass, so it works on any traceable generator.

Derivation, one axis (input u of length L, factor s, padding p before, q after, kernel w of
size k): the padded upsampled signal is P[j] = u[floor((j - p) / s)] (zero outside
[0, L)), so out[o] = sum_t w[t] u[floor((o + t - p) / s)]. With o = s*m + r (phase r):
out[s*m + r] = sum_d W_r[d] u[m + d], W_r[d] = sum of w[t] over t with
floor((r + t - p) / s) = d. All phases share the tap range d in [D0, D1] with
D0 = floor(-p / s), D1 = floor((s - 1 + k - 1 - p) / s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

_CONVS = (nn.Conv2d, nn.Conv3d)
_PADS = (nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad2d, nn.ConstantPad3d)
# phase matrices (one per axis) x original kernel -> folded kernel (phases..., O, I, taps...)
_FOLD = {2: "aut,bvx,oitx->aboiuv", 3: "aut,bvx,cwy,oitxy->abcoiuvw"}


@dataclass(frozen=True)
class _Axis:
    s: int  # upsampling factor
    p: int  # zero padding before
    q: int  # zero padding after
    k: int  # kernel size

    @property
    def d0(self) -> int:
        return math.floor(-self.p / self.s)

    @property
    def d1(self) -> int:
        return math.floor((self.s - 1 + self.k - 1 - self.p) / self.s)

    @property
    def taps(self) -> int:
        return self.d1 - self.d0 + 1

    def phase_matrix(self) -> torch.Tensor:
        """(s, taps, k): A[r, d - D0, t] = 1 where tap t of phase r lands on low-res offset d."""
        a = torch.zeros(self.s, self.taps, self.k, dtype=torch.float64)
        for r in range(self.s):
            for t in range(self.k):
                a[r, math.floor((r + t - self.p) / self.s) - self.d0, t] = 1.0
        return a

    def low_res_pads(self) -> tuple[int, int]:
        """Padding of the low-res input so that the conv yields Q = L + c outputs,
        c = ceil((p+q-k+1)/s)."""
        c = math.ceil((self.p + self.q - self.k + 1) / self.s)
        return -self.d0, c + self.d1

    def n_out(self, length: int) -> int:
        return self.s * length + self.p + self.q - self.k + 1


class UpsampledConv(nn.Module):
    """Drop-in replacement of ``conv(pad(upsample(x)))`` computing on the low-res input."""

    def __init__(
        self, conv: nn.Conv2d | nn.Conv3d, scale: tuple[int, ...], pads: tuple[tuple[int, int], ...]
    ) -> None:
        super().__init__()
        nd = len(scale)
        self.axes = [_Axis(s, p, q, k) for s, (p, q), k in zip(scale, pads, conv.kernel_size)]
        w = conv.weight.detach().double()  # (O, I, k...)
        mats = [a.phase_matrix() for a in self.axes]
        # kept (not used by forward) so that an exporter can store the compact original kernel
        # and let the engine fold the phase sums at load time: see ``compact_weight_recipe``
        self.source_weight = conv.weight.detach().clone()
        self.phase_mats = [m.float() for m in mats]
        nw = torch.einsum(_FOLD[nd], *mats, w)
        phases = math.prod(scale)
        out_ch, in_ch = w.shape[:2]
        self.out_channels = out_ch
        conv_cls = nn.Conv3d if nd == 3 else nn.Conv2d
        self.conv = conv_cls(
            in_ch, phases * out_ch, tuple(a.taps for a in self.axes), bias=conv.bias is not None
        )
        with torch.no_grad():
            self.conv.weight.copy_(
                nw.reshape(phases * out_ch, in_ch, *[a.taps for a in self.axes]).float()
            )
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat(phases))
        # F.pad takes the last axis first
        self.pad = tuple(v for a in reversed(self.axes) for v in a.low_res_pads())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[2:]
        pads = self.pad
        if (
            min(pads) < 0
        ):  # negative padding = crop; done by slicing so every exporter understands it
            x = F.pad(x, tuple(max(v, 0) for v in pads))
            x = x[
                (
                    ...,
                    *[
                        slice(max(-pads[2 * i], 0), x.shape[-1 - i] - max(-pads[2 * i + 1], 0))
                        for i in reversed(range(len(self.axes)))
                    ],
                )
            ]
        else:
            x = F.pad(x, pads)
        y = self.conv(x)  # (N, S*O, Q...)
        n, q, nd = y.shape[0], y.shape[2:], len(self.axes)
        s = [a.s for a in self.axes]
        # (N, s_1..s_d, O, Q_1..Q_d) -> (N, O, Q_1, s_1, ..., Q_d, s_d)
        #   -> (N, O, Q_1*s_1, ..., Q_d*s_d)
        y = y.reshape(n, *s, self.out_channels, *q)
        y = y.permute(0, nd + 1, *[ax for i in range(nd) for ax in (nd + 2 + i, 1 + i)])
        y = y.reshape(n, self.out_channels, *[qi * si for qi, si in zip(q, s)])
        o = [
            a.n_out(int(L)) for a, L in zip(self.axes, sizes)
        ]  # spatial sizes are static (the batch stays dynamic)
        return y[(slice(None), slice(None), *[slice(0, v) for v in o])]

    def compact_weight_recipe(self) -> tuple[str, list[torch.Tensor], tuple[int, ...]]:
        """(einsum equation, operands ending with the original kernel, final shape) that rebuild
        ``self.conv.weight`` from the original kernel, which is several times smaller."""
        return (
            _FOLD[len(self.axes)],
            [*self.phase_mats, self.source_weight],
            tuple(self.conv.weight.shape),
        )

    def macs_ratio(self, sizes: tuple[int, ...]) -> float:
        """Multiply-adds of this module over those of the original upsample + conv."""
        taps_new = math.prod(a.taps for a in self.axes) * math.prod(a.s for a in self.axes)
        q_new = math.prod(math.ceil(a.n_out(L) / a.s) for a, L in zip(self.axes, sizes))
        old = math.prod(a.k for a in self.axes) * math.prod(
            a.n_out(L) for a, L in zip(self.axes, sizes)
        )
        return taps_new * q_new / old


def _scale(up: nn.Upsample, nd: int) -> tuple[int, ...] | None:
    if up.mode != "nearest" or up.size is not None or up.scale_factor is None:
        return None
    sf = up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor,) * nd
    if len(sf) != nd or any(float(v) != int(v) or int(v) < 1 for v in sf):
        return None
    return tuple(int(v) for v in sf)


def _pads(pad: nn.Module | None, conv: nn.Module, nd: int) -> tuple[tuple[int, int], ...] | None:
    """Per-axis (before, after) zero padding of an optional pad module plus the conv's own."""
    own = conv.padding
    if isinstance(own, str) or conv.padding_mode != "zeros":
        return None
    total = [[int(own[i]), int(own[i])] for i in range(nd)]
    if pad is not None:
        if getattr(pad, "value", 0.0) != 0.0:
            return None
        p = pad.padding  # last axis first: (l_last, r_last, l_prev, r_prev, ...)
        for i in range(nd):
            total[nd - 1 - i][0] += int(p[2 * i])
            total[nd - 1 - i][1] += int(p[2 * i + 1])
    if any(v < 0 for ax in total for v in ax):
        return None
    return tuple((a, b) for a, b in total)


def rewritten_convs(module: nn.Module) -> dict[str, UpsampledConv]:
    """The UpsampledConv modules of a rewritten model, by module name."""
    return {n: m for n, m in module.named_modules() if isinstance(m, UpsampledConv)}


def fuse_upsample_conv(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """Rewrite every ``Upsample(nearest) -> [ZeroPad] -> Conv (stride 1, groups 1)`` chain.

    torch.fx finds the chains; the rewrite itself swaps submodules in a deep copy (the conv
    becomes an :class:`UpsampledConv`, the upsample and pad become ``Identity``), so the result
    is still an instance of the original class: picklable, exportable, readable. A chain is
    rewritten only when each of its modules is called exactly once and its intermediate
    results have no other use. Returns the rewritten copy (eval mode) and the names of the
    rewritten convolutions; untraceable models or models without such a chain come back
    unchanged (no copy)."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - untraceable models are simply not rewritten
        return module, []
    mods = dict(module.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    plan: list[tuple[str, str, str | None, tuple[int, ...], tuple[tuple[int, int], ...]]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _CONVS):
            continue
        conv = mods[node.target]
        nd = conv.weight.dim() - 2
        if (
            any(v != 1 for v in conv.stride)
            or any(v != 1 for v in conv.dilation)
            or conv.groups != 1
        ):
            continue
        prev = node.args[0]
        pad_name = None
        if (
            isinstance(prev, fx.Node)
            and prev.op == "call_module"
            and isinstance(mods.get(prev.target), _PADS)
        ):
            if len(prev.users) != 1:
                continue
            pad_name = str(prev.target)
            prev = prev.args[0]
        if not (
            isinstance(prev, fx.Node)
            and prev.op == "call_module"
            and isinstance(mods.get(prev.target), nn.Upsample)
        ):
            continue
        names = [str(node.target), str(prev.target)] + ([pad_name] if pad_name else [])
        if len(prev.users) != 1 or any(calls.get(n, 0) != 1 for n in names):
            continue
        scale = _scale(mods[prev.target], nd)
        pads = _pads(mods[pad_name] if pad_name else None, conv, nd)
        if scale is None or pads is None:
            continue
        plan.append((str(node.target), str(prev.target), pad_name, scale, pads))
    if not plan:
        return module, []
    import copy

    new = copy.deepcopy(module).eval()
    for conv_name, up_name, pad_name, scale, pads in plan:
        new.set_submodule(conv_name, UpsampledConv(new.get_submodule(conv_name), scale, pads))
        new.set_submodule(up_name, nn.Identity())
        if pad_name:
            new.set_submodule(pad_name, nn.Identity())
    return new, [p[0] for p in plan]
