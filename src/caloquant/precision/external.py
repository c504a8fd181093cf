"""Other tools, for the head-to-head comparison at the same physics tolerance (never chosen).

* Intel Neural Compressor ``autotune`` (successor of the paper's iLoT tool), PyTorch static
  int8 through PT2E, driven by caloquant's physics metric; optional extra ``[inc]``.
* LiteRT (successor of TensorFlow Lite, as in the paper's comparison): ``litert-torch``
  conversion, int8 by its PT2E static per-channel quantizer, fp16 by ai-edge-quantizer's
  float16 weight casting, run with the ``ai-edge-litert`` interpreter; optional extra ``[litert]``.

Each builder returns a runnable model (``model(latent) -> showers``, ``layer_precisions``) or
raises :class:`Unavailable` with the exact reason (not installed, or the tool's own error).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.runtime import quiet_loggers, torch_threads


class Unavailable(Exception):
    """The tool cannot run here; the message says why (exact error, versions)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """These tools print progress tables and INFO lines; the tuner reports trials itself."""
    with (
        quiet_loggers("neural_compressor", "absl", "litert_torch", "torch._inductor"),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        yield


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _fail(tool: str, dists: list[str], exc: BaseException) -> Unavailable:
    vers = ", ".join(f"{d} {_version(d)}" for d in dists)
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return Unavailable(f"{tool} failed ({vers}): {type(exc).__name__}: {msg}")


INC_DISTS = ["neural-compressor", "torch"]
LITERT_DISTS = ["litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torch"]


def inc_autotune(
    module: nn.Module,
    latent_dim: int,
    calib: np.ndarray,
    latents: np.ndarray,
    metric: Callable[[np.ndarray], float],
    threads: int,
) -> Any:
    """INC ``autotune`` with its default static int8 config; accept when metric loss <= 100 %
    (metric = 1 - badness: fp32 scores 1, the tolerance edge 0)."""
    try:
        with _quiet():  # INC logs warnings on import
            from neural_compressor.torch.export import export
            from neural_compressor.torch.quantization import (
                TuningConfig,
                autotune,
                get_default_static_config,
            )
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise _fail("Intel Neural Compressor", INC_DISTS, exc) from None
    from caloquant.precision.backends.torch_backend import (
        TorchModel,
        export_inputs,
        quantized_modules,
        weight_layers,
    )

    example, kw = export_inputs(latent_dim)

    def run_fn(m: Any) -> None:
        with torch.no_grad():
            for i in range(0, len(calib), 16):
                m(torch.from_numpy(calib[i : i + 16]))

    def eval_fn(m: Any) -> float:
        with torch.no_grad():
            out = np.concatenate(
                [
                    m(torch.from_numpy(latents[i : i + 100])).float().numpy()
                    for i in range(0, len(latents), 100)
                ]
            )
        return float(metric(out))

    try:
        with _quiet(), torch_threads(threads):
            graph = export(module.eval(), example, dynamic_shapes=kw["dynamic_shapes"])
            q = autotune(
                graph,
                TuningConfig(config_set=[get_default_static_config()], tolerable_loss=1.0),
                eval_fn=eval_fn,
                run_fn=run_fn,
                example_inputs=example,
            )
    except Exception as exc:  # noqa: BLE001
        raise _fail("Intel Neural Compressor autotune", INC_DISTS, exc) from None
    if q is None:
        raise Unavailable(
            "Intel Neural Compressor autotune found no configuration within the tolerance"
        )
    # (TorchModel compiles with inductor freezing, the x86 inductor int8 path INC documents)
    done = quantized_modules(q)
    return TorchModel(
        q,
        "int8",
        threads,
        {n: ("int8" if n in done else "fp32") for n in weight_layers(module)},
        compiled=True,
    )


_TFL_TYPES = {
    "float32": "fp32",
    "float16": "fp16",
    "int8": "int8",
    "uint8": "int8",
    "int16": "int16",
}


def _op_precisions(it: Any) -> dict[str, str]:
    """Compute ops (convolutions, fully connected) and the type of their activation input."""
    details = {t["index"]: t for t in it.get_tensor_details()}
    out: dict[str, str] = {}
    for op in it._get_ops_details():  # noqa: SLF001 - the interpreter's only op listing
        name = op["op_name"]
        if not any(k in name for k in ("CONV", "FULLY_CONNECTED")) or not len(op["inputs"]):
            continue
        t = details.get(int(op["inputs"][0]))
        dt = np.dtype(t["dtype"]).name if t is not None else "?"
        out[f"{name.lower()}#{op['index']}"] = _TFL_TYPES.get(dt, dt)
    return out


class LiteRTModel:
    """A LiteRT flatbuffer run by the ai-edge-litert interpreter (XNNPACK), fixed batch size:
    shorter batches are zero-padded, longer ones split."""

    def __init__(
        self,
        content: bytes,
        batch: int,
        threads: int,
        layer_precisions: dict[str, str] | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.content, self.batch, self.layer_precisions = content, batch, layer_precisions
        self._it = Interpreter(model_content=content, num_threads=threads)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        if (
            layer_precisions is None
        ):  # what the flatbuffer really computes in: the type of each op's input
            self.layer_precisions = _op_precisions(self._it)

    def _one(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        xx = np.zeros((self.batch, x.shape[1]), np.float32)
        xx[:n] = x
        if self._in["dtype"] != np.float32:  # int8 model with quantized input
            sc, zp = self._in["quantization"]
            info = np.iinfo(self._in["dtype"])
            xx = np.clip(np.round(xx / sc) + zp, info.min, info.max).astype(self._in["dtype"])
        self._it.set_tensor(self._in["index"], xx)
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])[:n].copy()
        if self._out["dtype"] != np.float32:
            sc, zp = self._out["quantization"]
            y = (y.astype(np.float32) - zp) * sc
        return y

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(latent, dtype=np.float32)
        return np.concatenate(
            [self._one(x[i : i + self.batch]) for i in range(0, len(x), self.batch)]
        )


def _litert_convert(module: nn.Module, calib: np.ndarray, precision: str, batch: int) -> bytes:
    """Runs in a child process: litert-torch imports JAX, whose threads make any later fork of
    the caller unsafe, so the conversion is kept out of caloquant's own process."""
    import os

    # this is the child process: its C++ libraries (absl, XNNPACK, TensorFlow Lite) log straight
    # to file descriptors 1 and 2; errors still come back to the parent as exceptions
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    # the flatbuffer's fixed batch: exactly ``batch`` rows (calibration latents repeated if fewer)
    example = (
        torch.from_numpy(
            np.ascontiguousarray(np.resize(calib, (batch, calib.shape[1])), dtype=np.float32)
        ),
    )
    with _quiet():  # the imports too: torchao and litert-torch print load warnings on import
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer, quant_config

        if precision == "int8":
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
            )
            prepared = prepare_pt2e(torch.export.export(module.eval(), example).module(), quantizer)
            cal = np.resize(calib, (-(-len(calib) // batch) * batch, calib.shape[1])).astype(
                np.float32
            )  # whole fixed batches
            with torch.no_grad():
                for i in range(0, len(cal), batch):
                    prepared(torch.from_numpy(cal[i : i + batch]))
            converted = convert_pt2e(prepared, fold_quantize=False)
            content = litert_torch.convert(
                converted, example, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)
            ).model_content()
        else:
            content = litert_torch.convert(module.eval(), example).model_content()
            if precision == "fp16":
                from ai_edge_quantizer import quantizer as aeq, recipe_manager
                from ai_edge_quantizer.algorithm_manager import AlgorithmName
                from ai_edge_quantizer.qtyping import TFLOperationName

                rm = recipe_manager.RecipeManager()
                rm.add_weight_only_config(
                    regex=".*",
                    operation_name=TFLOperationName.ALL_SUPPORTED,
                    num_bits=16,
                    algorithm_key=AlgorithmName.FLOAT_CASTING,
                )
                content = (
                    aeq.Quantizer(bytes(content), rm.get_quantization_recipe())
                    .quantize()
                    .quantized_model
                )
    return bytes(content)


def litert(
    module: nn.Module, latent_dim: int, calib: np.ndarray, precision: str, threads: int, batch: int
) -> LiteRTModel:
    """LiteRT with the tools' defaults, as the paper's TensorFlow Lite comparison: int8 by the
    litert-torch PT2E static per-channel quantizer (calibrated on ``calib``), fp16 by float16
    weight casting. Converted in a child process, run here with the ai-edge-litert interpreter."""
    import importlib.util
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for mod in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"):
        if importlib.util.find_spec(mod) is None:
            raise Unavailable(
                f"LiteRT not installed (no module {mod}; pip install 'caloquant[litert]'; "
                + ", ".join(f"{d} {_version(d)}" for d in LITERT_DISTS)
                + ")"
            )
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            content = pool.submit(
                _litert_convert, module, np.asarray(calib), precision, batch
            ).result()
        return LiteRTModel(content, batch, threads)
    except Exception as exc:  # noqa: BLE001
        raise _fail(f"LiteRT {precision}", LITERT_DISTS, exc) from None
