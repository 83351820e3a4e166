"""`pip install ./python` builds a working package: the stubs are generated
by the build hook (setup.py) with protoc and grpc_python_plugin. Runs on a
copy of python/ and proto/ so the source tree stays clean."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


class PipInstallTest(unittest.TestCase):

    def test_pip_install_target_then_import(self):
        if subprocess.run([sys.executable, "-m", "pip", "--version"],
                          capture_output=True).returncode != 0:
            self.fail("pip is not installed for %s" % sys.executable)
        if not (shutil.which("protoc") and (shutil.which("grpc_python_plugin")
                                            or os.path.exists("/usr/bin/grpc_python_plugin"))):
            self.fail("protoc / grpc_python_plugin not installed")
        tmp = tempfile.mkdtemp(prefix="cbloss-pip-")
        self.addCleanup(shutil.rmtree, tmp, True)
        def ignore(folder, names):
            # Leave out build products and any stubs generated in place, so
            # that the build hook has to run protoc.
            skip = {n for n in names if n in ("build", "__pycache__") or n.endswith(".egg-info")}
            if os.path.basename(folder) == "_proto":
                skip.add("cbloss")
            return skip

        shutil.copytree(os.path.join(_ROOT, "python"), os.path.join(tmp, "python"),
                        ignore=ignore)
        shutil.copytree(os.path.join(_ROOT, "proto"), os.path.join(tmp, "proto"))
        target = os.path.join(tmp, "site")
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
             "--no-deps", "--target", target, os.path.join(tmp, "python")],
            capture_output=True, text=True, env=env, timeout=240)
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        check = subprocess.run(
            [sys.executable, "-c",
             "import cbloss, cbloss.torch\n"
             "import cbloss._proto.cbloss.v1.cbloss_pb2 as a, cbloss.v1.cbloss_pb2 as b\n"
             "assert a is b, 'two copies of the stubs'\n"
             "import cbloss._proto.cbloss.v1.cbloss_pb2_grpc as g\n"
             "assert 'from . import cbloss_pb2' in open(g.__file__).read(), g.__file__\n"
             "assert cbloss.client._RETRY_POLICY, 'no retry policy'\n"
             "print(cbloss.__file__)"],
            capture_output=True, text=True, timeout=120,
            env=dict(env, PYTHONPATH=target), cwd=tmp)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertTrue(check.stdout.strip().startswith(target), check.stdout)


if __name__ == "__main__":
    unittest.main()
