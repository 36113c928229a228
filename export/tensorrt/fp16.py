"""The FP16 ONNX graph TensorRT builds strongly typed."""

from __future__ import annotations

__all__ = ["fp16_graph"]


def fp16_graph(model):
    """An FP16 copy of an FP32 ONNX graph for strongly typed builds (TensorRT 11).

    MatMul/Gemm run in FP16 (their weights stored as FP16, activations cast in and out);
    everything else — preprocessing, the energy's reductions — stays FP32, and so do the
    graph's inputs and outputs, so callers see the same tensors.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    converted: dict[str, str] = {}
    nodes = []
    for index, node in enumerate(graph.node):
        if node.op_type not in ("MatMul", "Gemm"):
            nodes.append(node)
            continue
        inputs = []
        for name in node.input:
            init = inits.get(name)
            if init is not None and init.data_type == TensorProto.FLOAT:
                if name not in converted:
                    half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}__fp16")
                    graph.initializer.append(half)
                    converted[name] = half.name
                inputs.append(converted[name])
            else:
                cast = f"{name}__fp16_{index}"
                nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT16))
                inputs.append(cast)
        outputs = [f"{o}__fp16" for o in node.output]
        nodes.append(helper.make_node(node.op_type, inputs, outputs, name=node.name, domain=node.domain))
        nodes[-1].attribute.extend(node.attribute)
        for half_out, out in zip(outputs, node.output):
            nodes.append(helper.make_node("Cast", [half_out], [out], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # shapes/types recorded for the fp32 intermediates are stale for the renamed tensors
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model
