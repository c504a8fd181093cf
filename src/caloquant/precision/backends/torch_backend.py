"""PyTorch native: fp32 eager; bf16 autocast; int8 via torchao PT2E (X86InductorQuantizer,
static per-channel weights) lowered with torch.compile. Artifacts are torch.export programs."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the layers that carry weights and get a precision of their own (the per-layer precision map)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def weight_layers(module: nn.Module) -> list[str]:
    """Names of the weight-carrying layers of ``module``, in module order."""
    return [n for n, m in module.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def _dyn(latent_dim: int) -> tuple[tuple[torch.Tensor], dict[str, Any]]:
    return (torch.randn(4, latent_dim),), {"dynamic_shapes": ({0: torch.export.Dim("n", min=1, max=65536)},)}


class TorchModel:
    def __init__(self, module: nn.Module, precision: str, threads: int, layer_precisions: dict[str, str],
                 program: Any = None, compiled: bool = False) -> None:
        self.module, self.precision, self.threads = module, precision, threads
        self.layer_precisions, self.program = layer_precisions, program
        self._fn = torch.compile(module) if compiled else module

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        torch.set_num_threads(self.threads)
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
        ctx = torch.autocast("cpu", dtype=_DTYPES[self.precision]) if self.precision in _DTYPES else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return self._fn(x).float().numpy()

    def save(self, out_dir: Path) -> list[str]:
        prog = self.program
        if prog is None:
            example, kw = _dyn(self.module_latent_dim())
            prog = torch.export.export(self.module, example, **kw)
        torch.export.save(prog, out_dir / "model.pt2")
        return ["model.pt2"]

    def module_latent_dim(self) -> int:
        for m in self.module.modules():
            if isinstance(m, nn.Linear):
                return m.in_features
        raise CaloquantError("cannot infer the latent size of the torch module")

    @classmethod
    def load(cls, out_dir: Path, manifest: dict[str, Any], threads: int) -> TorchModel:
        p = out_dir / "model.pt2"
        if not p.exists():
            raise CaloquantError(f"{out_dir}: torch artifact lacks model.pt2")
        try:
            prog = torch.export.load(p)
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(f"{p}: unreadable torch.export program ({str(exc).splitlines()[0][:120]})") from None
        precision = manifest["precision"]
        return cls(prog.module(), precision, threads, manifest.get("layer_precisions", {}), prog, compiled=(precision == "int8"))


def _quantized_modules(graph: Any) -> set[str]:
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

    def __init__(self, module: nn.Module, latent_dim: int, threads: int) -> None:
        self.module, self.latent_dim, self.threads = module.eval(), latent_dim, threads

    def _layers(self) -> list[str]:
        return weight_layers(self.module)

    def float_model(self, precision: str) -> TorchModel:
        return TorchModel(self.module, precision, self.threads, {n: precision for n in self._layers()})

    def units(self, calib: np.ndarray) -> list[str]:
        return self._layers()

    def int8_model(self, calib: np.ndarray, int8_units: list[str] | None, calibration: str, float_precision: str = "fp32",
                   bias_correction: str = "none") -> TorchModel:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        if calibration != "minmax":
            raise CaloquantError("the torch int8 backend supports --calibration minmax only (torchao's x86 quantizer observers)")
        logging.getLogger("torch._inductor").setLevel(logging.ERROR)
        units = self._layers()
        chosen = units if int8_units is None else [u for u in units if u in set(int8_units)]
        example, kw = _dyn(self.latent_dim)
        try:
            graph = torch.export.export(self.module, example, **kw).module()
            q = X86InductorQuantizer()
            q.set_global(get_default_x86_inductor_quantization_config())
            for u in units:
                if u not in chosen:
                    q.set_module_name_qconfig(u, None)
            prepared = prepare_pt2e(graph, q)
            with torch.no_grad():
                for i in range(0, len(calib), 16):
                    prepared(torch.from_numpy(calib[i : i + 16]))
            converted = convert_pt2e(prepared)
            prog = torch.export.export(converted, example, **kw)
        except CaloquantError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(f"torchao PT2E quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        torch._inductor.config.freezing = True  # constant-fold the int8 weights (x86 inductor int8 path)
        done = _quantized_modules(converted)
        lp = {u: ("int8" if u in done else "fp32") for u in units}
        return TorchModel(prog.module(), "int8", self.threads, lp, prog, compiled=True)
