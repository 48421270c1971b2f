"""The matrix products a piece of code runs, recorded once and replayed alone.

`record(fn)` runs `fn` once under torch.profiler and keeps every matrix product it calls, with
its operands' shapes, strides and dtypes, including the ones our C++ time loops and autograd's
backward call. `Replay(products)` runs the same products back to back on operands of the same
layouts, with nothing between them: the time a training step would take if everything but its
matmuls were free, at the speed the matmul libraries reach on the step's own shapes. The
utilisation benchmark times it beside the step (rows "... matmuls alone").

Operands are made once per distinct (shape, strides, dtype) and shared by every product of that
layout, as a layer's time steps share its recurrent weight.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

# The product kernels, as the profiler names them. Wrappers (aten::linear, aten::matmul) call
# one of these and are not counted themselves.
PRODUCTS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "mkldnn::_linear_pointwise",
    "aten::mkldnn_linear_backward_weights",  # d_y^T x on oneDNN tensors (no strides recorded)
)
# Where each op's two multiplied operands are among its inputs (addmm: bias, a, b).
_FACTORS = {
    "aten::mm": (0, 1),
    "aten::addmm": (1, 2),
    "aten::bmm": (0, 1),
    "aten::baddbmm": (1, 2),
    "mkldnn::_linear_pointwise": (0, 1),
    "aten::mkldnn_linear_backward_weights": (0, 1),
}
_WEIGHT_GRAD = "aten::mkldnn_linear_backward_weights"
_DTYPES = {"float": torch.float32, "c10::BFloat16": torch.bfloat16, "c10::Half": torch.float16}


@dataclass(frozen=True)
class Product:
    """One recorded matrix product: the op and its tensor inputs' shapes, strides (empty for a
    oneDNN tensor) and dtypes (None for an absent optional input such as a bias), and its
    inputs' values where they are plain scalars (None elsewhere)."""

    op: str
    shapes: tuple[tuple[int, ...] | None, ...]
    strides: tuple[tuple[int, ...] | None, ...]
    dtypes: tuple[torch.dtype | None, ...]
    scalars: tuple[bool | int | float | None, ...] = ()

    @property
    def label(self) -> str:
        """The op and its two factors as multiplied, `^T` marking one stored column-major: e.g.
        `mm (1500, 640)^T @ (640, 500)`; a linear's weight w (N, K) is the factor w^T (K, N)."""
        a, b = (self._factor_text(i) for i in _FACTORS[self.op])
        return f"{self.op.split('::')[1]} {a} @ {b}"

    def _factor_text(self, index: int) -> str:
        shape, stride = self.shapes[index], self.strides[index]
        assert shape is not None and stride is not None
        if self.op == _WEIGHT_GRAD and index == 0:  # d_y (M, N) is the factor d_y^T (N, M)
            return f"{tuple(shape[::-1])}^T"
        if self.op == "mkldnn::_linear_pointwise" and index == 1:  # the factor is w^T
            shape, stride = shape[::-1], stride[::-1]
        column_major = len(shape) >= 2 and len(stride) > 0 and stride[-1] != 1
        return f"{tuple(shape)}{'^T' if column_major else ''}"

    @property
    def flops(self) -> int:
        """2 x multiply-adds: (.., M, K) @ (.., K, N), or x (M.., K) @ w^T for w (N, K)."""
        a, b = (self.shapes[i] for i in _FACTORS[self.op])
        assert a is not None and b is not None
        if self.op == "mkldnn::_linear_pointwise":
            return 2 * math.prod(a) * b[0]
        if self.op == _WEIGHT_GRAD:  # (M, N)^T @ (M, K)
            return 2 * a[0] * a[1] * b[1]
        batch = math.prod(a[:-2])
        return 2 * batch * a[-2] * a[-1] * b[-1]


def _tensor_inputs(event) -> tuple[tuple, tuple, tuple]:
    """(shapes, strides, dtypes) of an event's inputs, None where an input is not a tensor."""
    shapes, strides, dtypes = [], [], []
    for shape, stride, dtype in zip(
        event.input_shapes, event.structured_input_strides, event.input_dtypes, strict=False
    ):
        tensor = dtype in _DTYPES and isinstance(shape, list) and len(shape) > 0
        shapes.append(tuple(shape) if tensor else None)
        strides.append(tuple(stride) if tensor else None)
        dtypes.append(_DTYPES[dtype] if tensor else None)
    return tuple(shapes), tuple(strides), tuple(dtypes)


