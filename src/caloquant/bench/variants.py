"""What is benchmarked: a checkpoint run on a chosen backend and precision, or a `quantize`
artifact, with one runnable per stream.

A model argument is ``PATH`` (a checkpoint runs as PyTorch fp32 eager, an artifact directory as
saved) or ``PATH@BACKEND[:PRECISION]`` for a checkpoint (``3dgan.pt@openvino:bf16``). int8
from a checkpoint is the backend's default post-training quantization (the ``--recipe naive``
of `quantize`: every unit int8, min-max calibration on 256 latents); a physics-tuned int8 is
benchmarked as its artifact.

Streams: each stream is one Python thread driving its own inference request; the engines
release the GIL while they compute.
* OpenVINO: one compiled model with ``NUM_STREAMS = streams`` and
  ``INFERENCE_NUM_THREADS = streams x threads`` (the plugin's own stream executor, which pins
  stream threads to cores and caps the total at the core count) and one infer request per stream.
* ONNX Runtime: one session per stream, ``intra_op_num_threads = threads``.
* PyTorch: the module is shared; each stream thread sets ``torch.set_num_threads(threads)``
  and runs its own OpenMP team. Limitation: the Python parts of an eager forward hold the GIL,
  so small eager models scale worse across streams than they would in separate processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError

Runner = Callable[[np.ndarray], Any]
CALIB_N = 256


@dataclass(frozen=True)
class ModelRequest:
    """One ``--model`` argument, parsed."""

    text: str
    path: Path
    backend: str | None = None  # None: checkpoint -> torch, artifact -> its manifest
    precision: str | None = None

    @property
    def short(self) -> str:
        """File or folder name plus the backend selection: '3dgan.pt@openvino:bf16'."""
        return self.path.name + (f"@{self.backend}:{self.precision}" if self.backend else "")

    @property
    def engine(self) -> str:
        """The backend this request will run on (read from the manifest for artifacts)."""
        if self.path.is_dir():
            return str(manifest_of(self.path).get("backend", "torch"))
        return self.backend or "torch"


def parse_model_arg(text: str) -> ModelRequest:
    """``PATH`` or ``PATH@BACKEND[:PRECISION]``; checks that the path exists."""
    from caloquant.precision import BACKENDS, check_supported

    raw = text.strip()
    if not raw:
        raise CaloquantError("--model must not be empty")
    path_s, backend, precision = raw, None, None
    if "@" in raw and not Path(raw).exists():
        path_s, _, sel = raw.rpartition("@")
        backend, _, precision = sel.partition(":")
        backend, precision = backend.strip().lower(), (precision.strip().lower() or "fp32")
        if backend not in BACKENDS:
            raise CaloquantError(f"--model {raw}: unknown backend '{backend}' after '@' (choose from {', '.join(BACKENDS)})")
        check_supported(backend, precision)
    path = Path(path_s)
    if not path.exists():
        raise CaloquantError(f"{path}: model not found")
    if path.is_dir():
        if not (path / "manifest.json").exists():
            raise CaloquantError(f"{path}: not a caloquant artifact directory (no manifest.json)")
        if backend is not None:
            raise CaloquantError(f"--model {raw}: an artifact already fixes its backend and precision; drop '@{backend}:{precision}'")
    return ModelRequest(raw, path, backend, precision)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Exporters and quantizers log warnings (torchvision missing, 'consider pre-processing')."""
    root = logging.getLogger()
    names = ["torch", "nncf", "onnxruntime"]
    saved = [(lg, lg.level) for lg in [root, *map(logging.getLogger, names)]]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, lvl in saved:
            lg.setLevel(lvl)


def _dir_size(d: Path, files: list[str]) -> int:
    return sum((d / f).stat().st_size for f in files if (d / f).exists())


