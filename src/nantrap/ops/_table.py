"""The op table. One ``op(...)`` call per neutral op; nothing else needs editing.

Names per framework (keys of ``FRAMEWORKS``):
  torch   resolved Python names: ``torch.log``, ``Tensor.log`` (method), ``torch.nn.functional.*``
  aten    ATen packets as seen by a TorchDispatchMode / torch.export (``aten.log``)
  tf      ``tf.math.log``, ``tf.log`` (1.x), ``tf.nn.softmax``...
  tf_op   TensorFlow graph op types (``Log``, ``Softmax``)
  keras   ``keras.ops.*``, ``keras.activations.*``
  onnx    ONNX op types
  jax / numpy   ``jax.numpy.*``, ``jax.nn.*``, ``numpy.*``
"""

from __future__ import annotations

import math

from nantrap.ops._model import Domain, Kind, Op
from nantrap.ops._registry import register

INF = math.inf
POSITIVE = Domain(lo=0.0, lo_open=True)
NONNEGATIVE = Domain(lo=0.0)
NONZERO = Domain(nonzero=True)
UNIT_CLOSED = Domain(lo=-1.0, hi=1.0)
UNIT_OPEN = Domain(lo=-1.0, hi=1.0, lo_open=True, hi_open=True)


def op(
    name: str,
    kind: Kind,
    summary: str,
    *,
    torch=(),
    aten=(),
    tf=(),
    tf_op=(),
    keras=(),
    onnx=(),
    jax=(),
    numpy=(),
    **fields,
) -> Op:
    names = {
        "torch": torch,
        "aten": aten,
        "tf": tf,
        "tf_op": tf_op,
        "keras": keras,
        "onnx": onnx,
        "jax": jax,
        "numpy": numpy,
    }
    return register(
        Op(name, kind, summary, names={k: tuple(v) for k, v in names.items() if v}, **fields)
    )


def _np(*names: str) -> dict:
    """The same function name under jax.numpy and numpy."""
    return {
        "jax": tuple(f"jax.numpy.{n}" for n in names),
        "numpy": tuple(f"numpy.{n}" for n in names),
    }


E, B, A, R = Kind.ELEMENTWISE, Kind.BINARY, Kind.ACTIVATION, Kind.REDUCTION

# --- logarithms -------------------------------------------------------------------------
op(
    "log",
    E,
    "natural logarithm",
    torch=("torch.log", "Tensor.log", "Tensor.log_", "torch.special.log"),
    aten=("aten.log",),
    tf=("tf.math.log", "tf.log"),
    tf_op=("Log",),
    keras=("keras.ops.log",),
    onnx=("Log",),
    **_np("log"),
    domain=POSITIVE,
    grad_hazard="slope 1/x is infinite at x = 0",
    safe_alternative="log_softmax / logsigmoid / a loss on logits; or design the input > 0",
    trap="NT103",
)
op(
    "log1p",
    E,
    "log(1 + x)",
    torch=("torch.log1p", "Tensor.log1p", "torch.special.log1p"),
    aten=("aten.log1p",),
    tf=("tf.math.log1p", "tf.log1p"),
    tf_op=("Log1p",),
    keras=("keras.ops.log1p",),
    **_np("log1p"),
    domain=Domain(lo=-1.0, lo_open=True),
    grad_hazard="slope 1/(1+x) is infinite at x = -1",
    trap="NT103",
)
op(
    "log2",
    E,
    "base-2 logarithm",
    torch=("torch.log2", "Tensor.log2"),
    aten=("aten.log2",),
    keras=("keras.ops.log2",),
    **_np("log2"),
    domain=POSITIVE,
    grad_hazard="infinite slope at x = 0",
    trap="NT103",
)
op(
    "log10",
    E,
    "base-10 logarithm",
    torch=("torch.log10", "Tensor.log10"),
    aten=("aten.log10",),
    keras=("keras.ops.log10",),
    **_np("log10"),
    domain=POSITIVE,
    grad_hazard="infinite slope at x = 0",
    trap="NT103",
)

