"""Generated protobuf and gRPC stubs of the cbloss.v1 wire contract.

The build (python/generate_stubs.py, run by python/CMakeLists.txt and by
setup.py) writes them under this folder as ``cbloss/v1/cbloss_pb2.py``,
``cbloss_pb2.pyi`` and ``cbloss_pb2_grpc.py`` (from
``proto/cbloss/v1/cbloss.proto``), with the gRPC stub importing its messages
package-relatively, so they are the modules
``cbloss._proto.cbloss.v1.cbloss_pb2`` and ``...cbloss_pb2_grpc``. This
module re-exports them as ``cbloss._proto.cbloss_pb2`` and
``cbloss._proto.cbloss_pb2_grpc``.

``cbloss.v1.cbloss_pb2`` (docs/PYTHON.md) names the same modules. Python
finds a dotted module name only in sys.modules or by loading a file, and
loading the stubs a second time would register the .proto twice (two sets of
message classes), so that short name is entered in sys.modules, here and
nowhere else.
"""

import sys

from cbloss._proto.cbloss import v1
from cbloss._proto.cbloss.v1 import cbloss_pb2

sys.modules["cbloss.v1"] = v1
sys.modules["cbloss.v1.cbloss_pb2"] = cbloss_pb2

# After the alias: stubs from plain protoc, without generate_stubs.py's
# rewrite, import their messages as `cbloss.v1.cbloss_pb2`.
from cbloss._proto.cbloss.v1 import cbloss_pb2_grpc  # noqa: E402

sys.modules["cbloss.v1.cbloss_pb2_grpc"] = cbloss_pb2_grpc

__all__ = ["cbloss_pb2", "cbloss_pb2_grpc"]
