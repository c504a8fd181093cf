"""A float part split in two on OpenVINO (reduced precision up to a layer, f32 from there): the
cut is exact, the artifact keeps both parts, and the tuner searches the cut points latest first."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.precision import QuantizeConfig, Tolerance, calibration_latents
from caloquant.precision.backends import load_model, make_backend
from caloquant.precision.backends.openvino import OpenVINOModel, split_at
from caloquant.precision.backends.torch_backend import TorchModel
from caloquant.precision.evaluation import EvalSet, badness
from caloquant.precision.tuner import Tuner
from caloquant.precision.tuner_steps import split_float_part
from caloquant.timing import TimingConfig
from tests.test_precision import TINY_SPEC, Tiny3D

pytest.importorskip("openvino")


class Residual(nn.Module):
    """conv_a's output skips conv_b and conv_c and is added to conv_c's output: the tensor at
    conv_c's input does not separate the graph (the tail would also need conv_a's output),
    the one at conv_b's input does (the skip starts there)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(16, 4 * 6 * 6 * 6)
        self.conv_a = nn.Conv3d(4, 4, 3, padding=1)
        self.conv_b = nn.Conv3d(4, 4, 3, padding=1)
        self.conv_c = nn.Conv3d(4, 4, 3, padding=1)
        self.conv_d = nn.Conv3d(4, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x1 = nn.functional.leaky_relu(self.conv_a(self.dense(z).view(-1, 4, 6, 6, 6)), 0.3)
        x2 = nn.functional.leaky_relu(self.conv_b(x1), 0.3)
        x3 = nn.functional.leaky_relu(self.conv_c(x2), 0.3) + x1
        return nn.functional.relu(self.conv_d(x3)).squeeze(1)


@pytest.fixture(scope="module")
def benign() -> tuple[nn.Module, object, np.ndarray]:
    gen = Tiny3D(hostile=False).eval()
    be = make_backend("openvino", gen, 16, 2)
    return gen, be, calibration_latents(TINY_SPEC, 64, 0)


def _label(unit: str) -> str:
    from caloquant.precision.backends.openvino import short_name

    return short_name(unit)


def test_cut_is_exact_and_both_parts_are_saved(benign, tmp_path: Path) -> None:
    gen, be, calib = benign
    points = be.split_points(calib)
    assert [_label(u) for u in points][-2:] == ["conv_b", "conv_c"], points
    ref = be.float_model("fp32")(calib)
    for u in points:  # both parts in f32: the hand-over changes nothing
        head, tail = split_at(be.fp_model, u)
        got = OpenVINOModel([(head, "f32"), (tail, "f32")], 2, {})(calib)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())

    m = be.float_model("bf16", f32_from=points[-1])
    # fp32: a CPU without bf16 runs the hint as f32 (AVX2); the layer precisions say what runs
    assert m.executed_precision() in ("bf16+fp32", "fp32")
    head = "bf16" if m.executed_precision() == "bf16+fp32" else "fp32"
    assert m.layer_precisions["conv_c"] == "fp32" and m.layer_precisions["conv_a"] == head, (
        m.layer_precisions
    )
    files = m.save(tmp_path)
    assert files == ["model.xml", "model.bin", "model_part1.xml", "model_part1.bin"]
    manifest = {"backend_options": m.options(), "layer_precisions": m.layer_precisions}
    assert manifest["backend_options"]["f32_from"] == "conv_c"
    assert [p["inference_precision_hint"] for p in manifest["backend_options"]["parts"]] == [
        "bf16",
        "f32",
    ]
    back = load_model("openvino", tmp_path, json.loads(json.dumps(manifest)), 2)
    np.testing.assert_array_equal(back(calib), m(calib))
    r, _ = back.runners(1, 2)  # one chain of requests per stream
    np.testing.assert_array_equal(r[1](calib[:8]), m(calib[:8]))
    assert back.profile(calib[:8], 1, 2, 0.0)["calls"] >= 2

    q = be.int8_model(
        calib, None, "minmax", "bf16", f32_from=points[-1]
    )  # int8 units stay int8 in either part
    assert q.executed_precision().startswith("int8+") and q.layer_precisions["conv_c"] == "int8", (
        q.layer_precisions
    )

    (tmp_path / "model_part1.bin").unlink()
    with pytest.raises(CaloquantError, match="model_part1"):
        load_model("openvino", tmp_path, manifest, 2)