# --- division, roots, powers -------------------------------------------------------------
op(
    "div",
    B,
    "x / y",
    torch=(
        "torch.div",
        "torch.true_divide",
        "Tensor.div",
        "Tensor.div_",
        "Tensor.__truediv__",
        "torch.divide",
    ),
    aten=("aten.div",),
    tf=("tf.math.divide", "tf.divide", "tf.div", "tf.math.truediv", "tf.truediv", "tf.realdiv"),
    tf_op=("RealDiv", "Div", "TrueDiv"),
    keras=("keras.ops.divide", "keras.ops.true_divide"),
    onnx=("Div",),
    **_np("divide", "true_divide"),
    domain=Domain(nonzero=True, arg=1),
    grad_hazard="slope -x/y**2 is infinite at y = 0",
    safe_alternative="divide by (y + eps) with an eps the dtype keeps, or clamp_min(|y|, eps)",
    trap="NT110",
)
op(
    "reciprocal",
    E,
    "1 / x",
    torch=("torch.reciprocal", "Tensor.reciprocal"),
    aten=("aten.reciprocal",),
    tf=("tf.math.reciprocal", "tf.reciprocal"),
    tf_op=("Reciprocal", "Inv"),
    keras=("keras.ops.reciprocal",),
    onnx=("Reciprocal",),
    **_np("reciprocal"),
    domain=NONZERO,
    grad_hazard="infinite slope at x = 0",
    trap="NT110",
)
op(
    "sqrt",
    E,
    "square root",
    torch=("torch.sqrt", "Tensor.sqrt", "Tensor.sqrt_"),
    aten=("aten.sqrt",),
    tf=("tf.math.sqrt", "tf.sqrt"),
    tf_op=("Sqrt",),
    keras=("keras.ops.sqrt",),
    onnx=("Sqrt",),
    **_np("sqrt"),
    domain=NONNEGATIVE,
    grad_hazard="slope 1/(2*sqrt(x)) is infinite at x = 0",
    output_range=(0.0, INF),
    safe_alternative="sqrt(x + eps) or sqrt(clamp_min(x, eps))",
    trap="NT112",
)
op(
    "rsqrt",
    E,
    "1 / sqrt(x)",
    torch=("torch.rsqrt", "Tensor.rsqrt"),
    aten=("aten.rsqrt",),
    tf=("tf.math.rsqrt", "tf.rsqrt"),
    tf_op=("Rsqrt",),
    keras=("keras.ops.rsqrt",),
    domain=POSITIVE,
    grad_hazard="infinite at x = 0",
    output_range=(0.0, INF),
    safe_alternative="rsqrt(x + eps) with an eps the dtype keeps",
    trap="NT112",
)
op(
    "pow",
    B,
    "x ** p",
    torch=("torch.pow", "Tensor.pow", "Tensor.__pow__", "torch.float_power"),
    aten=("aten.pow", "aten.float_power"),
    tf=("tf.math.pow", "tf.pow"),
    tf_op=("Pow",),
    keras=("keras.ops.power",),
    onnx=("Pow",),
    **_np("power", "float_power"),
    grad_hazard="for 0 < p < 1 the slope p*x**(p-1) is infinite at x = 0",
    overflows=True,
    safe_alternative="x * x for p = 2; clamp the base >= 0 for fractional p",
    trap="NT115",
)
op(
    "square",
    E,
    "x * x",
    torch=("torch.square", "Tensor.square"),
    aten=("aten.square",),
    tf=("tf.math.square", "tf.square"),
    tf_op=("Square",),
    keras=("keras.ops.square",),
    **_np("square"),
    output_range=(0.0, INF),
    overflows=True,
    trap="NT116",
)

# --- exponentials -----------------------------------------------------------------------
op(
    "exp",
    E,
    "e ** x",
    torch=("torch.exp", "Tensor.exp", "Tensor.exp_"),
    aten=("aten.exp",),
    tf=("tf.math.exp", "tf.exp"),
    tf_op=("Exp",),
    keras=("keras.ops.exp",),
    onnx=("Exp",),
    **_np("exp"),
    output_range=(0.0, INF),
    saturates=True,
    overflows=True,
    safe_alternative="logsumexp / softplus / log_softmax, or clamp x before exp",
    trap="NT113",
)
op(
    "expm1",
    E,
    "e ** x - 1",
    torch=("torch.expm1", "Tensor.expm1", "torch.special.expm1"),
    aten=("aten.expm1",),
    tf=("tf.math.expm1", "tf.expm1"),
    tf_op=("Expm1",),
    keras=("keras.ops.expm1",),
    **_np("expm1"),
    output_range=(-1.0, INF),
    overflows=True,
    trap="NT113",
)
op(
    "cosh",
    E,
    "hyperbolic cosine",
    torch=("torch.cosh", "Tensor.cosh"),
    aten=("aten.cosh",),
    tf=("tf.math.cosh", "tf.cosh"),
    tf_op=("Cosh",),
    keras=("keras.ops.cosh",),
    onnx=("Cosh",),
    **_np("cosh"),
    output_range=(1.0, INF),
    overflows=True,
    trap="NT113",
)
op(
    "sinh",
    E,
    "hyperbolic sine",
    torch=("torch.sinh", "Tensor.sinh"),
    aten=("aten.sinh",),
    tf=("tf.math.sinh", "tf.sinh"),
    tf_op=("Sinh",),
    keras=("keras.ops.sinh",),
    onnx=("Sinh",),
    **_np("sinh"),
    overflows=True,
    trap="NT113",
)

# --- inverse trigonometric --------------------------------------------------------------
op(
    "acos",
    E,
    "arc cosine",
    torch=("torch.acos", "torch.arccos", "Tensor.acos", "Tensor.arccos"),
    aten=("aten.acos",),
    tf=("tf.math.acos", "tf.acos"),
    tf_op=("Acos",),
    keras=("keras.ops.arccos",),
    onnx=("Acos",),
    **_np("arccos"),
    domain=UNIT_CLOSED,
    grad_hazard="slope -1/sqrt(1-x**2) is infinite at x = ±1",
    output_range=(0.0, math.pi),
    safe_alternative="acos(clamp(x, -1 + eps, 1 - eps)) or atan2 of the two components",
    trap="NT114",
)
op(
    "asin",
    E,
    "arc sine",
    torch=("torch.asin", "torch.arcsin", "Tensor.asin", "Tensor.arcsin"),
    aten=("aten.asin",),
    tf=("tf.math.asin", "tf.asin"),
    tf_op=("Asin",),
    keras=("keras.ops.arcsin",),
    onnx=("Asin",),
    **_np("arcsin"),
    domain=UNIT_CLOSED,
    grad_hazard="slope 1/sqrt(1-x**2) is infinite at x = ±1",
    output_range=(-math.pi / 2, math.pi / 2),
    trap="NT114",
)
op(
    "atanh",
    E,
    "inverse hyperbolic tangent",
    torch=("torch.atanh", "torch.arctanh", "Tensor.atanh", "Tensor.arctanh"),
    aten=("aten.atanh",),
    tf=("tf.math.atanh", "tf.atanh"),
    tf_op=("Atanh",),
    keras=("keras.ops.arctanh",),
    onnx=("Atanh",),
    **_np("arctanh"),
    domain=UNIT_OPEN,
    grad_hazard="slope 1/(1-x**2) is infinite at x = ±1",
    trap="NT114",
)

