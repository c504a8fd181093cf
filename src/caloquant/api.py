"""The Python API: what a physicist types in a notebook. Each function is a thin layer over a
stage's public API, as the command line is::

    import caloquant as cq
    model = cq.load()                                   # the embedded CERN 3DGAN
    q = cq.quantize(model, precision="int8")            # physics recipe, in memory
    showers, energies = q.sample(1000, energy_range=(100, 500), seed=1)
    ref, _ = model.sample(1000, energy_range=(100, 500), seed=1)
    report = cq.validate((ref, energies), (showers, energies), paired=True)
    print(report)
    q.save("int8_artifact")

Nothing here changes process-wide state for longer than a call (threads, log levels);
progress goes to the ``caloquant`` logger (``logging.basicConfig(level=logging.INFO)`` shows it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.physics import ValidationReport


class Model:
    """A shower generator ready to use: a float32 checkpoint (run by PyTorch) or a
    reduced-precision variant (an artifact on disk or a fresh ``quantize`` result)."""

    def __init__(
        self, generator: Any, source: str, checkpoint: Any = None, quantized: Any = None
    ) -> None:
        self.generator, self.source, self.checkpoint, self.quantized = (
            generator,
            source,
            checkpoint,
            quantized,
        )

    @property
    def spec(self) -> Any:
        return self.generator.spec

    @property
    def precision(self) -> str:
        return str(getattr(self.generator, "precision", "fp32"))

    @property
    def backend(self) -> str:
        return str(getattr(self.generator, "backend", "torch"))

    @property
    def manifest(self) -> Any:
        """An artifact's or a quantize result's manifest (a :class:`caloquant.precision.Manifest`,
        which also reads like the JSON document; None for a float32 checkpoint)."""
        return getattr(self.generator, "manifest", None)

    @property
    def self_check(self) -> dict[str, Any] | None:
        """For a loaded artifact: the canary run on this CPU (or why it was skipped)."""
        return getattr(self.generator, "self_check", None)

    def generate(self, latent: np.ndarray) -> np.ndarray:
        """Showers (n, X, Y, Z) in GeV for conditioned latents (n, latent_dim)."""
        return self.generator.generate(latent)

    def sample(
        self,
        n: int | None = None,
        *,
        energy: float | None = None,
        energy_range: tuple[float, float] | None = None,
        energies: Sequence[float] | np.ndarray | None = None,
        noise: np.ndarray | None = None,
        seed: int = 0,
        batch: int = 64,
        allow_extrapolation: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw showers: returns (showers (N, X, Y, Z), energies (N,)), both GeV, numpy.
        Give one of ``energy``, ``energy_range`` (uniform) or ``energies``; ``noise`` is raw
        N(0, 1) noise (N, noise_dim). The same seed gives the same energies and latents for
        any model of the same spec, so two models' samples can be compared shower by shower."""
        from caloquant.data import SampleConfig
        from caloquant.models import check_energy_range, sample_showers

        # the checks of `caloquant sample` (n, seed, energies, batch: caloquant.data.SampleConfig)
        asked = SampleConfig(n, seed, energy, energy_range, energies, batch=batch)
        e, batch = asked.values(), asked.batch
        check_energy_range(e, self.spec, allow_extrapolation)
        return sample_showers(self.generator, e, seed=seed, noise=noise, batch=batch), e

    def save(self, path: str | os.PathLike[str]) -> Path:
        """A quantized model: its artifact directory (what `caloquant quantize` writes); a float32
        model: a caloquant checkpoint file."""
        if self.quantized is not None:
            return self.quantized.save(path)  # type: ignore[no-any-return]
        if self.checkpoint is not None:
            from caloquant.models import save_checkpoint

            return save_checkpoint(path, self.checkpoint)
        raise CaloquantError(
            f"{self.source}: a loaded artifact is already saved; copy its directory instead"
        )

    def __repr__(self) -> str:
        return f"<caloquant.Model {self.source}: {self.spec.arch}, {self.backend} {self.precision}>"


def load(
    model: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    skip_self_check: bool = False,
) -> Model:
    """A built-in model name (default ``cern-3dgan``), a caloquant checkpoint (.pt), a Keras 2
    CERN 3DGAN generator (.hdf5/.h5, converted on the fly) or a ``quantize`` artifact directory
    (its self-check runs on this CPU unless ``skip_self_check``)."""
    from caloquant.models import model_ref
    from caloquant.precision import load_generator

    ref = model_ref(model)
    gen, ckpt = load_generator(ref, threads, skip_self_check)
    return Model(gen, ref.name, checkpoint=ckpt)


def quantize(
    model: Model | str | os.PathLike[str] | None = None,
    precision: str = "int8",
    *,
    backend: str = "openvino",
    recipe: str = "physics",
    tolerance: Any = "default",
    head_to_head: bool = False,
    threads: int | None = None,
    **options: Any,
) -> Model:
    """A reduced-precision variant of a float32 model, tuned in memory (nothing is written;
    ``.save(DIR)`` writes the artifact). ``tolerance``: a preset name, a JSON file or a
    :class:`caloquant.precision.Tolerance`; ``options``: further :class:`QuantizeConfig`
    fields (calibration, calib_n, eval_n_per_point, seed, batch, timing, ...)."""
    from caloquant.precision import QuantizeConfig, Tolerance, quantize as run_quantize

    m = model if isinstance(model, Model) else load(model, threads)
    if m.checkpoint is None:
        raise CaloquantError(
            f"{m.source}: quantize starts from a float32 model, not a reduced-precision artifact"
        )
    tol = tolerance if isinstance(tolerance, Tolerance) else Tolerance.load(tolerance)
    try:
        cfg = QuantizeConfig(
            backend=backend,
            precision=precision,
            recipe=recipe,
            tolerance=tol,  # type: ignore[arg-type]
            head_to_head=head_to_head,
            threads=threads,
            **options,
        )
    except TypeError as exc:
        raise CaloquantError(f"unknown quantize option ({exc})") from None
    res = run_quantize(m.checkpoint, cfg, source=m.source)
    return Model(res, f"{m.source}@{backend}:{precision}", quantized=res)


class Report(ValidationReport):
    """A validation report that prints as the terminal summary; ``to_dict()`` is the JSON."""

    def __str__(self) -> str:
        from rich.console import Console

        from caloquant.report import validation_tables

        with open(os.devnull, "w") as sink:
            con = Console(width=140, record=True, file=sink)
            for table in validation_tables(self.data):
                con.print(table)
            return con.export_text()


def validate(ref: Any, cand: Any, **options: Any) -> Report:
    """Compare ``cand`` with ``ref`` (files or (showers, energies) arrays) with the physics
    metrics of :func:`caloquant.physics.validate` (options: bins, paired, classifier, ...)."""
    from caloquant.physics import validate as run_validate

    return Report(run_validate(ref, cand, **options).to_dict())


def models() -> list[dict[str, str]]:
    """The built-in models: name, description, licence, source."""
    from caloquant.models import builtin_listing

    return builtin_listing()
