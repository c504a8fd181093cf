"""`quantize`: build a reduced-precision variant of a generator in memory, with its physics
evidence (:class:`~caloquant.precision.pipeline.QuantizePipeline` does the work;
``QuantizeResult.save`` writes the artifact, :func:`~caloquant.precision.artifact.load_artifact`
runs a saved one after checking it on this CPU)."""

from __future__ import annotations

from caloquant.models import Checkpoint
from caloquant.precision.artifact import QuantizeResult
from caloquant.precision.config import QuantizeConfig
from caloquant.precision.pipeline import QuantizePipeline
from caloquant.runtime import torch_threads


def quantize(ckpt: Checkpoint, cfg: QuantizeConfig, source: str = "") -> QuantizeResult:
    """Run the configured recipe on a float32 checkpoint; nothing is written (see ``save``).
    Progress goes to the ``caloquant`` logger; torch threads are set for the call only."""
    with torch_threads(cfg.threads):
        return QuantizePipeline(ckpt, cfg, source).run()  # type: ignore[no-any-return]
