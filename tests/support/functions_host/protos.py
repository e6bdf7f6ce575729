"""The FunctionRpc protocol (and the Service Bus loopback) as Python code, generated at test
time with grpcio-tools from the ``.proto`` files beside this module."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROTO_FILES = ("FunctionRpc.proto", "ServiceBusLoopback.proto")


def generate(out: Path) -> Path:
    """Write ``*_pb2.py`` and ``*_pb2_grpc.py`` for every proto file into `out`."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    for name in PROTO_FILES:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{HERE}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(HERE / name),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {name} (exit {code})")
    return out


def load(out: Path) -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """Import the generated modules from `out`: FunctionRpc's messages and service, then the
    loopback's (the generated service modules import their messages by top-level name)."""
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return (
        importlib.import_module("FunctionRpc_pb2"),
        importlib.import_module("FunctionRpc_pb2_grpc"),
        importlib.import_module("ServiceBusLoopback_pb2"),
        importlib.import_module("ServiceBusLoopback_pb2_grpc"),
    )