# --- activations ------------------------------------------------------------------------
op(
    "sigmoid",
    A,
    "1 / (1 + e ** -x)",
    torch=(
        "torch.sigmoid",
        "Tensor.sigmoid",
        "torch.nn.functional.sigmoid",
        "torch.special.expit",
        "torch.nn.Sigmoid",
    ),
    aten=("aten.sigmoid",),
    tf=("tf.math.sigmoid", "tf.sigmoid", "tf.nn.sigmoid"),
    tf_op=("Sigmoid",),
    keras=("keras.ops.sigmoid", "keras.activations.sigmoid"),
    onnx=("Sigmoid",),
    jax=("jax.nn.sigmoid",),
    output_range=(0.0, 1.0),
    saturates=True,
    safe_alternative="keep logits: logsigmoid / binary_cross_entropy_with_logits",
    trap="NT203",
)
op(
    "logsigmoid",
    A,
    "log(sigmoid(x)), computed stably",
    torch=("torch.nn.functional.logsigmoid", "torch.nn.LogSigmoid"),
    aten=("aten.log_sigmoid_forward", "aten.log_sigmoid"),
    tf=("tf.math.log_sigmoid",),
    tf_op=("LogSigmoid",),
    keras=("keras.ops.log_sigmoid",),
    jax=("jax.nn.log_sigmoid",),
    output_range=(-INF, 0.0),
)
op(
    "tanh",
    A,
    "hyperbolic tangent",
    torch=("torch.tanh", "Tensor.tanh", "torch.nn.functional.tanh", "torch.nn.Tanh"),
    aten=("aten.tanh",),
    tf=("tf.math.tanh", "tf.tanh", "tf.nn.tanh"),
    tf_op=("Tanh",),
    keras=("keras.ops.tanh", "keras.activations.tanh"),
    onnx=("Tanh",),
    **_np("tanh"),
    output_range=(-1.0, 1.0),
    saturates=True,
    trap="NT203",
)
op(
    "softmax",
    A,
    "exp(x) / sum(exp(x)) along a dim",
    torch=(
        "torch.softmax",
        "Tensor.softmax",
        "torch.nn.functional.softmax",
        "torch.special.softmax",
        "torch.nn.Softmax",
    ),
    aten=("aten._softmax", "aten.softmax"),
    tf=("tf.nn.softmax", "tf.math.softmax"),
    tf_op=("Softmax",),
    keras=("keras.ops.softmax", "keras.activations.softmax"),
    onnx=("Softmax",),
    jax=("jax.nn.softmax",),
    output_range=(0.0, 1.0),
    saturates=True,
    safe_alternative="log_softmax, or a loss on logits (cross_entropy)",
    trap="NT204",
)
op(
    "log_softmax",
    A,
    "log(softmax(x)), computed stably",
    torch=(
        "torch.log_softmax",
        "Tensor.log_softmax",
        "torch.nn.functional.log_softmax",
        "torch.special.log_softmax",
        "torch.nn.LogSoftmax",
    ),
    aten=("aten._log_softmax", "aten.log_softmax"),
    tf=("tf.nn.log_softmax", "tf.math.log_softmax"),
    tf_op=("LogSoftmax",),
    keras=("keras.ops.log_softmax",),
    onnx=("LogSoftmax",),
    jax=("jax.nn.log_softmax",),
    output_range=(-INF, 0.0),
)
op(
    "relu",
    A,
    "max(x, 0)",
    torch=("torch.relu", "Tensor.relu", "torch.nn.functional.relu", "torch.nn.ReLU"),
    aten=("aten.relu",),
    tf=("tf.nn.relu",),
    tf_op=("Relu",),
    keras=("keras.ops.relu", "keras.activations.relu"),
    onnx=("Relu",),
    jax=("jax.nn.relu",),
    output_range=(0.0, INF),
)
op(
    "gelu",
    A,
    "x * Phi(x)",
    torch=("torch.nn.functional.gelu", "torch.nn.GELU"),
    aten=("aten.gelu",),
    tf=("tf.nn.gelu",),
    keras=("keras.ops.gelu", "keras.activations.gelu"),
    onnx=("Gelu",),
    jax=("jax.nn.gelu",),
    output_range=(-0.17, INF),
)
op(
    "softplus",
    A,
    "log(1 + e ** x), computed stably",
    torch=("torch.nn.functional.softplus", "torch.nn.Softplus"),
    aten=("aten.softplus",),
    tf=("tf.math.softplus", "tf.nn.softplus"),
    tf_op=("Softplus",),
    keras=("keras.ops.softplus", "keras.activations.softplus"),
    onnx=("Softplus",),
    jax=("jax.nn.softplus",),
    output_range=(0.0, INF),
)
op(
    "logsumexp",
    R,
    "log(sum(exp(x))), computed stably",
    torch=("torch.logsumexp", "Tensor.logsumexp", "torch.special.logsumexp"),
    aten=("aten.logsumexp",),
    tf=("tf.math.reduce_logsumexp", "tf.reduce_logsumexp"),
    keras=("keras.ops.logsumexp",),
    onnx=("ReduceLogSumExp",),
    jax=("jax.nn.logsumexp", "jax.scipy.special.logsumexp"),
)

