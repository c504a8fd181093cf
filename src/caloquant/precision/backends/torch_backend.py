"""PyTorch native: fp32 eager; bf16 autocast; int8 via torchao PT2E (X86InductorQuantizer,
static per-channel weights) lowered with torch.compile. Artifacts are torch.export programs."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.precision.backends import Runner, in_scope, no_split, quantized_scope
from caloquant.precision.backends.opprofile import categorize, quiet_stderr_fd, summary, timed_calls
from caloquant.precision.registry import REGISTRY
from caloquant.runtime import quiet_loggers, torch_threads

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the layers that carry weights and get a precision of their own (the per-layer precision map)
WEIGHT_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def weight_layers(module: nn.Module) -> list[str]:
    """Names of the weight-carrying layers of ``module``, in module order."""
    return [n for n, m in module.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def export_inputs(latent_dim: int) -> tuple[tuple[torch.Tensor], dict[str, Any]]:
    """Example input and dynamic batch dimension for ``torch.export`` of a generator."""
    return (torch.randn(4, latent_dim),), {
        "dynamic_shapes": ({0: torch.export.Dim("n", min=1, max=65536)},)
    }


@contextlib.contextmanager
def _compile_settings(compiled: bool) -> Iterator[None]:
    """Inductor freezing constant-folds the int8 weights (x86 inductor int8 path); patched for
    the call, not set, so the caller's inductor configuration is left as it was."""
    if not compiled:
        yield
        return
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), quiet_loggers("torch._inductor"):
        yield


class TorchModel:
    """A torch module or exported program: fp32 eager, bf16 autocast, or int8 (PT2E, compiled
    with inductor). ``threads=None`` runs with the caller's thread setting."""

    def __init__(
        self,
        module: nn.Module,
        precision: str,
        threads: int | None,
        layer_precisions: dict[str, str],
        program: Any = None,
        compiled: bool = False,
    ) -> None:
        self.module, self.precision, self.threads = module, precision, threads
        self.layer_precisions, self.program, self.compiled = layer_precisions, program, compiled
        self._fn = torch.compile(module) if compiled else module

    def _run(self, fn: Any, latent: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
        ctx = (
            torch.autocast("cpu", dtype=_DTYPES[self.precision])
            if self.precision in _DTYPES
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), ctx, _compile_settings(self.compiled):
            return fn(x).float().numpy()

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            return self._run(self._fn, latent)

    def options(self) -> dict[str, Any]:
        return {}

    def executed_precision(self) -> str:
        if "int8" in self.layer_precisions.values():
            return "int8+fp32"
        return "fp32" if self.precision == "int8" else self.precision

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """The module is shared by the streams; each stream thread runs its own OpenMP team of
        ``threads`` (set in that thread, which the caller owns). A compiled (int8) program is
        compiled once per thread count: inductor bakes the thread count into its kernels.
        Limitation: the Python parts of an eager forward hold the GIL."""
        fn = (
            (torch.compile(self.module) if self.threads != threads else self._fn)
            if self.compiled
            else self._fn
        )

        def run(x: np.ndarray) -> np.ndarray:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)  # in the stream's own thread
            return self._run(fn, x)

        return [run] * streams, {"streams": streams, "threads_total": threads * streams}

    def profile(
        self, latent: np.ndarray, threads: int, min_calls: int, budget_s: float
    ) -> dict[str, Any]:
        """torch.profiler CPU self times; an op's self time goes to the category of the nearest
        enclosing op that has one (``copy_`` inside ``aten::to`` is a cast, inside
        ``contiguous`` a layout change)."""
        from torch.profiler import ProfilerActivity, profile

        (fn,), _ = self.runners(threads, 1)
        with torch_threads(threads):
            fn(latent)  # warm-up (and compilation for int8)
            with quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU]) as prof:
                n, wall = timed_calls(fn, latent, min_calls, budget_s)
        times: dict[str, float] = defaultdict(float)
        per_op: dict[str, float] = defaultdict(float)
        memo: dict[int, str] = {}

        def cat_of(e: Any) -> str:
            key = id(e)
            if key not in memo:
                own = categorize(e.name)
                memo[key] = (
                    own
                    if own is not None
                    else (cat_of(e.cpu_parent) if e.cpu_parent is not None else "other")
                )
            return memo[key]

        for e in prof.events():
            ms = e.self_cpu_time_total / 1000.0
            if ms <= 0:
                continue
            times[cat_of(e)] += ms
            per_op[e.name] += ms
        return summary(times, per_op, wall, n, tool="torch.profiler (CPU self time)")

    def save(self, out_dir: Path) -> list[str]:
        prog = self.program
        if prog is None:
            example, kw = export_inputs(self.module_latent_dim())
            prog = torch.export.export(self.module, example, **kw)
        torch.export.save(prog, out_dir / "model.pt2")
        return ["model.pt2"]

    def module_latent_dim(self) -> int:
        for m in self.module.modules():
            if isinstance(m, nn.Linear):
                return m.in_features
        raise CaloquantError("cannot infer the latent size of the torch module")

    @classmethod
    def load(cls, out_dir: Path, manifest: dict[str, Any], threads: int | None) -> TorchModel:
        p = out_dir / "model.pt2"
        if not p.exists():
            raise CaloquantError(f"{out_dir}: torch artifact lacks model.pt2")
        try:
            prog = torch.export.load(p)
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(
                f"{p}: unreadable torch.export program ({str(exc).splitlines()[0][:120]})"
            ) from None
        precision = manifest["precision"]
        return cls(
            prog.module(),
            precision,
            threads,
            manifest.get("layer_precisions", {}),
            prog,
            compiled=(precision == "int8"),
        )


