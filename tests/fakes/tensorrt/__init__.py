"""A fake ``tensorrt`` with the TensorRT 10/11 Python API surface that aeserve uses. Plans are
JSON (the ONNX graph, base64, and the profile); engines run the graph with ONNX Runtime on the
CPU, reading and writing the fake ``cuda.bindings`` "device" memory at the tensor addresses."""

from __future__ import annotations

import base64
import ctypes
import enum
import json
from types import SimpleNamespace

import numpy as np

__version__ = "10.13.3.9"

#: test knobs and records
FAKE = SimpleNamespace(refuse_input_shape=False, no_context=False, reject_timing_cache=False,
                       network_flags=[], builder_flags=[], batches=[], contexts=0, engines=0)


def reset() -> None:
    """Back to a well-behaved fake."""
    FAKE.refuse_input_shape = FAKE.no_context = FAKE.reject_timing_cache = False
    FAKE.network_flags, FAKE.builder_flags, FAKE.batches = [], [], []
    FAKE.contexts = FAKE.engines = 0


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

    def __init__(self, min_severity: int = 2):
        self.min_severity = min_severity


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 8


_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
          DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.INT64: np.int64}


def nptype(dtype: DataType):
    return _NUMPY[DataType(dtype)]


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Dims(tuple):
    pass


# -- building --------------------------------------------------------------------------------

class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags = flags
        self.onnx = None


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger):
        self.network, self.errors = network, []

    def parse(self, model: bytes) -> bool:
        import onnx

        try:
            onnx.checker.check_model(onnx.ModelProto.FromString(model))
        except Exception as exc:  # the real parser reports errors, it does not raise
            self.errors.append(str(exc))
            return False
        self.network.onnx = bytes(model)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class IOptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max) -> None:  # noqa: A002 (the real keyword names)
        self.shapes[name] = [list(min), list(opt), list(max)]


class ITimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data or b"fake-timing-cache"


class IBuilderConfig:
    def __init__(self):
        self.flags, self.profiles, self.pool, self.cache = set(), [], {}, None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pool[pool] = size

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def get_flag(self, flag) -> bool:
        return flag in self.flags

    def create_timing_cache(self, data: bytes) -> ITimingCache:
        return ITimingCache(bytes(data))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if FAKE.reject_timing_cache and cache.data:  # a cache made on another device
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        return self.cache

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger: Logger):
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        FAKE.network_flags.append(flags)
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        if network.onnx is None or not config.profiles or config.cache is None:
            return None
        FAKE.builder_flags.append(sorted(int(f) for f in config.flags))
        plan = {"fake_plan": 1, "onnx": base64.b64encode(network.onnx).decode(), "profile": config.profiles[0].shapes,
                "strongly_typed": bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))}
        return json.dumps(plan).encode()


# -- running ---------------------------------------------------------------------------------

class Runtime:
    def __init__(self, logger: Logger):
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes):
        try:
            record = json.loads(bytes(plan))
            assert record["fake_plan"] == 1
        except Exception:
            return None  # the real runtime logs an error and returns None
        FAKE.engines += 1
        return ICudaEngine(record)


class ICudaEngine:
    def __init__(self, record: dict):
        import onnx
        import onnxruntime as ort

        model = base64.b64decode(record["onnx"])
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        proto = onnx.ModelProto.FromString(model)
        self.profile = record["profile"]
        self._inputs = {i.name: [d.dim_value or -1 for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
        self._outputs = {o.name: [d.dim_value or -1 for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
        self._names = [*self._inputs, *self._outputs]

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self._inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims({**self._inputs, **self._outputs}[name])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        return [Dims(s) for s in self.profile[name]]

    def create_execution_context(self):
        if FAKE.no_context:
            return None
        FAKE.contexts += 1
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape) -> bool:
        low, _, high = self.engine.profile[name]
        shape = list(shape)
        if FAKE.refuse_input_shape or len(shape) != len(low) or \
                any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            return False  # outside the optimisation profile: TensorRT says so by return value
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.engine._inputs:
            return Dims(self.shapes.get(name, self.engine._inputs[name]))
        batch = next(iter(self.shapes.values()))[0] if self.shapes else -1
        return Dims([batch if d == -1 else d for d in self.engine._outputs[name]])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        feeds = {}
        for name in self.engine._inputs:
            shape = self.shapes[name]
            count = int(np.prod(shape))
            raw = (ctypes.c_byte * (count * 4)).from_address(self.addresses[name])
            feeds[name] = np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
        FAKE.batches.append(next(iter(feeds.values())).shape[0])
        results = self.engine.session.run(list(self.engine._outputs), feeds)
        for name, value in zip(self.engine._outputs, results):
            value = np.ascontiguousarray(value, dtype=np.float32)
            ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
        return True