# --- clipping ---------------------------------------------------------------------------
op(
    "clip",
    E,
    "clamp x into [lo, hi]",
    torch=(
        "torch.clamp",
        "torch.clip",
        "Tensor.clamp",
        "Tensor.clip",
        "Tensor.clamp_",
        "Tensor.clip_",
        "torch.clamp_min",
        "torch.clamp_max",
        "Tensor.clamp_min",
        "Tensor.clamp_max",
    ),
    aten=("aten.clamp", "aten.clip", "aten.clamp_min", "aten.clamp_max"),
    tf=("tf.clip_by_value", "tf.clip_ops.clip_by_value"),
    tf_op=("ClipByValue",),
    keras=("keras.ops.clip",),
    onnx=("Clip",),
    **_np("clip"),
    blocks_gradient=True,
    grad_hazard="gradient is exactly 0 where x is clipped (outside [lo, hi])",
    safe_alternative="compute the loss from logits instead of clipping probabilities",
    trap="NT102",
)

# --- reductions ---------------------------------------------------------------------------
op(
    "sum",
    R,
    "sum along dims",
    torch=("torch.sum", "Tensor.sum", "torch.nansum"),
    aten=("aten.sum", "aten.nansum"),
    tf=("tf.math.reduce_sum", "tf.reduce_sum"),
    tf_op=("Sum",),
    keras=("keras.ops.sum",),
    onnx=("ReduceSum",),
    **_np("sum"),
    overflows=True,
    trap="NT116",
)
op(
    "mean",
    R,
    "mean along dims",
    torch=("torch.mean", "Tensor.mean", "torch.nanmean"),
    aten=("aten.mean", "aten.nanmean"),
    tf=("tf.math.reduce_mean", "tf.reduce_mean"),
    tf_op=("Mean",),
    keras=("keras.ops.mean",),
    onnx=("ReduceMean",),
    **_np("mean"),
)
op(
    "norm",
    R,
    "p-norm (sqrt of a sum of squares for p = 2)",
    torch=(
        "torch.norm",
        "Tensor.norm",
        "torch.linalg.norm",
        "torch.linalg.vector_norm",
        "torch.nn.functional.normalize",
    ),
    aten=("aten.linalg_vector_norm", "aten.norm"),
    tf=("tf.norm", "tf.linalg.norm", "tf.math.l2_normalize", "tf.nn.l2_normalize"),
    keras=("keras.ops.norm",),
    onnx=("ReduceL2",),
    jax=("jax.numpy.linalg.norm",),
    numpy=("numpy.linalg.norm",),
    output_range=(0.0, INF),
    grad_hazard="gradient x/||x|| is 0/0 = NaN at x = 0",
    overflows=True,
    safe_alternative="sqrt(sum(x**2) + eps), or normalize(x, eps=...) that guards the divisor",
    trap="NT111",
)
op(
    "std",
    R,
    "standard deviation",
    torch=("torch.std", "Tensor.std"),
    aten=("aten.std",),
    tf=("tf.math.reduce_std", "tf.reduce_std"),
    keras=("keras.ops.std",),
    **_np("std"),
    output_range=(0.0, INF),
    grad_hazard="gradient is NaN where the std is 0 (sqrt at 0)",
    trap="NT111",
)
op(
    "var",
    R,
    "variance",
    torch=("torch.var", "Tensor.var"),
    aten=("aten.var",),
    tf=("tf.math.reduce_variance", "tf.reduce_variance"),
    keras=("keras.ops.var",),
    **_np("var"),
    output_range=(0.0, INF),
)
op(
    "amax",
    R,
    "maximum along dims",
    torch=("torch.amax", "Tensor.amax", "torch.max", "Tensor.max"),
    aten=("aten.amax", "aten.max"),
    tf=("tf.math.reduce_max", "tf.reduce_max"),
    tf_op=("Max",),
    keras=("keras.ops.max",),
    onnx=("ReduceMax",),
    **_np("max", "amax"),
)

# --- linear algebra ---------------------------------------------------------------------
op(
    "matmul",
    Kind.LINEAR,
    "matrix product",
    torch=(
        "torch.matmul",
        "Tensor.matmul",
        "Tensor.__matmul__",
        "torch.mm",
        "torch.bmm",
        "torch.einsum",
    ),
    aten=("aten.mm", "aten.bmm", "aten.matmul", "aten.addmm", "aten.baddbmm"),
    tf=("tf.linalg.matmul", "tf.matmul", "tf.einsum"),
    tf_op=("MatMul", "BatchMatMulV2", "BatchMatMulV3"),
    keras=("keras.ops.matmul", "keras.ops.einsum"),
    onnx=("MatMul", "Gemm"),
    **_np("matmul", "dot", "einsum"),
    overflows=True,
    trap="NT116",
)
op(
    "linear",
    Kind.LINEAR,
    "x @ W.T + b",
    torch=("torch.nn.functional.linear", "torch.nn.Linear"),
    aten=("aten.linear",),
    keras=("keras.layers.Dense",),
    overflows=True,
    trap="NT116",
)
op(
    "conv",
    Kind.LINEAR,
    "convolution",
    torch=(
        "torch.nn.functional.conv1d",
        "torch.nn.functional.conv2d",
        "torch.nn.functional.conv3d",
        "torch.nn.Conv1d",
        "torch.nn.Conv2d",
        "torch.nn.Conv3d",
    ),
    aten=("aten.convolution", "aten.conv2d", "aten.conv1d", "aten.conv3d", "aten._convolution"),
    tf=("tf.nn.conv2d", "tf.nn.conv1d"),
    tf_op=("Conv2D", "Conv1D", "Conv3D"),
    keras=("keras.layers.Conv2D", "keras.layers.Conv1D"),
    onnx=("Conv",),
    overflows=True,
    trap="NT116",
)

