"""The OpenVINO backend's graph editing (caloquant.precision.backends.openvino.graph) on small
torch models converted by the backend: the one walk, the quantizers and what they feed, the cut
in two, and the stray quantizers NNCF can leave outside the asked int8 units. Real OpenVINO and
NNCF, no mocks."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from caloquant.precision.backends import make_backend
from caloquant.precision.backends.openvino import (
    OpenVINOModel,
    compute_ops,
    fake_quantize_consumers,
    input_quantizers,
    short_name,
    split_at,
    split_points,
    walk,
)
from caloquant.precision.backends.openvino.graph import drop_stray_quantizers

pytest.importorskip("openvino")


class Skip(nn.Module):
    """The view feeds two convolutions; their outputs are concatenated for conv_c, and conv_a's
    also skips conv_c (added to its output) to conv_d."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(8, 2 * 6 * 6)
        self.conv_a = nn.Conv2d(2, 2, 3, padding=1)
        self.conv_b = nn.Conv2d(2, 2, 3, padding=1)
        self.conv_c = nn.Conv2d(4, 2, 3, padding=1)
        self.conv_d = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, 2, 6, 6)
        a = nn.functional.leaky_relu(self.conv_a(x), 0.2)
        b = nn.functional.leaky_relu(self.conv_b(x), 0.2)
        y = nn.functional.leaky_relu(self.conv_c(torch.cat([a, b], 1)), 0.2) + a
        return nn.functional.relu(self.conv_d(y)).squeeze(1)


