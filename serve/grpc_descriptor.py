"""The KServe v2 gRPC messages, built from ``protos/predict_v2.proto`` compiled by protoc.

The compiled file descriptor is kept here (``SERIALIZED``, base64) so the server needs only
``grpcio`` and ``protobuf`` at run time, not protoc. Its messages go into a private descriptor
pool, not protobuf's default one: tritonclient registers the same ``inference.*`` names there,
and a process that imports both (a service using tritonclient, a test) would otherwise fail
with "duplicate symbol". Regenerate after editing the .proto (needs grpcio-tools):

    python -m aeserve.serve.grpc_descriptor --write
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

__all__ = ["messages", "compile_proto", "PROTO", "SERVICE", "GENERATOR"]

PROTO = Path(__file__).with_name("protos") / "predict_v2.proto"
SERVICE = "inference.GRPCInferenceService"
GENERATOR = "grpcio-tools 1.85.1 (protoc --descriptor_set_out)"
# fmt: off
SERIALIZED = (
    "ChBwcmVkaWN0X3YyLnByb3RvEglpbmZlcmVuY2UiEwoRU2VydmVyTGl2ZVJlcXVlc3QiKAoSU2VydmVyTGl2ZVJlc3BvbnNlEhIK"
    "BGxpdmUYASABKAhSBGxpdmUiFAoSU2VydmVyUmVhZHlSZXF1ZXN0IisKE1NlcnZlclJlYWR5UmVzcG9uc2USFAoFcmVhZHkYASAB"
    "KAhSBXJlYWR5IkEKEU1vZGVsUmVhZHlSZXF1ZXN0EhIKBG5hbWUYASABKAlSBG5hbWUSGAoHdmVyc2lvbhgCIAEoCVIHdmVyc2lv"
    "biIqChJNb2RlbFJlYWR5UmVzcG9uc2USFAoFcmVhZHkYASABKAhSBXJlYWR5IhcKFVNlcnZlck1ldGFkYXRhUmVxdWVzdCJmChZT"
    "ZXJ2ZXJNZXRhZGF0YVJlc3BvbnNlEhIKBG5hbWUYASABKAlSBG5hbWUSGAoHdmVyc2lvbhgCIAEoCVIHdmVyc2lvbhIeCgpleHRl"
    "bnNpb25zGAMgAygJUgpleHRlbnNpb25zIkQKFE1vZGVsTWV0YWRhdGFSZXF1ZXN0EhIKBG5hbWUYASABKAlSBG5hbWUSGAoHdmVy"
    "c2lvbhgCIAEoCVIHdmVyc2lvbiLPAgoVTW9kZWxNZXRhZGF0YVJlc3BvbnNlEhIKBG5hbWUYASABKAlSBG5hbWUSGgoIdmVyc2lv"
    "bnMYAiADKAlSCHZlcnNpb25zEhoKCHBsYXRmb3JtGAMgASgJUghwbGF0Zm9ybRJHCgZpbnB1dHMYBCADKAsyLy5pbmZlcmVuY2Uu"
    "TW9kZWxNZXRhZGF0YVJlc3BvbnNlLlRlbnNvck1ldGFkYXRhUgZpbnB1dHMSSQoHb3V0cHV0cxgFIAMoCzIvLmluZmVyZW5jZS5N"
    "b2RlbE1ldGFkYXRhUmVzcG9uc2UuVGVuc29yTWV0YWRhdGFSB291dHB1dHMaVgoOVGVuc29yTWV0YWRhdGESEgoEbmFtZRgBIAEo"
    "CVIEbmFtZRIaCghkYXRhdHlwZRgCIAEoCVIIZGF0YXR5cGUSFAoFc2hhcGUYAyADKANSBXNoYXBlIp0IChFNb2RlbEluZmVyUmVx"
    "dWVzdBIdCgptb2RlbF9uYW1lGAEgASgJUgltb2RlbE5hbWUSIwoNbW9kZWxfdmVyc2lvbhgCIAEoCVIMbW9kZWxWZXJzaW9uEg4K"
    "AmlkGAMgASgJUgJpZBJMCgpwYXJhbWV0ZXJzGAQgAygLMiwuaW5mZXJlbmNlLk1vZGVsSW5mZXJSZXF1ZXN0LlBhcmFtZXRlcnNF"
    "bnRyeVIKcGFyYW1ldGVycxJFCgZpbnB1dHMYBSADKAsyLS5pbmZlcmVuY2UuTW9kZWxJbmZlclJlcXVlc3QuSW5mZXJJbnB1dFRl"
    "bnNvclIGaW5wdXRzElEKB291dHB1dHMYBiADKAsyNy5pbmZlcmVuY2UuTW9kZWxJbmZlclJlcXVlc3QuSW5mZXJSZXF1ZXN0ZWRP"
    "dXRwdXRUZW5zb3JSB291dHB1dHMSLAoScmF3X2lucHV0X2NvbnRlbnRzGAcgAygMUhByYXdJbnB1dENvbnRlbnRzGs0CChBJbmZl"
    "cklucHV0VGVuc29yEhIKBG5hbWUYASABKAlSBG5hbWUSGgoIZGF0YXR5cGUYAiABKAlSCGRhdGF0eXBlEhQKBXNoYXBlGAMgAygD"
    "UgVzaGFwZRJdCgpwYXJhbWV0ZXJzGAQgAygLMj0uaW5mZXJlbmNlLk1vZGVsSW5mZXJSZXF1ZXN0LkluZmVySW5wdXRUZW5zb3Iu"
    "UGFyYW1ldGVyc0VudHJ5UgpwYXJhbWV0ZXJzEjoKCGNvbnRlbnRzGAUgASgLMh4uaW5mZXJlbmNlLkluZmVyVGVuc29yQ29udGVu"
    "dHNSCGNvbnRlbnRzGlgKD1BhcmFtZXRlcnNFbnRyeRIQCgNrZXkYASABKAlSA2tleRIvCgV2YWx1ZRgCIAEoCzIZLmluZmVyZW5j"
    "ZS5JbmZlclBhcmFtZXRlclIFdmFsdWU6AjgBGvMBChpJbmZlclJlcXVlc3RlZE91dHB1dFRlbnNvchISCgRuYW1lGAEgASgJUgRu"
    "YW1lEmcKCnBhcmFtZXRlcnMYAiADKAsyRy5pbmZlcmVuY2UuTW9kZWxJbmZlclJlcXVlc3QuSW5mZXJSZXF1ZXN0ZWRPdXRwdXRU"
    "ZW5zb3IuUGFyYW1ldGVyc0VudHJ5UgpwYXJhbWV0ZXJzGlgKD1BhcmFtZXRlcnNFbnRyeRIQCgNrZXkYASABKAlSA2tleRIvCgV2"
    "YWx1ZRgCIAEoCzIZLmluZmVyZW5jZS5JbmZlclBhcmFtZXRlclIFdmFsdWU6AjgBGlgKD1BhcmFtZXRlcnNFbnRyeRIQCgNrZXkY"
    "ASABKAlSA2tleRIvCgV2YWx1ZRgCIAEoCzIZLmluZmVyZW5jZS5JbmZlclBhcmFtZXRlclIFdmFsdWU6AjgBIt8FChJNb2RlbElu"
    "ZmVyUmVzcG9uc2USHQoKbW9kZWxfbmFtZRgBIAEoCVIJbW9kZWxOYW1lEiMKDW1vZGVsX3ZlcnNpb24YAiABKAlSDG1vZGVsVmVy"
    "c2lvbhIOCgJpZBgDIAEoCVICaWQSTQoKcGFyYW1ldGVycxgEIAMoCzItLmluZmVyZW5jZS5Nb2RlbEluZmVyUmVzcG9uc2UuUGFy"
    "YW1ldGVyc0VudHJ5UgpwYXJhbWV0ZXJzEkkKB291dHB1dHMYBSADKAsyLy5pbmZlcmVuY2UuTW9kZWxJbmZlclJlc3BvbnNlLklu"
    "ZmVyT3V0cHV0VGVuc29yUgdvdXRwdXRzEi4KE3Jhd19vdXRwdXRfY29udGVudHMYBiADKAxSEXJhd091dHB1dENvbnRlbnRzGtAC"
    "ChFJbmZlck91dHB1dFRlbnNvchISCgRuYW1lGAEgASgJUgRuYW1lEhoKCGRhdGF0eXBlGAIgASgJUghkYXRhdHlwZRIUCgVzaGFw"
    "ZRgDIAMoA1IFc2hhcGUSXwoKcGFyYW1ldGVycxgEIAMoCzI/LmluZmVyZW5jZS5Nb2RlbEluZmVyUmVzcG9uc2UuSW5mZXJPdXRw"
    "dXRUZW5zb3IuUGFyYW1ldGVyc0VudHJ5UgpwYXJhbWV0ZXJzEjoKCGNvbnRlbnRzGAUgASgLMh4uaW5mZXJlbmNlLkluZmVyVGVu"
    "c29yQ29udGVudHNSCGNvbnRlbnRzGlgKD1BhcmFtZXRlcnNFbnRyeRIQCgNrZXkYASABKAlSA2tleRIvCgV2YWx1ZRgCIAEoCzIZ"
    "LmluZmVyZW5jZS5JbmZlclBhcmFtZXRlclIFdmFsdWU6AjgBGlgKD1BhcmFtZXRlcnNFbnRyeRIQCgNrZXkYASABKAlSA2tleRIv"
    "CgV2YWx1ZRgCIAEoCzIZLmluZmVyZW5jZS5JbmZlclBhcmFtZXRlclIFdmFsdWU6AjgBIo0BCg5JbmZlclBhcmFtZXRlchIfCgpi"
    "b29sX3BhcmFtGAEgASgISABSCWJvb2xQYXJhbRIhCgtpbnQ2NF9wYXJhbRgCIAEoA0gAUgppbnQ2NFBhcmFtEiMKDHN0cmluZ19w"
    "YXJhbRgDIAEoCUgAUgtzdHJpbmdQYXJhbUISChBwYXJhbWV0ZXJfY2hvaWNlIsMCChNJbmZlclRlbnNvckNvbnRlbnRzEiMKDWJv"
    "b2xfY29udGVudHMYASADKAhSDGJvb2xDb250ZW50cxIhCgxpbnRfY29udGVudHMYAiADKAVSC2ludENvbnRlbnRzEiUKDmludDY0"
    "X2NvbnRlbnRzGAMgAygDUg1pbnQ2NENvbnRlbnRzEiMKDXVpbnRfY29udGVudHMYBCADKA1SDHVpbnRDb250ZW50cxInCg91aW50"
    "NjRfY29udGVudHMYBSADKARSDnVpbnQ2NENvbnRlbnRzEiMKDWZwMzJfY29udGVudHMYBiADKAJSDGZwMzJDb250ZW50cxIjCg1m"
    "cDY0X2NvbnRlbnRzGAcgAygBUgxmcDY0Q29udGVudHMSJQoOYnl0ZXNfY29udGVudHMYCCADKAxSDWJ5dGVzQ29udGVudHMy/AMK"
    "FEdSUENJbmZlcmVuY2VTZXJ2aWNlEksKClNlcnZlckxpdmUSHC5pbmZlcmVuY2UuU2VydmVyTGl2ZVJlcXVlc3QaHS5pbmZlcmVu"
    "Y2UuU2VydmVyTGl2ZVJlc3BvbnNlIgASTgoLU2VydmVyUmVhZHkSHS5pbmZlcmVuY2UuU2VydmVyUmVhZHlSZXF1ZXN0Gh4uaW5m"
    "ZXJlbmNlLlNlcnZlclJlYWR5UmVzcG9uc2UiABJLCgpNb2RlbFJlYWR5EhwuaW5mZXJlbmNlLk1vZGVsUmVhZHlSZXF1ZXN0Gh0u"
    "aW5mZXJlbmNlLk1vZGVsUmVhZHlSZXNwb25zZSIAElcKDlNlcnZlck1ldGFkYXRhEiAuaW5mZXJlbmNlLlNlcnZlck1ldGFkYXRh"
    "UmVxdWVzdBohLmluZmVyZW5jZS5TZXJ2ZXJNZXRhZGF0YVJlc3BvbnNlIgASVAoNTW9kZWxNZXRhZGF0YRIfLmluZmVyZW5jZS5N"
    "b2RlbE1ldGFkYXRhUmVxdWVzdBogLmluZmVyZW5jZS5Nb2RlbE1ldGFkYXRhUmVzcG9uc2UiABJLCgpNb2RlbEluZmVyEhwuaW5m"
    "ZXJlbmNlLk1vZGVsSW5mZXJSZXF1ZXN0Gh0uaW5mZXJlbmNlLk1vZGVsSW5mZXJSZXNwb25zZSIAYgZwcm90bzM="
)
# fmt: on


def compile_proto() -> bytes:
    """``PROTO`` compiled now by grpcio-tools' protoc: the FileDescriptorProto's bytes."""
    import tempfile

    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return files[0].SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=None)
def messages() -> dict[str, type]:
    """Message name (``ModelInferRequest``, ...) -> its class, from a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(SERIALIZED)))
    descriptor = pool.FindFileByName(PROTO.name)
    return {name: message_factory.GetMessageClass(message)
            for name, message in descriptor.message_types_by_name.items()}


def _write() -> None:
    encoded = base64.b64encode(compile_proto()).decode()
    lines = "\n".join(f'    "{encoded[i:i + 100]}"' for i in range(0, len(encoded), 100))
    source = Path(__file__)
    text = source.read_text()
    start = text.index("SERIALIZED = (\n") + len("SERIALIZED = (\n")
    end = text.index("\n)\n# fmt: on")
    source.write_text(text[:start] + lines + text[end:])


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        _write()
    else:
        print(__doc__)
