"""Python client of cbloss, the class-balanced loss service.

cbloss computes the class-balanced losses of Cui et al. (CVPR 2019) and their
analytic gradients over gRPC (docs/spec/API.md, docs/spec/LOSS.md).

Example::

    import cbloss
    client = cbloss.Client("127.0.0.1:50051")
    client.put_dataset("my-data", [5000, 2997, 1796, 1077, 645])
    r = client.compute_loss(logits, labels, dataset="my-data", loss_type="focal")
    r.loss, r.gradient          # float, numpy float32 array [B, C]

PyTorch users want ``cbloss.torch.ClassBalancedLoss`` (docs/PYTHON.md).

A Client is safe to share between threads (it wraps one gRPC channel).
"""

try:
    from cbloss._proto import cbloss_pb2 as _pb  # noqa: F401
except ImportError as _e:  # pragma: no cover - a broken install
    raise ImportError(
        "cbloss: the generated stubs cbloss/_proto/cbloss/v1/cbloss_pb2.py are missing "
        "(build the CMake target cbloss_python_stubs, or `pip install` the python/ "
        "folder, which runs protoc): %s" % _e) from _e

# `cbloss.v1.cbloss_pb2`, the short name of the stubs (see _proto/__init__.py).
from cbloss._proto import v1  # noqa: E402,F401

from cbloss.client import Client, LossStream, read_token_file, tls_credentials  # noqa: E402
from cbloss.errors import CblossError  # noqa: E402
from cbloss.messages import (Dataset, LossConfig, LossResult, Run, RunStatistics,  # noqa: E402
                             SharedMemoryRegion)

__version__ = "0.1.0"

__all__ = [
    "CblossError",
    "Client",
    "read_token_file",
    "tls_credentials",
    "Dataset",
    "LossConfig",
    "LossResult",
    "LossStream",
    "Run",
    "RunStatistics",
    "SharedMemoryRegion",
]


def __getattr__(name):
    # `cbloss.torch` is imported on first use: torch is optional.
    if name == "torch":
        import importlib
        return importlib.import_module("cbloss.torch")
    raise AttributeError("module 'cbloss' has no attribute %r" % name)
