"""Generates the Python stubs of the wire contract into the cbloss package.

Runs protoc with grpc_python_plugin on proto/cbloss/v1/cbloss.proto, writing

    OUT/cbloss/v1/cbloss_pb2.py, cbloss_pb2.pyi, cbloss_pb2_grpc.py

with OUT = <package>/cbloss/_proto, so that the modules are
cbloss._proto.cbloss.v1.cbloss_pb2 and friends. grpc_python_plugin imports
the messages by the proto package's absolute name (`from cbloss.v1 import
cbloss_pb2`), which resolves only if OUT itself is on sys.path; this script
rewrites that import to `from . import cbloss_pb2`, so the stubs resolve
inside the package (and still from OUT on sys.path, as the server tests and
fuzz/make_corpus.py use them).

Used by python/CMakeLists.txt and by setup.py (`pip install ./python`):

    python3 python/generate_stubs.py --proto_dir proto --out build/python/cbloss/_proto \
        [--protoc /usr/bin/protoc] [--plugin /usr/bin/grpc_python_plugin]

Only the standard library is needed.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

PROTO_FILE = os.path.join("cbloss", "v1", "cbloss.proto")
STUB_DIR = os.path.join("cbloss", "v1")
STUBS = ("cbloss_pb2.py", "cbloss_pb2.pyi", "cbloss_pb2_grpc.py")

# `from cbloss.v1 import cbloss_pb2 as cbloss_dot_v1_dot_cbloss__pb2`: the
# generated modules' imports of each other (google.protobuf's stay as they are).
_SIBLING_IMPORT = re.compile(r"^from cbloss\.v1 import (\w+_pb2\b)", re.MULTILINE)


# The overrides setup.py reads, named in the error when a tool is missing.
_TOOL_ENV = {"protoc": "CBLOSS_PROTOC", "grpc_python_plugin": "CBLOSS_GRPC_PYTHON_PLUGIN"}


def find_tool(path, name):
    """`path` if given, else `name` on PATH, else /usr/bin/`name`."""
    found = path or shutil.which(name) or os.path.join("/usr/bin", name)
    if not os.path.exists(found):
        raise RuntimeError("cbloss: %s not found (install it, or set %s)" % (name, _TOOL_ENV[name]))
    return found


def make_imports_relative(out_root):
    """Rewrites the generated modules' imports of each other to relative ones."""
    grpc_stub = os.path.join(out_root, STUB_DIR, "cbloss_pb2_grpc.py")
    for name in STUBS:
        path = os.path.join(out_root, STUB_DIR, name)
        with open(path) as f:
            text = f.read()
        fixed, count = _SIBLING_IMPORT.subn(r"from . import \1", text)
        if path == grpc_stub and count == 0:
            raise RuntimeError("cbloss: %s does not import its messages as expected "
                               "(`from cbloss.v1 import cbloss_pb2`)" % path)
        if count:
            with open(path, "w") as f:
                f.write(fixed)


def generate_stubs(proto_dir, out_root, protoc=None, plugin=None):
    """Writes out_root/cbloss/v1/cbloss_pb2{.py,.pyi,_grpc.py}."""
    if not os.path.exists(os.path.join(proto_dir, PROTO_FILE)):
        raise RuntimeError("cbloss: %s not found under %s; build from a clone of the "
                           "repository or set CBLOSS_PROTO_DIR" % (PROTO_FILE, proto_dir))
    protoc = find_tool(protoc, "protoc")
    plugin = find_tool(plugin, "grpc_python_plugin")
    os.makedirs(out_root, exist_ok=True)
    subprocess.run([protoc, "-I", proto_dir,
                    "--python_out=" + out_root, "--pyi_out=" + out_root,
                    "--grpc_python_out=" + out_root,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    os.path.join(proto_dir, PROTO_FILE)], check=True)
    make_imports_relative(out_root)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proto_dir", required=True,
                        help="folder holding cbloss/v1/cbloss.proto")
    parser.add_argument("--out", required=True, help="the package's cbloss/_proto folder")
    parser.add_argument("--protoc", help="protoc (default: on PATH)")
    parser.add_argument("--plugin", help="grpc_python_plugin (default: on PATH)")
    args = parser.parse_args(argv)
    generate_stubs(args.proto_dir, args.out, args.protoc, args.plugin)


if __name__ == "__main__":
    main(sys.argv[1:])
