"""TensorRT plans from a bundle's ONNX graphs (or, without TensorRT, a build.sh for trtexec).

Written against the TensorRT 10/11 Python API, one module a job:

- ``profile``: the one optimisation profile over the batch axis, and where plans go
  (``tensorrt/<gpu>-sm<cc>-trt<version>/``: plans run only where all three match);
- ``fp16``: the FP16 ONNX graph (MatMul/Gemm in FP16, I/O and the energy's reductions in FP32),
  built as a strongly typed network on TensorRT 10 and 11 alike, so the builder cannot move
  the reductions to FP16 as ``BuilderFlag.FP16`` would let it;
- ``builder``: ``Builder`` + ``OnnxParser``, a workspace memory-pool limit, and a timing cache
  kept beside the plans (a cache made on another device is refused by ``set_timing_cache``,
  which returns False: then a fresh one is used);
- ``script``: ``build.sh`` for ``trtexec`` on a GPU host, when TensorRT or a GPU is missing here;
- ``record``: ``build.json`` beside the plans and the build in the manifest (with the plans'
  sha256), which is where the runtime looks; ``python -m aeserve.export.tensorrt`` is what
  ``build.sh`` runs after ``trtexec``.
"""

from aeserve.export.tensorrt.builder import TensorRTResult, build_tensorrt, network_flags
from aeserve.export.tensorrt.fp16 import fp16_graph
from aeserve.export.tensorrt.profile import Profile, plan_dir_name
from aeserve.export.tensorrt.record import BUILD_JSON, record_plans
from aeserve.export.tensorrt.script import trtexec_script

__all__ = ["Profile", "plan_dir_name", "trtexec_script", "fp16_graph", "build_tensorrt",
           "TensorRTResult", "BUILD_JSON", "record_plans", "network_flags"]