def test_a_tensor_that_does_not_separate_the_graph_is_no_cut() -> None:
    be = make_backend("openvino", Residual().eval(), 16, 2)
    calib = calibration_latents(TINY_SPEC, 32, 0)
    by_label = {_label(u): u for u in be.units(calib)}
    assert split_at(be.fp_model, by_label["conv_c"]) is None
    points = [_label(u) for u in be.split_points(calib)]
    assert "conv_b" in points and "conv_d" in points and "conv_c" not in points, points
    with pytest.raises(CaloquantError, match="cannot be cut"):
        be.float_model("bf16", f32_from=by_label["conv_c"])
    with pytest.raises(CaloquantError, match="no split float part"):
        make_backend("onnxruntime", Residual().eval(), 16, 2).float_model("fp32", f32_from="conv_b")


def test_tuner_tries_cuts_from_the_last_and_stops_at_the_first_that_passes(benign) -> None:
    """The tolerance is set between the deviations of bf16 everywhere and bf16 with the last
        layer in f32 (both measured here on the same paired latents): the search must take the
        last cut with one trial and stop; with a tolerance below both it must try every cut, last
        first, each with the accepted int8 units and without (an earlier cut moves the physics
    less, so the search could otherwise stop early)."""
    gen, be, calib = benign
    if "bf16" not in be.float_model("bf16").executed_precision():
        pytest.skip("this CPU runs OpenVINO's bf16 hint in f32: no bf16 deviation to split")
    cfg = QuantizeConfig(
        backend="openvino",
        calib_n=64,
        eval_n_per_point=40,
        batch=16,
        extend_factor=0,
        threads=2,
        timing=TimingConfig(window_s=0.05, rounds=1, warmup_s=0.01),
    )
    fp32 = TorchModel(gen, "fp32", 2, {})
    ev = EvalSet.build(TINY_SPEC, fp32, cfg.eval_n_per_point, cfg.seed, cfg.eval_energies_gev)
    points = be.split_points(calib)
    unit = Tolerance(ecal_rel=0.01, moment_shift=0.1)

    def bad(model: object) -> float:
        return badness(
            ev.score(
                np.concatenate(
                    [model(ev.latents[i : i + 100]) for i in range(0, len(ev.latents), 100)]
                )
            ),
            unit,
        )

    whole, split = bad(be.float_model("bf16")), bad(be.float_model("bf16", f32_from=points[-1]))
    if not split < 0.8 * whole:
        pytest.skip(
            "bf16 in the last layer is not what moves this model here "
            f"(badness {whole:.3g} vs {split:.3g})"
        )
    s = (whole * split) ** 0.5  # badness scales as 1 / tolerance
    tuner = Tuner(
        be, ev, calib, replace(cfg, tolerance=Tolerance(ecal_rel=0.01 * s, moment_shift=0.1 * s))
    )
    # one search per precision the CPU executes differently (the tuner's step 6 skips the
    # others before this step): fp16 runs as bf16 without fp16 arithmetic (AMD Zen 4); with
    # AVX-512 FP16 (Intel) it is searched too
    executed = {be.float_model(p).executed_precision(): p for p in ("fp16", "bf16")}
    split_float_part(tuner, list(executed.values()), [], "minmax")
    tried = [t for t in tuner.trials if "f32_from" in t.config]
    assert sorted(t.config["precision"] for t in tried) == sorted(executed.values()), [
        t.name for t in tried
    ]
    assert all(t.passes and t.config["f32_from"] == "conv_c" for t in tried), [
        t.name for t in tried
    ]

    low = 1e-6  # below every reduced-precision deviation
    tuner = Tuner(
        be,
        ev,
        calib,
        replace(cfg, tolerance=Tolerance(ecal_rel=0.01 * low, moment_shift=0.1 * low)),
    )
    int8 = [u for u in be.units(calib) if _label(u) == "dense"]
    split_float_part(tuner, ["bf16"], int8, "minmax")
    cuts = [(t.config["f32_from"], t.config["precision"]) for t in tuner.trials]
    assert cuts == [(_label(u), p) for u in reversed(points) for p in ("int8", "bf16")], cuts
    assert not any(t.passes for t in tuner.trials)