# --- arithmetic ---------------------------------------------------------------------------
op(
    "add",
    B,
    "x + y",
    torch=("torch.add", "Tensor.add", "Tensor.__add__"),
    aten=("aten.add",),
    tf=("tf.math.add", "tf.add"),
    tf_op=("Add", "AddV2"),
    keras=("keras.ops.add",),
    onnx=("Add",),
    **_np("add"),
)
op(
    "sub",
    B,
    "x - y",
    torch=("torch.sub", "torch.subtract", "Tensor.sub", "Tensor.__sub__"),
    aten=("aten.sub", "aten.rsub"),
    tf=("tf.math.subtract", "tf.subtract"),
    tf_op=("Sub",),
    keras=("keras.ops.subtract",),
    onnx=("Sub",),
    **_np("subtract"),
)
op(
    "mul",
    B,
    "x * y",
    torch=("torch.mul", "torch.multiply", "Tensor.mul", "Tensor.__mul__"),
    aten=("aten.mul",),
    tf=("tf.math.multiply", "tf.multiply"),
    tf_op=("Mul",),
    keras=("keras.ops.multiply",),
    onnx=("Mul",),
    **_np("multiply"),
)
op(
    "neg",
    E,
    "-x",
    torch=("torch.neg", "torch.negative", "Tensor.neg", "Tensor.__neg__"),
    aten=("aten.neg",),
    tf=("tf.math.negative", "tf.negative"),
    tf_op=("Neg",),
    keras=("keras.ops.negative",),
    onnx=("Neg",),
    **_np("negative"),
)
op(
    "abs",
    E,
    "|x|",
    torch=("torch.abs", "Tensor.abs"),
    aten=("aten.abs",),
    tf=("tf.math.abs", "tf.abs"),
    tf_op=("Abs",),
    keras=("keras.ops.abs",),
    onnx=("Abs",),
    **_np("abs"),
    output_range=(0.0, INF),
)

# --- normalization ------------------------------------------------------------------------
op(
    "layer_norm",
    Kind.NORMALIZATION,
    "(x - mean) / sqrt(var + eps) * w + b",
    torch=("torch.nn.functional.layer_norm", "torch.nn.LayerNorm"),
    aten=("aten.layer_norm", "aten.native_layer_norm"),
    keras=("keras.layers.LayerNormalization",),
    onnx=("LayerNormalization",),
    grad_hazard="eps below the dtype's resolution leaves 1/sqrt(var) at var = 0",
)
op(
    "batch_norm",
    Kind.NORMALIZATION,
    "(x - running_mean) / sqrt(running_var + eps) * w + b",
    torch=("torch.nn.functional.batch_norm", "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d"),
    aten=(
        "aten.batch_norm",
        "aten.native_batch_norm",
        "aten._native_batch_norm_legit",
        "aten._native_batch_norm_legit_no_training",
    ),
    tf_op=("FusedBatchNormV3",),
    keras=("keras.layers.BatchNormalization",),
    onnx=("BatchNormalization",),
)

# --- losses -----------------------------------------------------------------------------
op(
    "cross_entropy",
    Kind.LOSS,
    "softmax cross-entropy on logits (stable)",
    torch=("torch.nn.functional.cross_entropy", "torch.nn.CrossEntropyLoss"),
    aten=("aten.cross_entropy_loss",),
    tf=(
        "tf.nn.softmax_cross_entropy_with_logits",
        "tf.nn.softmax_cross_entropy_with_logits_v2",
        "tf.nn.sparse_softmax_cross_entropy_with_logits",
    ),
    tf_op=("SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits"),
    keras=("keras.losses.categorical_crossentropy", "keras.losses.sparse_categorical_crossentropy"),
    output_range=(0.0, INF),
)
op(
    "nll_loss",
    Kind.LOSS,
    "negative log-likelihood of log-probabilities",
    torch=("torch.nn.functional.nll_loss", "torch.nn.NLLLoss"),
    aten=("aten.nll_loss_forward", "aten.nll_loss", "aten.nll_loss_nd", "aten.nll_loss2d_forward"),
)
op(
    "binary_cross_entropy",
    Kind.LOSS,
    "-(y log p + (1-y) log(1-p)) on probabilities",
    torch=("torch.nn.functional.binary_cross_entropy", "torch.nn.BCELoss"),
    aten=("aten.binary_cross_entropy",),
    keras=("keras.losses.binary_crossentropy",),
    domain=Domain(lo=0.0, hi=1.0),
    safe_alternative="binary_cross_entropy_with_logits on the logits",
    trap="NT106",
)
op(
    "binary_cross_entropy_with_logits",
    Kind.LOSS,
    "sigmoid + BCE on logits (stable)",
    torch=("torch.nn.functional.binary_cross_entropy_with_logits", "torch.nn.BCEWithLogitsLoss"),
    aten=("aten.binary_cross_entropy_with_logits",),
    tf=("tf.nn.sigmoid_cross_entropy_with_logits",),
    output_range=(0.0, INF),
)