def count_flops(module: Any, latent_dim: int) -> int | None:
    """FLOPs per shower of a torch generator (a multiply-accumulate counts 2), at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            module(torch.zeros(1, latent_dim))
        return int(fc.get_total_flops())
    except Exception:  # noqa: BLE001 - an exotic module the counter cannot trace
        return None


@dataclass
class Variant:
    """A loaded model ready to be timed. ``engine`` is what the backend needs to make runners:
    torch: a callable model (module or TorchModel); openvino: (ov.Model, hint); onnxruntime: bytes."""

    request: ModelRequest
    label: str
    kind: str  # "checkpoint" | "artifact"
    backend: str
    precision: str
    spec: Any
    engine: Any
    model_bytes: int
    source_bytes: int
    module: Any = None  # the float torch generator, if loaded (for counting FLOPs)
    layer_precisions: dict[str, str] = field(default_factory=dict)
    recipe: str | None = None
    meets_tolerance: bool | None = None
    flops_per_shower: int | None = None
    rewritten: bool = False  # an artifact of the sub-pixel rewrite: it runs fewer FLOPs than its architecture
    flops_per_shower_architecture: int | None = None
    _cache: dict[tuple[int, int], tuple[list[Runner], dict[str, Any]]] = field(default_factory=dict, repr=False)
    _torch: dict[int, Runner] = field(default_factory=dict, repr=False)  # torch runner per thread count

    # --- runners ---------------------------------------------------------------------------

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One runnable per stream and what the engine actually uses (threads, streams)."""
        key = (threads, streams)
        if key not in self._cache:  # kept until release(): the grid is visited in several rounds
            self._cache[key] = _make_runners(self, threads, streams)
        return self._cache[key]

    def release(self) -> None:
        self._cache.clear()

    def torch_runner(self, threads: int) -> Runner:
        """A torch callable that runs with ``threads`` intra-op threads in whichever thread calls
        it; float models share the module, a compiled (int8) program is compiled once per
        thread count (inductor bakes the thread count into its kernels)."""
        if threads not in self._torch:
            eng = self.engine
            if isinstance(eng, _TorchEager):
                r = _TorchEager(eng.module)
                r.threads = threads
                self._torch[threads] = r
            else:
                from caloquant.precision.backends.torch_backend import TorchModel

                self._torch[threads] = TorchModel(eng.module, eng.precision, threads, eng.layer_precisions, eng.program,
                                                  compiled=(eng.precision == "int8"))
        return self._torch[threads]

    def count_flops(self) -> int | None:
        """FLOPs per shower the engine executes, from the torch generator (for an artifact it is
        rebuilt from the manifest's spec, and rewritten again if the artifact was: the sub-pixel
        rewrite computes the same function with fewer FLOPs). The architecture's own count is
        kept in ``flops_per_shower_architecture``."""
        from caloquant.models import build

        module = self.module
        if module is None:
            try:
                module, _ = build(self.spec)
            except CaloquantError:
                return None
        module = module.eval()
        self.flops_per_shower_architecture = count_flops(module, self.spec.latent_dim)
        self.flops_per_shower = self.flops_per_shower_architecture
        if self.rewritten:
            from caloquant.precision import fuse_upsample_conv

            self.flops_per_shower = count_flops(fuse_upsample_conv(module)[0], self.spec.latent_dim)
        return self.flops_per_shower

    def info(self) -> dict[str, Any]:
        return {"model": self.label, "path": str(self.request.path), "kind": self.kind, "backend": self.backend,
                "precision": self.precision, "arch": self.spec.arch, "recipe": self.recipe,
                "meets_tolerance": self.meets_tolerance, "model_bytes": self.model_bytes, "source_bytes": self.source_bytes,
                "flops_per_shower": self.flops_per_shower,
                "flops_per_shower_architecture": self.flops_per_shower_architecture,
                "int8_layers": sum(1 for v in self.layer_precisions.values() if v == "int8"),
                "layers": len(self.layer_precisions)}


def load_variant(req: ModelRequest, label: str, threads: int, seed: int = 0) -> Variant:
    with quiet_logs():
        if req.path.is_dir():
            return _load_artifact(req, label, threads)
        return _load_checkpoint(req, label, threads, seed)


def _engine(backend: str, model: Any) -> Any:
    """What a stream needs to build its own runner: OpenVINO (ov.Model, hint), ONNX bytes, or the model."""
    if backend == "openvino":
        return (model.model, model.hint)
    if backend == "onnxruntime":
        return model.model_bytes
    return model


def _load_artifact(req: ModelRequest, label: str, threads: int) -> Variant:
    from caloquant.precision import load_artifact

    gen = load_artifact(req.path, threads)
    m, mf = gen.model, gen.manifest
    backend, precision = gen.backend, gen.precision
    engine = _engine(backend, m)
    files = list(mf.get("files", []))
    size = int(mf.get("size_bytes") or _dir_size(req.path, files))
    return Variant(req, label, "artifact", backend, precision, gen.spec, engine, size, size, None,
                   dict(mf.get("layer_precisions", {})), mf.get("recipe"), mf.get("meets_tolerance"),
                   rewritten=bool((mf.get("rewrite") or {}).get("convs")))