def quantized_modules(graph: Any) -> set[str]:
    """Module paths whose weights the quantizer actually turned into int8 (a dequantize feeds
    the weight input). X86InductorQuantizer annotates only some op types (e.g. not conv3d), so
    asking for int8 is not the same as getting it."""
    out: set[str] = set()
    for node in graph.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2:
            continue
        name = str(node.target)
        if not any(k in name for k in ("conv", "linear")):
            continue
        w = node.args[1]
        if getattr(w, "op", None) == "call_function" and "dequantize" in str(w.target):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path = list(stack.values())[-1][0]
                out.add(path.split("L['self'].")[-1].replace("L__self___", ""))
    return out


class TorchBackend:
    name = "torch"
    capabilities = REGISTRY["torch"].capabilities

    @staticmethod
    def prime() -> None:
        pass  # torch is imported and its kernels primed by every caller already

    def __init__(self, module: nn.Module, latent_dim: int, threads: int | None) -> None:
        self.module, self.latent_dim, self.threads = module.eval(), latent_dim, threads

    def _layers(self) -> list[str]:
        return weight_layers(self.module)

    def _in_scope(self) -> list[str]:
        scope = quantized_scope(self.module)
        return [u for u in self._layers() if in_scope(u, scope)]

    def float_model(self, precision: str, f32_from: str | None = None) -> TorchModel:
        no_split(f32_from)
        return TorchModel(
            self.module, precision, self.threads, {n: precision for n in self._layers()}
        )

    def unit_label(self, unit: str) -> str:
        return unit

    def units(self, calib: np.ndarray) -> list[str]:
        return self._in_scope()

    def int8_model(
        self,
        calib: np.ndarray,
        int8_units: Sequence[str] | None,
        calibration: str,
        float_precision: str = "fp32",
        bias_correction: str | None = None,
        smooth_quant: float | None = None,
        f32_from: str | None = None,
    ) -> TorchModel:
        no_split(f32_from)
        if smooth_quant is not None:
            raise CaloquantError(
                "the torch int8 backend has no SmoothQuant for convolutions "
                "(capabilities.smooth_quant)"
            )
        if ";" in calibration:
            raise CaloquantError(
                "the torch int8 backend takes one range estimator for all units, "
                f"not '{calibration}'"
            )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        if calibration != "minmax":
            raise CaloquantError(
                "the torch int8 backend supports calibration 'minmax' only "
                "(torchao's x86 quantizer observers)"
            )
        if float_precision != "fp32":
            raise CaloquantError(
                f"torch int8 models keep their float part in fp32, not {float_precision}"
            )
        units, in_scope_units = self._layers(), self._in_scope()
        chosen = (
            in_scope_units
            if int8_units is None
            else [u for u in in_scope_units if u in set(int8_units)]
        )
        example, kw = export_inputs(self.latent_dim)
        try:
            graph = torch.export.export(self.module, example, **kw).module()
            q = X86InductorQuantizer()
            for u in units:  # module-name settings apply in order, the first one wins
                if u not in chosen:
                    q.set_module_name_qconfig(u, None)
            scope, config = (
                quantized_scope(self.module),
                get_default_x86_inductor_quantization_config(),
            )
            if scope is None:
                q.set_global(config)
            else:  # no global setting: ops outside the scope (elementwise ones too) stay float
                q.set_module_name_qconfig(scope, config)
            prepared = prepare_pt2e(graph, q)
            with torch.no_grad():
                for i in range(0, len(calib), 16):
                    prepared(torch.from_numpy(calib[i : i + 16]))
            converted = convert_pt2e(prepared)
            prog = torch.export.export(converted, example, **kw)
        except CaloquantError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(
                f"torchao PT2E quantization failed: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}"
            ) from None
        done = quantized_modules(converted)
        lp = {u: ("int8" if u in done else "fp32") for u in units}
        return TorchModel(prog.module(), "int8", self.threads, lp, prog, compiled=True)