# --- added by lint: element-wise max/min, counts, cosine similarity ------------------------
op(
    "maximum",
    B,
    "element-wise max(x, y)",
    torch=("torch.maximum", "torch.fmax", "Tensor.maximum"),
    aten=("aten.maximum", "aten.fmax"),
    tf=("tf.math.maximum", "tf.maximum"),
    tf_op=("Maximum",),
    keras=("keras.ops.maximum",),
    onnx=("Max",),
    **_np("maximum", "fmax"),
    blocks_gradient=True,
    grad_hazard="gradient is 0 for the smaller operand (max(p, eps) blocks p below eps)",
    trap="NT102",
)
op(
    "minimum",
    B,
    "element-wise min(x, y)",
    torch=("torch.minimum", "torch.fmin", "Tensor.minimum"),
    aten=("aten.minimum", "aten.fmin"),
    tf=("tf.math.minimum", "tf.minimum"),
    tf_op=("Minimum",),
    keras=("keras.ops.minimum",),
    onnx=("Min",),
    **_np("minimum", "fmin"),
    blocks_gradient=True,
)
op(
    "amin",
    R,
    "minimum along dims",
    torch=("torch.amin", "Tensor.amin", "torch.min", "Tensor.min"),
    aten=("aten.amin", "aten.min"),
    tf=("tf.math.reduce_min", "tf.reduce_min"),
    tf_op=("Min",),
    keras=("keras.ops.min",),
    onnx=("ReduceMin",),
    **_np("min", "amin"),
)
op(
    "count_nonzero",
    R,
    "number of non-zero elements",
    torch=("torch.count_nonzero", "Tensor.count_nonzero"),
    aten=("aten.count_nonzero",),
    tf=("tf.math.count_nonzero", "tf.count_nonzero"),
    keras=("keras.ops.count_nonzero",),
    **_np("count_nonzero"),
    output_range=(0.0, INF),
)
op(
    "cosine_similarity",
    Kind.REDUCTION,
    "x . y / (|x| |y|), in [-1, 1] up to rounding",
    torch=(
        "torch.nn.functional.cosine_similarity",
        "torch.cosine_similarity",
        "torch.nn.CosineSimilarity",
    ),
    aten=("aten.cosine_similarity",),
    output_range=(-1.0, 1.0),
)