def _load_checkpoint(req: ModelRequest, label: str, threads: int, seed: int) -> Variant:
    from caloquant.models import load_checkpoint
    from caloquant.precision.backends import make_backend

    ckpt = load_checkpoint(req.path)
    spec, module = ckpt.spec, ckpt.generator.eval()
    backend, precision = req.backend or "torch", req.precision or "fp32"
    src = req.path.stat().st_size
    if backend == "torch" and precision == "fp32":
        from caloquant.precision import weight_layers

        lp = {n: "fp32" for n in weight_layers(module)}
        return Variant(req, label, "checkpoint", "torch", "fp32", spec, _TorchEager(module), src, src, module, lp)
    be = make_backend(backend, module, spec.latent_dim, threads)
    if precision == "int8":
        from caloquant.precision import calibration_latents

        model = be.int8_model(calibration_latents(spec, CALIB_N, seed), None, "minmax", "fp32")
        recipe = "naive"
    else:
        model, recipe = be.float_model(precision), None
    if backend == "torch" and precision != "int8":
        size = src  # autocast keeps the fp32 weights: what is loaded is the checkpoint
    else:
        with tempfile.TemporaryDirectory() as tmp:
            size = _dir_size(Path(tmp), model.save(Path(tmp)))
    engine = _engine(backend, model)
    return Variant(req, label, "checkpoint", backend, precision, spec, engine, size, src, module,
                   dict(model.layer_precisions), recipe)


class _TorchEager:
    """PyTorch fp32 eager, exactly as `caloquant sample` runs a checkpoint."""

    def __init__(self, module: Any) -> None:
        self.module, self.precision, self.threads = module, "fp32", None

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(torch.from_numpy(latent)).float().numpy()


def ov_compile(v: Variant, threads: int, streams: int, perf_count: bool = False) -> Any:
    import openvino as ov

    model, hint = v.engine
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": streams,
                           "INFERENCE_NUM_THREADS": threads * streams}
    if perf_count:
        cfg["PERF_COUNT"] = True
    return ov.Core().compile_model(model, "CPU", cfg)


def ort_session(v: Variant, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(v.engine, so, providers=["CPUExecutionProvider"])


def _make_runners(v: Variant, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
    if v.backend == "openvino":
        compiled = ov_compile(v, threads, streams)
        out = compiled.output(0)

        def ov_runner(req: Any) -> Runner:
            return lambda x: req.infer({0: x})[out]

        eff = {"streams": int(compiled.get_property("NUM_STREAMS")),
               "threads_total": int(compiled.get_property("INFERENCE_NUM_THREADS"))}
        return [ov_runner(compiled.create_infer_request()) for _ in range(streams)], eff
    if v.backend == "onnxruntime":
        def ort_runner(sess: Any) -> Runner:
            name = sess.get_inputs()[0].name
            return lambda x: sess.run(None, {name: x})[0]

        return [ort_runner(ort_session(v, threads)) for _ in range(streams)], {"streams": streams, "threads_total": threads * streams}
    return [v.torch_runner(threads)] * streams, {"streams": streams, "threads_total": threads * streams}


def latents_for(spec: Any, n: int, seed: int) -> np.ndarray:
    """Conditioned latents over the model's energy range (contiguous float32)."""
    from caloquant.precision import calibration_latents

    return np.ascontiguousarray(calibration_latents(spec, n, seed), dtype=np.float32)


def manifest_of(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def prime_libraries(backends: set[str]) -> None:
    """Import the engines and initialise their thread pools and kernel caches once, so that a
    model's RSS growth counts the model, not the one-off cost of loading a library."""
    import torch

    count_flops(torch.nn.Linear(2, 2), 2)  # the FLOP counter pulls in a lot of Python
    with quiet_logs(), torch.inference_mode():
        torch.nn.functional.conv3d(torch.zeros(1, 2, 4, 4, 4), torch.zeros(2, 2, 2, 2, 2))
        torch.nn.functional.conv2d(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 2, 2))
        torch.nn.functional.conv_transpose2d(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 2, 2))
        if "openvino" in backends:
            import openvino as ov

            ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
        if "onnxruntime" in backends:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
