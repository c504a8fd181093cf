"""Editing OpenVINO graphs: one walk over the graph, and what the backend builds on it (the ops
an int8 input reaches, the FakeQuantize ops and what they feed, cutting a model in two, float
weights stored compactly).

Written by hand: OpenVINO's Python API gives nodes, their inputs and their readers, but no
traversal, no sub-graph extraction and no "what does this quantizer feed" query; NNCF has
these internally, on its own graph type, not on ``ov.Model``. Every traversal here is
:func:`walk`, so the ops looked through and the order ops are found in are defined once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

# ops between an activation quantizer and the layer it serves that do not change values
VALUE_PRESERVING = frozenset(
    {"Reshape", "Pad", "Interpolate", "Transpose", "Squeeze", "Unsqueeze", "Broadcast"}
)
# the ops int8 is about: what NNCF quantizes the inputs and weights of
COMPUTE = frozenset({"Convolution", "ConvolutionBackpropData", "GroupConvolution", "MatMul"})


def kind(op: Any) -> str:
    """The op's type: 'Convolution', 'Reshape', 'FakeQuantize', ..."""
    return str(op.get_type_name())


def short_name(full: str) -> str:
    """'__module.conv2/aten::_convolution/Convolution' -> 'conv2'; 'aten::view/Reshape' -> 'view';
    'aten::permute/Transpose_3' -> 'permute_3' (OpenVINO numbers repeated ops of one kind: two
    permutes of the Conv2D generator must not share a label, or a per-unit setting hits both).
    Tensor plumbing and arithmetic in a module's own forward are labelled with both:
    '__module.shape/aten::cat/Concat' -> 'shape.cat' (a two-stage model's shape network: its
    concat, reshape and permutes must not share the label 'shape')."""
    m = re.match(r"__module\.([^/]+)/(?:aten::([^/]+)/[A-Za-z]+(_\d+)?(?:/|$))?", full)
    if m:
        op = m.group(2)
        if op not in _FORWARD_OPS:
            return m.group(1)
        return f"{m.group(1)}.{op}{m.group(3) or ''}"
    m = re.match(r"aten::([^/]+)/[A-Za-z]+(_\d+)?(?:/|$)", full)
    return m.group(1) + (m.group(2) or "") if m else full


# tensor plumbing and arithmetic that a module's forward does itself, labelled with the op;
# a layer module's own op (convolution, linear, batch norm, activation, upsampling) is
# labelled by the module alone, as before two-stage models existed
_FORWARD_OPS = frozenset(
    {"cat", "view", "reshape", "permute", "flatten", "unsqueeze", "squeeze", "transpose"}
    | {"mul", "div", "add", "sub", "sum", "clamp_min", "slice"}
)


def module_path(op_name: str) -> str:
    """The torch module an op converted by ``ov.convert_model`` came from ('' for the root)."""
    return op_name[len("__module.") :].split("/")[0] if op_name.startswith("__module.") else ""


def walk(
    starts: Iterable[Any], through: Callable[[Any], bool], upstream: bool = False
) -> list[Any]:
    """Every op reached from the ops ``starts`` (which are not listed unless reached again), each
    once, in the order reached: from an op to the ops that read its first output (``upstream``:
    to the ops that produce its inputs). The walk goes on from every start, and from a reached
    op only where ``through(op)``; the ops it stops at are listed too.

    Depth first, last reader first (a stack): the order is the one the backend has always used,
    so lists built from it (e.g. NNCF's ignored scope) are unchanged."""
    out: list[Any] = []
    todo, seen = list(starts), set()
    while todo:
        n = todo.pop()
        if upstream:
            nxt = [n.input_value(i).get_node() for i in range(n.get_input_size())]
        elif n.get_output_size():  # a Result has no output
            nxt = [t.get_node() for t in n.output(0).get_target_inputs()]
        else:
            nxt = []
        for c in nxt:
            if c.get_friendly_name() in seen:
                continue
            seen.add(c.get_friendly_name())
            out.append(c)
            if through(c):
                todo.append(c)
    return out


