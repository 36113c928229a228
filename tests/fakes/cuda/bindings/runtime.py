"""A fake ``cuda.bindings.runtime``: every call returns a tuple whose first item is a
``cudaError_t``, as the real bindings do; device memory is ctypes host memory."""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace


class cudaError_t(enum.IntEnum):  # noqa: N801 (the real name)
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class cudaStream_t:  # noqa: N801
    _next = 1

    def __init__(self):
        self.handle = cudaStream_t._next
        cudaStream_t._next += 1

    def __int__(self) -> int:
        return self.handle


#: test knobs: fail the n-th allocation from now (device or host), count live allocations
FAKE = SimpleNamespace(fail_device_alloc_after=None, fail_host_alloc_after=None, live={}, streams=set(),
                       device=SimpleNamespace(name=b"NVIDIA H100 80GB HBM3", major=9, minor=0), devices=1)


def _allocate(size: int, knob: str):
    remaining = getattr(FAKE, knob)
    if remaining is not None:
        if remaining == 0:
            setattr(FAKE, knob, None)
            return (cudaError_t.cudaErrorMemoryAllocation, 0)
        setattr(FAKE, knob, remaining - 1)
    buffer = ctypes.create_string_buffer(max(int(size), 1))
    address = ctypes.addressof(buffer)
    FAKE.live[address] = buffer
    return (cudaError_t.cudaSuccess, address)


def cudaMalloc(size):  # noqa: N802
    return _allocate(size, "fail_device_alloc_after")


def cudaMallocHost(size):  # noqa: N802
    return _allocate(size, "fail_host_alloc_after")


def _release(address):
    if FAKE.live.pop(int(address), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    return (cudaError_t.cudaSuccess,)


def cudaFree(address):  # noqa: N802
    return _release(address)


def cudaFreeHost(address):  # noqa: N802
    return _release(address)


def cudaStreamCreate():  # noqa: N802
    stream = cudaStream_t()
    FAKE.streams.add(stream.handle)
    return (cudaError_t.cudaSuccess, stream)


def cudaStreamDestroy(stream):  # noqa: N802
    FAKE.streams.discard(int(stream))
    return (cudaError_t.cudaSuccess,)


def cudaStreamSynchronize(stream):  # noqa: N802
    return (cudaError_t.cudaSuccess,)


def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
    ctypes.memmove(int(dst), int(src), int(count))
    return (cudaError_t.cudaSuccess,)


def cudaGetErrorString(error):  # noqa: N802
    return (cudaError_t.cudaSuccess, cudaError_t(error).name.encode())


def cudaGetDeviceCount():  # noqa: N802
    if not FAKE.devices:
        return (cudaError_t.cudaErrorNoDevice, 0)
    return (cudaError_t.cudaSuccess, FAKE.devices)


def cudaGetDeviceProperties(device):  # noqa: N802
    return (cudaError_t.cudaSuccess, FAKE.device)
