"""Build hook: generates the gRPC stubs when they are not in the source tree.

The stubs (cbloss/_proto/cbloss/v1/cbloss_pb2*.py) are generated from
../proto/cbloss/v1/cbloss.proto with protoc and grpc_python_plugin (Debian:
protobuf-compiler, protobuf-compiler-grpc) straight into the build folder, so
`pip install ./python` works from a clone. Overrides: CBLOSS_PROTO_DIR (the
folder holding cbloss/v1/cbloss.proto), CBLOSS_PROTOC, CBLOSS_GRPC_PYTHON_PLUGIN.
Everything else is in pyproject.toml.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_FILE = os.path.join("cbloss", "v1", "cbloss.proto")
STUBS = ("cbloss_pb2.py", "cbloss_pb2.pyi", "cbloss_pb2_grpc.py")


def _find(env, name, fallback):
    path = os.environ.get(env) or shutil.which(name) or fallback
    if not path or not os.path.exists(path):
        raise RuntimeError("cbloss: %s not found (install it, or set %s)" % (name, env))
    return path


def generate_stubs(out_root):
    """Runs protoc on cbloss.proto, writing out_root/cbloss/v1/cbloss_pb2*.py."""
    proto_dir = os.environ.get("CBLOSS_PROTO_DIR") or os.path.join(HERE, os.pardir, "proto")
    if not os.path.exists(os.path.join(proto_dir, PROTO_FILE)):
        raise RuntimeError("cbloss: %s not found under %s; build from a clone of the "
                           "repository or set CBLOSS_PROTO_DIR" % (PROTO_FILE, proto_dir))
    protoc = _find("CBLOSS_PROTOC", "protoc", "/usr/bin/protoc")
    plugin = _find("CBLOSS_GRPC_PYTHON_PLUGIN", "grpc_python_plugin",
                   "/usr/bin/grpc_python_plugin")
    os.makedirs(out_root, exist_ok=True)
    subprocess.run([protoc, "-I", proto_dir,
                    "--python_out=" + out_root, "--pyi_out=" + out_root,
                    "--grpc_python_out=" + out_root,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    os.path.join(proto_dir, PROTO_FILE)], check=True)


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        out_root = os.path.join(self.build_lib, "cbloss", "_proto")
        if not all(os.path.exists(os.path.join(out_root, "cbloss", "v1", f)) for f in STUBS):
            generate_stubs(out_root)


setup(cmdclass={"build_py": BuildPyWithStubs})