def value_preserving(op: Any) -> bool:
    """Whether ``op`` passes values on unchanged (see ``VALUE_PRESERVING``)."""
    return kind(op) in VALUE_PRESERVING


def compute_ops(node: Any) -> list[Any]:
    """Every Convolution/MatMul whose input comes from ``node`` through value-preserving ops
    and concatenations (all branches: a reshape can feed three convolutions, a concatenation
    joins three branches into one)."""
    found = walk([node], lambda op: value_preserving(op) or kind(op) == "Concat")
    return [op for op in found if kind(op) in COMPUTE]


def fake_quantize_consumers(
    model: Any, activations_only: bool = True
) -> list[tuple[Any, list[Any]]]:
    """Every FakeQuantize of ``model`` in graph order, with the ops that read its output.
    ``activations_only``: leave out quantizers of constants (weights)."""
    out = []
    for op in model.get_ordered_ops():
        if kind(op) != "FakeQuantize":
            continue
        if activations_only and kind(op.input_value(0).get_node()) == "Constant":
            continue
        out.append((op, walk([op], lambda _: False)))
    return out


def input_quantizers(model: Any) -> dict[str, tuple[Any, set[str]]]:
    """Every activation FakeQuantize by its name, with the unit labels it quantizes for: the ops
    it feeds, and the op whose output it sits on (NNCF moves a unit's quantizer past a reshape
    when the next op is ignored: ``aten::view/Reshape/fq_output_0`` is the 'view' unit's)."""
    return {
        fq.get_friendly_name(): (
            fq,
            {short_name(c.get_friendly_name()) for c in readers}
            | {short_name(fq.get_friendly_name())},
        )
        for fq, readers in fake_quantize_consumers(model)
    }


def drop_stray_quantizers(model: Any, chosen: set[str]) -> list[str]:
    """Bypass (in place) every activation FakeQuantize that serves none of the ``chosen`` unit
    labels; returns the bypassed quantizers' names (empty: what runs is what was asked).

    Why by hand: with a unit in NNCF's ignored scope, NNCF can still leave a quantizer on the
    output of the op before it (the Conv2D generator: on ``view`` and ``cat`` with *every* unit
    ignored); that model is then int8 where nothing was asked, and what the tuner measures as
    "unit X alone" is X plus those (conv2d-g4 epoch 17: 7-9 % of Ecal from them alone). The
    backend's quantization also ignores the layers behind an ignored unit
    (:func:`compute_ops`), which leaves none of these in the built-in models; NNCF still places
    one where its quantizer propagation passes an op that walk does not look through (a view
    followed by max pooling: tests/test_openvino_graph.py). A quantizer is matched to units by
    the labels of :func:`input_quantizers` only: one whose name and readers label no unit
    (SmoothQuant's, on its own scaling op) is bypassed even where it serves an asked unit."""
    dropped = []
    for name, (fq, labels) in input_quantizers(model).items():
        if labels & chosen:
            continue
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(fq.input_value(0))
        dropped.append(name)
    return dropped


def _unit_input(model: Any, unit: str) -> Any | None:
    """The tensor the op ``unit`` reads, before its int8 quantizer (None where it is a model
    input or a constant, or there is no such op)."""
    op = next((o for o in model.get_ordered_ops() if o.get_friendly_name() == unit), None)
    if op is None or op.get_input_size() == 0:
        return None
    src = op.input_value(0)
    while kind(src.get_node()) == "FakeQuantize":
        src = src.get_node().input_value(0)
    return None if kind(src.get_node()) in ("Parameter", "Constant") else src