# --- analyze: ops the range analysis meets in real graphs ----------------------------------
S = Kind.SHAPE
op(
    "reshape",
    S,
    "moves, copies or selects elements without changing their values",
    torch=("torch.reshape", "Tensor.view", "Tensor.reshape", "torch.flatten", "torch.permute"),
    aten=(
        "aten.view",
        "aten.reshape",
        "aten._unsafe_view",
        "aten.flatten",
        "aten.unflatten",
        "aten.permute",
        "aten.transpose",
        "aten.t",
        "aten.unsqueeze",
        "aten.squeeze",
        "aten.expand",
        "aten.expand_as",
        "aten.contiguous",
        "aten.clone",
        "aten.alias",
        "aten.detach",
        "aten.lift_fresh_copy",
        "aten.slice",
        "aten.select",
        "aten.narrow",
        "aten.index_select",
        "aten.gather",
        "aten.index",
        "aten.repeat",
        "aten.roll",
        "aten.flip",
        "aten.split",
        "aten.split_with_sizes",
        "aten.chunk",
        "aten.unbind",
        "aten.dropout",
        "aten.feature_dropout",
        "aten.alpha_dropout",
        "aten.pixel_shuffle",
        "aten.channel_shuffle",
        "aten.movedim",
        "aten.swapaxes",
        "aten.view_as",
        "aten.reshape_as",
        "aten.type_as",
        "aten.identity",
        "aten.broadcast_tensors",
        "aten.broadcast_to",
        "aten.upsample_nearest1d",
        "aten.upsample_nearest2d",
        "aten.upsample_nearest3d",
        "aten.pad",
        "aten.constant_pad_nd",
        "aten.reflection_pad2d",
        "aten.replication_pad2d",
    ),
    tf_op=(
        "Identity",
        "IdentityN",
        "Reshape",
        "Transpose",
        "ExpandDims",
        "Squeeze",
        "StridedSlice",
        "Slice",
        "GatherV2",
        "Tile",
        "Split",
        "SplitV",
        "Unpack",
        "StopGradient",
        "PreventGradient",
        "Snapshot",
        "BroadcastTo",
        "ReverseV2",
        "Gather",
    ),
    onnx=(
        "Identity",
        "Reshape",
        "Flatten",
        "Transpose",
        "Unsqueeze",
        "Squeeze",
        "Expand",
        "Slice",
        "Gather",
        "GatherElements",
        "Split",
        "Tile",
        "Dropout",
        "DepthToSpace",
        "SpaceToDepth",
    ),
)
op(
    "cat",
    S,
    "concatenate or stack tensors",
    torch=("torch.cat", "torch.concat", "torch.stack"),
    aten=("aten.cat", "aten.concat", "aten.stack", "aten.hstack", "aten.vstack"),
    tf=("tf.concat", "tf.stack"),
    tf_op=("ConcatV2", "Concat", "Pack"),
    keras=("keras.ops.concatenate",),
    onnx=("Concat",),
)
op(
    "max_pool",
    S,
    "maximum over windows",
    torch=("torch.nn.functional.max_pool2d", "torch.nn.MaxPool2d"),
    aten=(
        "aten.max_pool1d",
        "aten.max_pool2d",
        "aten.max_pool3d",
        "aten.max_pool2d_with_indices",
        "aten.adaptive_max_pool2d",
    ),
    tf_op=("MaxPool", "MaxPoolV2", "MaxPool3D"),
    keras=("keras.layers.MaxPooling2D",),
    onnx=("MaxPool", "GlobalMaxPool"),
)
op(
    "avg_pool",
    R,
    "mean over windows",
    torch=("torch.nn.functional.avg_pool2d", "torch.nn.functional.adaptive_avg_pool2d"),
    aten=(
        "aten.avg_pool1d",
        "aten.avg_pool2d",
        "aten.avg_pool3d",
        "aten.adaptive_avg_pool1d",
        "aten.adaptive_avg_pool2d",
        "aten._adaptive_avg_pool2d",
        "aten.upsample_bilinear2d",
        "aten.upsample_linear1d",
        "aten.upsample_trilinear3d",
    ),
    tf_op=("AvgPool", "AvgPool3D"),
    keras=("keras.layers.AveragePooling2D", "keras.layers.GlobalAveragePooling2D"),
    onnx=("AveragePool", "GlobalAveragePool"),
)
op(
    "cast",
    E,
    "convert to another dtype (rounds; overflows to inf past the target's max)",
    aten=("aten._to_copy", "aten.to", "aten._to_dtype"),
    tf_op=("Cast",),
    onnx=("Cast",),
    overflows=True,
    trap="NT201",
)
op(
    "full",
    S,
    "a new tensor of constant or range values",
    torch=("torch.full", "torch.zeros", "torch.ones", "torch.arange"),
    aten=(
        "aten.full",
        "aten.zeros",
        "aten.ones",
        "aten.full_like",
        "aten.zeros_like",
        "aten.ones_like",
        "aten.arange",
        "aten.scalar_tensor",
        "aten.empty",
        "aten.new_zeros",
        "aten.new_ones",
        "aten.new_full",
    ),
    tf_op=("Fill", "ZerosLike", "OnesLike", "Range"),
    onnx=("ConstantOfShape", "Range"),
)
op(
    "compare",
    B,
    "elementwise comparison or logic (a boolean result)",
    aten=(
        "aten.eq",
        "aten.ne",
        "aten.lt",
        "aten.le",
        "aten.gt",
        "aten.ge",
        "aten.logical_not",
        "aten.logical_and",
        "aten.logical_or",
        "aten.isnan",
        "aten.isinf",
        "aten.isfinite",
    ),
    tf_op=(
        "Equal",
        "NotEqual",
        "Less",
        "LessEqual",
        "Greater",
        "GreaterEqual",
        "LogicalNot",
        "LogicalAnd",
        "LogicalOr",
    ),
    onnx=("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or"),
    output_range=(0.0, 1.0),
)
op(
    "triangle",
    S,
    "keep the upper/lower triangle, zero the rest",
    aten=("aten.triu", "aten.tril"),
    onnx=("Trilu",),
)
op(
    "where",
    S,
    "choose elementwise: where(cond, a, b); masked_fill(x, mask, value) is where(mask, value, x)",
    torch=("torch.where", "Tensor.masked_fill"),
    aten=("aten.where",),
    tf_op=("Select", "SelectV2"),
    onnx=("Where",),
)
op(
    "masked_fill",
    S,
    "x with the masked elements replaced by a value",
    aten=("aten.masked_fill",),
)
op(
    "erf",
    E,
    "error function",
    torch=("torch.erf", "Tensor.erf", "torch.special.erf"),
    aten=("aten.erf",),
    tf_op=("Erf",),
    onnx=("Erf",),
    output_range=(-1.0, 1.0),
)
op(
    "sin",
    E,
    "sine",
    torch=("torch.sin", "Tensor.sin"),
    aten=("aten.sin",),
    tf_op=("Sin",),
    onnx=("Sin",),
    output_range=(-1.0, 1.0),
)
op(
    "cos",
    E,
    "cosine",
    torch=("torch.cos", "Tensor.cos"),
    aten=("aten.cos",),
    tf_op=("Cos",),
    onnx=("Cos",),
    output_range=(-1.0, 1.0),
)
op(
    "silu",
    A,
    "x * sigmoid(x)",
    torch=("torch.nn.functional.silu", "torch.nn.SiLU"),
    aten=("aten.silu",),
    keras=("keras.activations.silu",),
    output_range=(-0.2785, INF),
)
op(
    "leaky_relu",
    A,
    "x if x > 0 else slope * x",
    torch=("torch.nn.functional.leaky_relu", "torch.nn.LeakyReLU"),
    aten=("aten.leaky_relu",),
    tf_op=("LeakyRelu",),
    onnx=("LeakyRelu",),
)
op(
    "elu",
    A,
    "x if x > 0 else alpha * (exp(x) - 1)",
    torch=("torch.nn.functional.elu", "torch.nn.ELU"),
    aten=("aten.elu",),
    tf_op=("Elu",),
    onnx=("Elu",),
)
op(
    "hardtanh",
    A,
    "clamp to [min_val, max_val] (relu6 is hardtanh(0, 6))",
    torch=("torch.nn.functional.hardtanh", "torch.nn.functional.relu6", "torch.nn.ReLU6"),
    aten=("aten.hardtanh", "aten.relu6"),
    tf_op=("Relu6",),
)
op(
    "bias_add",
    B,
    "x + bias along the channel dim",
    tf=("tf.nn.bias_add",),
    tf_op=("BiasAdd",),
)
op(
    "embedding",
    Kind.LINEAR,
    "rows of a weight table selected by integer ids",
    torch=("torch.nn.functional.embedding", "torch.nn.Embedding"),
    aten=("aten.embedding",),
    keras=("keras.layers.Embedding",),
    tf_op=("ResourceGather",),
)
op(
    "attention",
    Kind.LINEAR,
    "softmax(q @ k.T * scale + mask) @ v, fused",
    torch=("torch.nn.functional.scaled_dot_product_attention",),
    aten=("aten.scaled_dot_product_attention",),
)
op(
    "cumsum",
    R,
    "running sum along a dim",
    torch=("torch.cumsum", "Tensor.cumsum"),
    aten=("aten.cumsum",),
    tf_op=("Cumsum",),
    onnx=("CumSum",),
    overflows=True,
    trap="NT116",
)
op(
    "rms_norm",
    Kind.NORMALIZATION,
    "x / sqrt(mean(x**2) + eps) * w",
    torch=("torch.nn.functional.rms_norm", "torch.nn.RMSNorm"),
    aten=("aten.rms_norm",),
    onnx=("RMSNormalization",),
    grad_hazard="eps below the dtype's resolution leaves 1/sqrt(ms) at ms = 0",
)
op(
    "group_norm",
    Kind.NORMALIZATION,
    "per-group (x - mean) / sqrt(var + eps) * w + b",
    torch=("torch.nn.functional.group_norm", "torch.nn.GroupNorm"),
    aten=("aten.group_norm",),
    onnx=("GroupNormalization", "InstanceNormalization"),
)
op(
    "random",
    S,
    "random values (weight initializers): truncated normal in ±2, uniform in [0, 1)",
    aten=("aten.rand", "aten.rand_like", "aten.randn", "aten.randn_like", "aten.normal"),
    tf_op=("TruncatedNormal", "RandomUniform", "RandomStandardNormal", "StatelessTruncatedNormal"),
    onnx=("RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike"),
)
op(
    "regression_loss",
    Kind.LOSS,
    "mean squared / absolute / smooth-L1 / Huber error",
    torch=(
        "torch.nn.functional.mse_loss",
        "torch.nn.functional.l1_loss",
        "torch.nn.functional.smooth_l1_loss",
        "torch.nn.functional.huber_loss",
    ),
    aten=("aten.mse_loss", "aten.l1_loss", "aten.smooth_l1_loss", "aten.huber_loss"),
    tf_op=("SquaredDifference",),
    output_range=(0.0, INF),
    overflows=True,
    trap="NT116",
)
op(
    "conv_transpose",
    Kind.LINEAR,
    "transposed convolution (each output sums a subset of kernel terms)",
    torch=("torch.nn.functional.conv_transpose2d", "torch.nn.ConvTranspose2d"),
    aten=("aten.conv_transpose1d", "aten.conv_transpose2d", "aten.conv_transpose3d"),
    tf_op=("Conv2DBackpropInput",),
    overflows=True,
    trap="NT116",
)
op(
    "hardswish",
    A,
    "x * relu6(x + 3) / 6",
    torch=("torch.nn.functional.hardswish", "torch.nn.Hardswish"),
    aten=("aten.hardswish",),
    onnx=("HardSwish",),
    output_range=(-0.375, INF),
)
op(
    "hardsigmoid",
    A,
    "relu6(x + 3) / 6",
    torch=("torch.nn.functional.hardsigmoid", "torch.nn.Hardsigmoid"),
    aten=("aten.hardsigmoid",),
    onnx=("HardSigmoid",),
    output_range=(0.0, 1.0),
    saturates=True,
)
op(
    "round",
    E,
    "floor / ceil / round / trunc to an integer value",
    torch=("torch.floor", "torch.ceil", "torch.round", "torch.trunc"),
    aten=("aten.floor", "aten.ceil", "aten.round", "aten.trunc"),
    tf_op=("Floor", "Ceil", "Round", "Rint"),
    onnx=("Floor", "Ceil", "Round"),
)
op(
    "sign",
    E,
    "-1, 0 or 1",
    torch=("torch.sign", "Tensor.sign"),
    aten=("aten.sign", "aten.sgn"),
    tf_op=("Sign",),
    onnx=("Sign",),
    output_range=(-1.0, 1.0),
)
op(
    "argmax",
    R,
    "index of the max/min along a dim",
    torch=("torch.argmax", "torch.argmin"),
    aten=("aten.argmax", "aten.argmin"),
    tf_op=("ArgMax", "ArgMin"),
    onnx=("ArgMax", "ArgMin"),
    output_range=(0.0, INF),
)
op(
    "one_hot",
    S,
    "one-hot encoding: on/off values placed by integer ids",
    torch=("torch.nn.functional.one_hot",),
    aten=("aten.one_hot",),
    tf_op=("OneHot",),
    onnx=("OneHot",),
)
op(
    "l2_loss",
    R,
    "sum(x ** 2) / 2",
    tf=("tf.nn.l2_loss",),
    tf_op=("L2Loss",),
    output_range=(0.0, INF),
    overflows=True,
    trap="NT116",
)