def record(fn: Callable[[], object]) -> list[Product]:
    """Run `fn` once and return the matrix products it ran, in order."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    products = []
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        if event.name not in PRODUCTS:
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None and not nested:  # a product inside another is not its own
            nested, parent = parent.name in PRODUCTS, parent.cpu_parent
        if not nested:
            scalars = tuple(
                value if isinstance(value, bool | int | float) else None
                for value in event.concrete_inputs
            )
            products.append(Product(event.name, *_tensor_inputs(event), scalars))
    return products


class Replay:
    """The recorded products, runnable back to back: `replay()` runs them all once."""

    def __init__(self, products: list[Product], seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        operands: dict[tuple, torch.Tensor] = {}

        def operand(shape, stride, dtype) -> torch.Tensor | None:
            if shape is None:
                return None
            key = (shape, stride, dtype)
            if key in operands:
                return operands[key]
            if not stride:  # a oneDNN tensor
                operands[key] = torch.randn(shape, generator=generator).to(dtype).to_mkldnn()
            else:  # random storage viewed with the recorded strides (which may overlap, as an
                # expanded bias does)
                extent = 1 + sum((n - 1) * step for n, step in zip(shape, stride, strict=True))
                storage = torch.randn(extent, generator=generator).to(dtype)
                operands[key] = storage.as_strided(shape, stride)
            return operands[key]

        self.products = products
        self.flops = sum(p.flops for p in products)
        self.calls = []
        for p in products:
            layouts = zip(p.shapes, p.strides, p.dtypes, strict=True)
            self.calls.append(self._call(p, [operand(*layout) for layout in layouts]))

    @staticmethod
    def _call(product: Product, inputs: list[torch.Tensor | None]) -> Callable[[], object]:
        """The product as a call on `inputs` (the op's own argument order)."""
        if product.op == "mkldnn::_linear_pointwise":
            x, w, b = inputs[:3]
            linear = torch.ops.mkldnn._linear_pointwise
            return lambda: linear(x, w, b, "none", [], "")
        if product.op == _WEIGHT_GRAD:
            d_y, x, like = inputs[:3]
            with_bias = bool(product.scalars[3]) if len(product.scalars) > 3 else True
            weight_grad = torch.ops.aten.mkldnn_linear_backward_weights
            return lambda: weight_grad(d_y, x, like, with_bias)
        op = {"aten::mm": torch.mm, "aten::bmm": torch.bmm}.get(product.op)
        if op is not None:
            a, b = inputs[:2]
            return lambda: op(a, b)
        op = torch.addmm if product.op == "aten::addmm" else torch.baddbmm
        c, a, b = inputs[:3]
        return lambda: op(c, a, b)

    def __call__(self) -> None:
        for call in self.calls:
            call()


@dataclass(frozen=True)
class GroupTime:
    """The products of one layout (`Product.label`): how many, their median seconds together."""

    label: str
    count: int
    seconds: float
    gflops_per_s: float


def time_groups(replay: Replay, repeats: int) -> list[GroupTime]:
    """Each layout's products timed together (median of `repeats` interleaved rounds over all
    groups), slowest group first: where the replay's time goes."""
    from dialoglab.bench.common import time_interleaved

    groups: dict[str, list[int]] = {}
    for index, product in enumerate(replay.products):
        groups.setdefault(product.label, []).append(index)

    def run_group(indices: list[int]) -> None:
        for index in indices:
            replay.calls[index]()

    times = time_interleaved(
        {label: functools.partial(run_group, indices) for label, indices in groups.items()},
        repeats=repeats,
        warmup=0,
    )
    found = []
    for label, indices in groups.items():
        seconds = statistics.median(times[label])
        flops = sum(replay.products[index].flops for index in indices)
        found.append(GroupTime(label, len(indices), seconds, flops / seconds / 1e9))
    return sorted(found, key=lambda group: -group.seconds)