def split_at(model: Any, unit: str) -> tuple[Any, Any] | None:
    """The model cut in two at the input of the op named ``unit`` (before its int8 quantizer,
    if it has one): the head, from the model's inputs to that tensor, and the tail, from a new
    Parameter holding that tensor to the model's outputs. None where that tensor does not
    separate the graph (the tail would need another tensor of the head, e.g. a skip connection)
    or where the head would be empty.

    Written by hand: OpenVINO's Python API has no sub-graph extraction, and the CPU plugin has
    no per-node precision switch reachable from Python (the runtime attribute
    ``disable_fp16_compression`` is C++ only, docs/findings.md 11); two compiled parts with
    their own ``INFERENCE_PRECISION_HINT`` are what remains."""
    import openvino as ov
    import openvino.opset13 as ops

    head_model, tail_model = model.clone(), model.clone()
    head_src, tail_src = _unit_input(head_model, unit), _unit_input(tail_model, unit)
    if head_src is None or tail_src is None:
        return None
    inputs = {p.get_friendly_name() for p in tail_model.get_parameters()}
    cut = ops.parameter(tail_src.get_partial_shape(), tail_src.get_element_type(), "cut")
    for target in list(tail_src.get_target_inputs()):
        target.replace_source_output(cut.output(0))
    # the tail must be computable from the cut alone: it may reach none of the model's inputs
    above = walk(tail_model.get_results(), lambda _: True, upstream=True)
    if any(kind(op) == "Parameter" and op.get_friendly_name() in inputs for op in above):
        return None
    head = ov.Model([ops.result(head_src)], head_model.get_parameters(), "head")
    tail = ov.Model(tail_model.get_results(), [cut], "tail")
    return head, tail


def split_points(model: Any, units: Iterable[str]) -> list[str]:
    """The ``units`` (in their order) at whose input :func:`split_at` can cut ``model``."""
    return [u for u in units if split_at(model, u) is not None]


def compact_weights(
    model: Any, compact: dict[str, Any] | None, scope: str | None = None
) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose float (not int8) weights are stored in float16 and expanded to
    float32 when the model is compiled (the CPU plugin folds the expansion into one constant),
    so the file is small and inference is unchanged apart from the weights' float16 rounding:
    - the convolutions made by the sub-pixel rewrite (``compact``: name -> UpsampledConv) take
      their kernel from the compact original kernel through Einsum + Reshape (the file holds the
      small kernel, inference runs the large one);
    - float MatMul weights (e.g. a generator's first dense layer) become a float16 constant.
    Int8 units are left alone (NNCF already stores their weights as int8); ``compact=None``
    leaves the model as it is (the exact fp32 model). Weights outside the model's quantized
    ``scope`` (a two-stage model's energy stage) stay float32.
    Returns the model and the names of the layers stored compactly."""
    import openvino as ov
    import openvino.opset13 as ops

    from caloquant.precision.backends import in_scope

    if compact is None:
        return model, []
    m = model.clone()
    done: list[str] = []
    for op in m.get_ordered_ops():
        if kind(op) not in ("Convolution", "MatMul"):
            continue
        src = op.input_value(1).get_node()
        if kind(src) != "Constant" or src.get_element_type() != ov.Type.f32:
            continue
        name = op.get_friendly_name()
        if not in_scope(module_path(name), scope):
            continue
        if kind(op) == "MatMul":
            w = src.get_data()
            if w.size < 1024:  # not worth a node
                continue
            half = ops.convert(ops.constant(w.astype(np.float16)), ov.Type.f32)
            op.input(1).replace_source_output(half.output(0))
            done.append(short_name(name))
            continue
        for mod_name, mod in compact.items():
            if not name.startswith(f"__module.{mod_name}.conv/"):
                continue
            eq, operands, shape = mod.compact_weight_recipe()
            consts = [ops.constant(t.numpy().astype(np.float32)) for t in operands[:-1]]
            w = ops.convert(ops.constant(operands[-1].numpy().astype(np.float16)), ov.Type.f32)
            kernel = ops.reshape(
                ops.einsum([*consts, w], eq), ops.constant(np.array(shape, dtype=np.int64)), False
            )
            op.input(1).replace_source_output(kernel.output(0))
            done.append(mod_name)
    return m, done