class Pooled(nn.Module):
    """dense -> view -> max pooling -> conv_a -> conv_b: NNCF's quantizer for the view passes
    the pooling, which the backend's ignored scope does not look through."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(8, 2 * 6 * 6)
        self.conv_a = nn.Conv2d(2, 2, 3, padding=1)
        self.conv_b = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.dense(z).view(-1, 2, 6, 6), 2)
        return nn.functional.relu(self.conv_b(nn.functional.leaky_relu(self.conv_a(x), 0.2)))


@pytest.fixture(scope="module")
def skip() -> tuple[object, np.ndarray]:
    be = make_backend("openvino", Skip().eval(), 8, 1)
    return be, np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)


def _op(model: Any, name: str) -> Any:
    return next(o for o in model.get_ordered_ops() if o.get_friendly_name() == name)


def _labels(ops: list) -> list[str]:
    return sorted(short_name(o.get_friendly_name()) for o in ops)


def test_walk_finds_the_layers_an_input_reaches(skip) -> None:
    be, _ = skip
    m = be.fp_model
    view, prelu_a = _op(m, "aten::view/Reshape"), _op(m, "aten::leaky_relu/PRelu")
    # the readers only, where the walk goes through nothing
    assert _labels(walk([view], lambda _: False)) == ["conv_a", "conv_b"]
    # every branch of the view; through the concatenation to conv_c, not through the skip's add
    assert _labels(compute_ops(view)) == ["conv_a", "conv_b"]
    assert _labels(compute_ops(prelu_a)) == ["conv_c"]
    assert _labels(compute_ops(_op(m, "aten::add/Add"))) == ["conv_d"]
    # upstream from the output: every op of the model, each once (the results are where it starts)
    up = [o.get_friendly_name() for o in walk(m.get_results(), lambda _: True, upstream=True)]
    assert len(up) == len(set(up))
    assert set(up) == {
        o.get_friendly_name() for o in m.get_ordered_ops() if o.get_type_name() != "Result"
    }
    # only through what ``through`` allows: from conv_a up to the first op that is no reshape
    above = walk(
        [_op(m, "__module.conv_a/aten::_convolution/Convolution")],
        lambda o: o.get_type_name() == "Reshape",
        upstream=True,
    )
    assert {o.get_type_name() for o in above} == {"Reshape", "Constant", "Add"}, above


def test_a_cut_must_separate_the_graph(skip) -> None:
    be, calib = skip
    units = be.units(calib)
    by = {short_name(u): u for u in units}
    assert sorted(by) == ["add", "cat", "conv_d", "dense", "view"], units
    # dense reads the model's input (empty head); cat and add also need conv_a's output
    for u in ("dense", "cat", "add"):
        assert split_at(be.fp_model, by[u]) is None, u
    assert split_points(be.fp_model, units) == [by["view"], by["conv_d"]] == be.split_points(calib)
    ref = be.float_model("fp32")(calib)
    for u in ("view", "conv_d"):
        head, tail = split_at(be.fp_model, by[u])
        # the tail reads the cut tensor only, not the model's input
        (cut,) = tail.get_parameters()
        assert cut.get_friendly_name() != be.fp_model.get_parameters()[0].get_friendly_name()
        got = OpenVINOModel([(head, "f32"), (tail, "f32")], 1, {})(calib)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    # what the plugin runs per layer and part: the layers after the cut in f32
    head, tail = be.float_model("bf16", f32_from=by["conv_d"]).runtime_precisions()
    assert sorted(layer for layer, _ in head) == ["conv_a", "conv_b", "conv_c", "dense"], head
    assert tail == [("conv_d", "f32")]


def test_quantizers_and_what_they_feed(skip) -> None:
    be, calib = skip
    q = be.quantizer.quantize_once(calib, [], "minmax")
    pairs = fake_quantize_consumers(q)
    assert pairs
    assert all(fq.input_value(0).get_node().get_type_name() != "Constant" for fq, _ in pairs)
    assert len(fake_quantize_consumers(q, activations_only=False)) >= len(pairs)
    # the units are what NNCF's default quantizers feed
    assert {r.get_friendly_name() for _, rs in pairs for r in rs} == set(be.units(calib))
    labels = {name: lab for name, (_, lab) in input_quantizers(q).items()}
    # the quantizer on conv_a's output serves the concatenation and the skip's add
    assert {"cat", "add"} <= labels["aten::leaky_relu/PRelu/fq_output_0"], labels


def test_stray_quantizers_are_bypassed(skip) -> None:
    """Without the layers behind the view in the ignored scope, NNCF quantizes conv_a and conv_b
    from a quantizer it puts on the view's output: that one is bypassed. The backend's own
    quantization ignores those layers with the view, so nothing is left to bypass."""
    be, calib = skip
    units = be.units(calib)
    view = next(u for u in units if short_name(u) == "view")
    chosen = {short_name(u) for u in units if u != view}
    q = be.quantizer.quantize_once(calib, [view], "minmax")
    assert drop_stray_quantizers(q, chosen) == ["aten::view/Reshape/fq_output_0"]
    assert drop_stray_quantizers(q, chosen) == []  # bypassed: not there any more
    for u in units:
        be.int8_model(calib, [v for v in units if v != u], "minmax")
    assert be.quantizer.bypassed == set()


def test_a_quantizer_past_pooling_is_bypassed_and_said() -> None:
    be = make_backend("openvino", Pooled().eval(), 8, 1)
    calib = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    units = be.units(calib)
    assert [short_name(u) for u in units] == ["dense", "view", "conv_b"], units
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("caloquant.precision.backends.openvino.nncf_quantize")
    logger.addHandler(handler)
    try:
        without_view = [u for u in units if short_name(u) != "view"]
        m = be.int8_model(calib, without_view, "minmax")
        assert be.quantizer.bypassed == {"aten::view/Reshape/fq_output_0"}
        assert [r.levelno for r in records] == [logging.WARNING]
        assert "bypassed" in records[0].getMessage()
        assert m.layer_precisions == {"dense": "int8", "view": "fp32", "conv_b": "int8"}
        assert not any("view" in labels for _, labels in input_quantizers(m.model).values())
        be.int8_model(calib, without_view, "minmax")
        assert len(records) == 1  # said once per quantizer
    finally:
        logger.removeHandler(handler)
