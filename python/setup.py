"""Build hook: generates the gRPC stubs and adds the shared service config.

`pip install ./python` from a clone: the stubs (cbloss/_proto/cbloss/v1/
cbloss_pb2*.py) are generated from ../proto/cbloss/v1/cbloss.proto by
generate_stubs.py (protoc and grpc_python_plugin; Debian: protobuf-compiler,
protobuf-compiler-grpc) straight into the build folder, and the clients'
retry policy ../proto/cbloss/v1/service_config.json is copied beside the
package's modules (cbloss/service_config.json). Overrides: CBLOSS_PROTO_DIR
(the folder holding cbloss/v1/cbloss.proto), CBLOSS_PROTOC,
CBLOSS_GRPC_PYTHON_PLUGIN. Everything else is in pyproject.toml.
"""

import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE_CONFIG = os.path.join("cbloss", "v1", "service_config.json")


def _load_generator():
    # A file beside this one, not a module of the package (setup.py runs
    # with no guarantee that its folder is on sys.path).
    spec = importlib.util.spec_from_file_location(
        "cbloss_generate_stubs", os.path.join(HERE, "generate_stubs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generator = _load_generator()
        proto_dir = os.environ.get("CBLOSS_PROTO_DIR") or os.path.join(HERE, os.pardir, "proto")
        package = os.path.join(self.build_lib, "cbloss")
        out_root = os.path.join(package, "_proto")
        if not all(os.path.exists(os.path.join(out_root, generator.STUB_DIR, f))
                   for f in generator.STUBS):
            generator.generate_stubs(proto_dir, out_root,
                                     protoc=os.environ.get("CBLOSS_PROTOC"),
                                     plugin=os.environ.get("CBLOSS_GRPC_PYTHON_PLUGIN"))
        config = os.path.join(proto_dir, SERVICE_CONFIG)
        if not os.path.exists(config):
            raise RuntimeError("cbloss: %s not found under %s" % (SERVICE_CONFIG, proto_dir))
        shutil.copyfile(config, os.path.join(package, "service_config.json"))


setup(cmdclass={"build_py": BuildPyWithStubs})
