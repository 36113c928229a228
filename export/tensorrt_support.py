"""Static check: can TensorRT's ONNX parser take this graph?

The operator list is the supported ("Y") rows of onnx-tensorrt's operator support matrix,
``docs/operators.md`` on its ``release/10.13`` branch (TensorRT 10.13), restricted to
operators that still exist in ONNX opset 20; the opset range is the one TensorRT 10.0
documents (9 to 20; later 10.x and 11.x releases extend the top). Also rejected: random operators (graphs must be deterministic) and any dynamic
axis other than the batch axis, which is what one optimisation profile can cover.
"""

from __future__ import annotations

__all__ = ["SUPPORTED_OPS", "OPSET_RANGE", "SUPPORTED_DTYPES", "tensorrt_problems"]

OPSET_RANGE = (9, 20)

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU Hardmax HardSigmoid HardSwish Identity If
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop
LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul
Neg NonZero Not OneHot Or Pad Pow PRelu QuantizeLinear Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize ReverseSequence RNN RoiAlign Round Scan ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Where Xor
""".split())

#: ONNX TensorProto element types TensorRT takes (DOUBLE only with a lossy cast, so not here)
SUPPORTED_DTYPES = {1: "FLOAT", 10: "FLOAT16", 16: "BFLOAT16", 6: "INT32", 7: "INT64", 3: "INT8",
                    2: "UINT8", 9: "BOOL"}


def _dtype_problems(graph, where: str) -> list[str]:
    problems = []
    for value in [*graph.input, *graph.output, *graph.value_info]:
        elem = value.type.tensor_type.elem_type
        if elem and elem not in SUPPORTED_DTYPES:
            problems.append(f"{where}: tensor {value.name!r} has element type {elem} that TensorRT does not take")
    for init in graph.initializer:
        if init.data_type not in SUPPORTED_DTYPES:
            problems.append(f"{where}: initializer {init.name!r} has element type {init.data_type}")
    return problems


def _shape_problems(graph, where: str) -> list[str]:
    problems = []
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            problems.append(f"{where}: {value.name!r} has no dynamic batch axis")
        for i, dim in enumerate(dims[1:], start=1):
            if not dim.dim_value:
                problems.append(f"{where}: {value.name!r} axis {i} is dynamic; only the batch axis may be")
    return problems


def tensorrt_problems(model, name: str = "graph") -> list[str]:
    """Every reason TensorRT's ONNX parser would reject ``model`` (an onnx ModelProto); [] if none."""
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"{name}: opset {opset} is outside TensorRT's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    nodes = list(model.graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{name}: node {node.name or node.op_type!r} uses custom domain {node.domain!r}")
        elif node.op_type.startswith("Random") or node.op_type in ("Bernoulli", "Multinomial"):
            problems.append(f"{name}: random operator {node.op_type} (graphs must be deterministic)")
        elif node.op_type not in SUPPORTED_OPS:
            problems.append(f"{name}: operator {node.op_type} is not supported by TensorRT's ONNX parser")
    problems += _dtype_problems(model.graph, name)
    problems += _shape_problems(model.graph, name)
    return sorted(set(problems))
