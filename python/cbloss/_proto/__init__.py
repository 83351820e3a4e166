"""Generated protobuf and gRPC stubs of the cbloss.v1 wire contract.

protoc writes the stubs under this folder as ``cbloss/v1/cbloss_pb2.py`` and
``cbloss/v1/cbloss_pb2_grpc.py`` (from ``proto/cbloss/v1/cbloss.proto``), and
the gRPC stub imports its messages as ``from cbloss.v1 import cbloss_pb2``.
The top-level ``cbloss`` package adds ``_proto/cbloss`` to its ``__path__``,
so that import resolves to ``cbloss.v1`` without anyone touching sys.path.

This module makes the long spelling ``cbloss._proto.cbloss.v1.cbloss_pb2``
name the very same module objects (one import of the .proto, one set of
message classes): it registers aliases in sys.modules.
"""

import os
import sys
import types

from cbloss import v1 as _v1
from cbloss.v1 import cbloss_pb2, cbloss_pb2_grpc

_inner = types.ModuleType(__name__ + ".cbloss",
                          "Alias of the generated package cbloss.v1.")
_inner.__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "cbloss")]
_inner.v1 = _v1

sys.modules[_inner.__name__] = _inner
sys.modules[_inner.__name__ + ".v1"] = _v1
sys.modules[_inner.__name__ + ".v1.cbloss_pb2"] = cbloss_pb2
sys.modules[_inner.__name__ + ".v1.cbloss_pb2_grpc"] = cbloss_pb2_grpc
cbloss = _inner

__all__ = ["cbloss_pb2", "cbloss_pb2_grpc"]