# --- analyze: recurrent layers and depthwise convolution ----------------------------------
op(
    "lstm",
    Kind.LINEAR,
    "LSTM layer: sigmoid gates, cell c_t = f * c_{t-1} + i * g, hidden h_t = o * tanh(c_t)",
    torch=("torch.nn.LSTM",),
    aten=("aten.lstm",),
    keras=("keras.layers.LSTM",),
    onnx=("LSTM",),
    saturates=True,
    overflows=True,
    trap="NT116",
)
op(
    "gru",
    Kind.LINEAR,
    "GRU layer: h_t = (1 - z) * n + z * h_{t-1}, n = tanh(W x + r * (U h + b))",
    torch=("torch.nn.GRU",),
    aten=("aten.gru",),
    keras=("keras.layers.GRU",),
    onnx=("GRU",),
    saturates=True,
)
op(
    "rnn",
    Kind.LINEAR,
    "plain (Elman) RNN layer: h_t = tanh(W x + U h_{t-1} + b), or relu",
    torch=("torch.nn.RNN",),
    aten=("aten.rnn_tanh", "aten.rnn_relu"),
    keras=("keras.layers.SimpleRNN",),
    onnx=("RNN",),
    saturates=True,
    overflows=True,
    trap="NT116",
)
op(
    "depthwise_conv",
    Kind.LINEAR,
    "depthwise convolution: each input channel with its own filters (TF layout)",
    tf=("tf.nn.depthwise_conv2d",),
    tf_op=("DepthwiseConv2dNative",),
    keras=("keras.layers.DepthwiseConv2D",),
    overflows=True,
    trap="NT116",
)
