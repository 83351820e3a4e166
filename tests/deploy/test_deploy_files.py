"""docker/, deploy/k8s/ and scripts/install-deps.sh, checked without Docker
or Kubernetes (CI also builds and runs the image, scripts/test-docker.sh, and
validates the manifests against the Kubernetes API schemas,
scripts/test-k8s.sh).

- The Dockerfile's build stage runs `scripts/install-deps.sh --build` (the
  compile part of the default list) and its runtime stage
  `install-deps.sh --runtime`, copying only the
  binaries, the health check script and the sample datasets; non-root uid
  10001, /data volume, EXPOSE, HEALTHCHECK through `cbloss health`.
- Every shared library the built binaries load comes from a package in the
  --runtime list or its dependencies (ldd, dpkg -S, apt-cache depends).
- Every flag the image, compose file and Deployment pass is a flag of the
  built cbloss-server.
- The Kubernetes objects hold the invariants docs/DEPLOY.md promises,
  the sidecar Job of deploy/k8s/sidecar too (same uid in both containers,
  memory-backed socket and /dev/shm volumes shared by both, one socket path
  agreed on by server, probes and trainer); its probe command answers 0
  against a real server on a Unix socket started with the sidecar's flags.
- docker/healthcheck.sh answers 0 for a SERVING server (plaintext and TLS)
  and non-zero for a dead one.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))

from prod_support import ProdServer, channel_credentials, make_certificates  # noqa: E402
from server_fixture import SAMPLE_DATASETS_FILE, ServerTestCase  # noqa: E402

SERVER = os.environ.get("CBLOSS_SERVER", os.path.join(ROOT, "build", "bin", "cbloss-server"))
CLI = os.environ.get("CBLOSS_CLI", os.path.join(ROOT, "build", "bin", "cbloss"))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def dockerfile_instructions():
    """[(stage name, INSTRUCTION, arguments)] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", read("docker", "Dockerfile"))
    out, stage = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            if m is None:
                raise AssertionError("FROM without a stage name: %r" % line)
            stage = m.group(2)
            out.append((stage, word, m.group(1)))
        else:
            out.append((stage, word, re.sub(r"\s+", " ", rest.strip())))
    return out


def server_flags():
    """Names of every flag cbloss-server accepts (from --helpfull)."""
    r = subprocess.run([SERVER, "--helpfull"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    return set(re.findall(r"^\s+--([a-z_0-9]+) \(", r.stdout, re.MULTILINE))


def flag_names(args):
    names = []
    for a in args:
        if not a.startswith("--"):
            raise AssertionError("not a --flag=value argument: %r" % a)
        names.append(a[2:].split("=", 1)[0])
    return names


def k8s_objects():
    objects = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "deploy", "k8s"))):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for doc in yaml.safe_load_all(read("deploy", "k8s", name)):
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        self.ins = dockerfile_instructions()
        self.stages = [(stage, base) for stage, word, base in self.ins if word == "FROM"]

    def stage(self, name, word=None):
        return [(w, a) for s, w, a in self.ins if s == name and (word is None or w == word)]

    def test_two_bookworm_stages(self):
        # Both on BASE_IMAGE, debian:bookworm unless the build says otherwise
        # (scripts/test-docker.sh: a local image made by debootstrap).
        self.assertEqual(self.stage(None), [("ARG", "BASE_IMAGE=debian:bookworm")])
        self.assertEqual(self.stages, [("build", "${BASE_IMAGE}"),
                                       ("runtime", "${BASE_IMAGE}")])

    def test_build_stage_runs_the_install_script_then_builds(self):
        runs = [a for w, a in self.stage("build", "RUN")]
        self.assertTrue(runs[0].startswith("scripts/install-deps.sh --build &&")
                        or runs[0] == "scripts/install-deps.sh --build", runs[0])
        self.assertIn(("COPY", "scripts/install-deps.sh scripts/install-deps.sh"),
                      self.stage("build"))
        build = " ".join(runs[1:])
        self.assertIn("cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release", build)
        self.assertIn("--target cbloss-server cbloss", build)
        # No apt-get of its own: the script is the one list.
        self.assertNotIn("apt-get", " ".join(runs))

    def test_runtime_stage_installs_the_runtime_list_and_copies_only_binaries(self):
        runs = [a for w, a in self.stage("runtime", "RUN")]
        self.assertTrue(runs[0].startswith("/tmp/install-deps.sh --runtime"), runs[0])
        self.assertNotIn("apt-get", " ".join(runs))
        copies = sorted(a for w, a in self.stage("runtime", "COPY"))
        self.assertEqual(copies, sorted([
            "scripts/install-deps.sh /tmp/install-deps.sh",
            "--from=build /build/bin/cbloss-server /build/bin/cbloss /usr/local/bin/",
            "docker/healthcheck.sh /usr/local/bin/cbloss-healthcheck",
            "datasets/sample_datasets.json /etc/cbloss/datasets/sample_datasets.json",
        ]))

    def test_runtime_user_volume_ports_healthcheck(self):
        rt = dict()
        for w, a in self.stage("runtime"):
            rt.setdefault(w, []).append(a)
        self.assertEqual(rt["USER"], ["10001:10001"])
        self.assertIn("useradd --system --uid 10001 --gid 10001", " ".join(rt["RUN"]))
        self.assertEqual(rt["VOLUME"], ['["/data"]'])
        self.assertEqual(rt["EXPOSE"], ["50051 9090"])
        self.assertEqual(len(rt["HEALTHCHECK"]), 1)
        self.assertTrue(rt["HEALTHCHECK"][0].endswith('CMD ["cbloss-healthcheck"]'))
        script = read("docker", "healthcheck.sh")
        self.assertIn('exec cbloss "${args[@]}" health', script)
        self.assertEqual(rt["ENTRYPOINT"], ['["cbloss-server"]'])

    def test_default_command_uses_real_flags(self):
        cmd = [a for s, w, a in self.ins if s == "runtime" and w == "CMD"]
        self.assertEqual(len(cmd), 1)
        args = json.loads(cmd[0])
        known = server_flags()
        self.assertIn("metrics_listen", known)
        for name in flag_names(args):
            self.assertIn(name, known)
        self.assertIn("--data_dir=/data", args)
        self.assertIn("--datasets_file=/etc/cbloss/datasets/sample_datasets.json", args)

    def test_dockerignore_keeps_build_trees_and_git_out(self):
        lines = set(read(".dockerignore").split())
        for entry in (".git", "build", "build-*", "cbloss-data"):
            self.assertIn(entry, lines)


def install_deps_list(*flags):
    return subprocess.run([os.path.join(ROOT, "scripts", "install-deps.sh")] + list(flags)
                          + ["--print"], stdout=subprocess.PIPE, check=True, text=True,
                          timeout=30).stdout.split()


class InstallListsTest(unittest.TestCase):
    def test_build_list_is_part_of_the_default_list(self):
        build, default = install_deps_list("--build"), install_deps_list()
        self.assertIn("libgrpc++-dev", build)
        self.assertNotIn("python3-torch", build)
        self.assertEqual([p for p in build if p not in default], [])

    def test_container_test_packages_are_opt_in(self):
        extra = install_deps_list("--container-tests")
        for p in ("podman", "runc", "debootstrap", "sudo", "npm"):
            self.assertIn(p, extra)
            self.assertNotIn(p, install_deps_list())
            self.assertNotIn(p, install_deps_list("--runtime"))


class RuntimePackagesTest(unittest.TestCase):
    def test_runtime_list_covers_every_shared_library(self):
        listed = install_deps_list("--runtime")
        self.assertIn("libcpp-httplib0.11", listed)
        closure = subprocess.run(
            ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
             "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"] + listed,
            stdout=subprocess.PIPE, check=True, text=True, timeout=120).stdout
        packages = {line.strip().split(":")[0] for line in closure.splitlines()
                    if line and not line.startswith(" ")}
        needed = {}  # library path -> binary that loads it
        for binary in (SERVER, CLI):
            ldd = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, check=True, text=True,
                                 timeout=30).stdout
            libs = re.findall(r"=> (/\S+)", ldd)
            self.assertGreater(len(libs), 5)
            for lib in libs:
                # A sanitizer build (scripts/sanitize.sh) links its runtime;
                # the image is a Release build, which does not.
                if re.search(r"/lib(asan|ubsan|tsan|lsan)\.so", lib):
                    continue
                needed.setdefault(lib, os.path.basename(binary))
        # Debian's merged /usr: dpkg knows a library under one of its names.
        candidates = {}
        for lib in needed:
            real = os.path.realpath(lib)
            candidates[lib] = [lib, real, re.sub(r"^/usr", "", real), re.sub(r"^/usr", "", lib)]
        paths = sorted({p for c in candidates.values() for p in c})
        r = subprocess.run(["dpkg", "-S"] + paths, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=120)
        owner_of = {}
        for line in r.stdout.splitlines():
            owner, _, path = line.partition(": ")
            owner_of[path.strip()] = owner.split(":")[0].split(",")[0].strip()
        for lib, binary in sorted(needed.items()):
            owners = [owner_of[p] for p in candidates[lib] if p in owner_of]
            self.assertTrue(owners, "no package owns %s" % lib)
            self.assertIn(owners[0], packages, "%s needs %s (%s), not in the --runtime list "
                          "or its dependencies" % (binary, owners[0], lib))


class ComposeTest(unittest.TestCase):
    def test_compose(self):
        compose = yaml.safe_load(read("docker", "compose.yaml"))
        svc = compose["services"]["cbloss"]
        self.assertEqual(svc["build"], {"context": "..", "dockerfile": "docker/Dockerfile"})
        self.assertEqual(svc["user"], "10001:10001")
        self.assertTrue(svc["read_only"])
        self.assertIn("cbloss-data:/data", svc["volumes"])
        self.assertIn("cbloss-data", compose["volumes"])
        self.assertIn("../datasets:/etc/cbloss/datasets:ro", svc["volumes"])
        self.assertTrue(os.path.exists(os.path.join(ROOT, "datasets", "sample_datasets.json")))
        self.assertIn("127.0.0.1:50051:50051", svc["ports"])
        known = server_flags()
        for name in flag_names(svc["command"]):
            self.assertIn(name, known)
        self.assertIn("--datasets_file=/etc/cbloss/datasets/sample_datasets.json",
                      svc["command"])


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.objects = k8s_objects()
        self.deployment = self.objects[("Deployment", "cbloss")]
        self.pod = self.deployment["spec"]["template"]["spec"]
        self.container = self.pod["containers"][0]

    def test_kustomization_lists_every_file(self):
        k = yaml.safe_load(read("deploy", "k8s", "kustomization.yaml"))
        files = sorted(n for n in os.listdir(os.path.join(ROOT, "deploy", "k8s"))
                       if n.endswith(".yaml") and n != "kustomization.yaml")
        self.assertEqual(sorted(k["resources"]), files)

    def test_deployment(self):
        spec = self.deployment["spec"]
        self.assertEqual(spec["replicas"], 3)
        labels = spec["template"]["metadata"]["labels"]
        self.assertEqual(spec["selector"]["matchLabels"], labels)
        self.assertEqual(len(self.pod["containers"]), 1)
        c = self.container
        for kind in ("requests", "limits"):
            self.assertEqual(set(c["resources"][kind]), {"cpu", "memory"})
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertEqual(c[probe]["grpc"]["port"], 50051, probe)
        self.assertEqual(c["readinessProbe"]["grpc"]["service"], "cbloss.v1.LossService")
        self.assertTrue(self.pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(self.pod["securityContext"]["runAsUser"], 10001)
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"])

    def test_args_are_real_flags_and_paths_are_mounted(self):
        args = self.container["args"]
        known = server_flags()
        for name in flag_names(args):
            self.assertIn(name, known)
        values = dict(a[2:].split("=", 1) for a in args)
        self.assertGreater(int(values["max_connection_age_ms"]), 0)
        self.assertEqual(values["listen"], "0.0.0.0:50051")
        grace = float(values["shutdown_grace_seconds"])
        self.assertLess(grace, self.pod["terminationGracePeriodSeconds"])
        mounts = {m["mountPath"]: m for m in self.container["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        # /data: the only writable path, an emptyDir.
        self.assertEqual(values["data_dir"], "/data")
        self.assertIn("emptyDir", volumes[mounts["/data"]["name"]])
        # The datasets ConfigMap is mounted as a directory (no subPath, so
        # updates reach the pod) and holds the file --datasets_file names.
        ds_dir, ds_file = os.path.split(values["datasets_file"])
        self.assertNotIn("subPath", mounts[ds_dir])
        cm_name = volumes[mounts[ds_dir]["name"]]["configMap"]["name"]
        cm = self.objects[("ConfigMap", cm_name)]
        self.assertIn(ds_file, cm["data"])
        with open(SAMPLE_DATASETS_FILE) as f:
            self.assertEqual(json.loads(cm["data"][ds_file]), json.load(f))
        tok_dir, tok_file = os.path.split(values["admin_token_file"])
        self.assertIn("secret", volumes[mounts[tok_dir]["name"]])
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "metrics": 9090})
        self.assertEqual(values["metrics_listen"], "0.0.0.0:9090")

    def test_headless_service(self):
        svc = self.objects[("Service", "cbloss-headless")]
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertEqual(svc["spec"]["selector"],
                         self.deployment["spec"]["template"]["metadata"]["labels"])
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        self.assertEqual(ports["grpc"], 50051)

    def test_pod_disruption_budget(self):
        pdb = self.objects[("PodDisruptionBudget", "cbloss")]
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"],
                         self.deployment["spec"]["template"]["metadata"]["labels"])
        self.assertLess(pdb["spec"]["minAvailable"], self.deployment["spec"]["replicas"])
        self.assertGreaterEqual(pdb["spec"]["minAvailable"], 1)


def json_patch(document, operations):
    """RFC 6902 add/replace (what deploy/k8s/tls uses) on a parsed document."""
    import copy
    doc = copy.deepcopy(document)
    for op in operations:
        *parents, last = op["path"].lstrip("/").split("/")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "add" and isinstance(node, list):
            if last == "-":
                node.append(op["value"])
            else:
                node.insert(int(last), op["value"])
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and last not in node:
                raise AssertionError("replace of a missing path %s" % op["path"])
            node[last] = op["value"]
        else:
            raise AssertionError("unsupported op %r" % op["op"])
    return doc


class KubernetesTlsOverlayTest(unittest.TestCase):
    def setUp(self):
        k = yaml.safe_load(read("deploy", "k8s", "tls", "kustomization.yaml"))
        self.assertEqual(k["resources"], [".."])
        self.assertEqual(len(k["patches"]), 1)
        target = k["patches"][0]["target"]
        self.assertEqual((target["kind"], target["name"]), ("Deployment", "cbloss"))
        patch = yaml.safe_load(read("deploy", "k8s", "tls", k["patches"][0]["path"]))
        base = k8s_objects()[("Deployment", "cbloss")]
        self.pod = json_patch(base, patch)["spec"]["template"]["spec"]
        self.container = self.pod["containers"][0]

    def test_tls_flags_point_into_the_mounted_secret(self):
        args = self.container["args"]
        known = server_flags()
        for name in flag_names(args):
            self.assertIn(name, known)
        values = dict(a[2:].split("=", 1) for a in args)
        mounts = {m["mountPath"]: m["name"] for m in self.container["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        env = {e["name"]: e["value"] for e in self.container["env"]}
        for path in (values["tls_cert"], values["tls_key"], env["CBLOSS_TLS_CA"]):
            directory, key = os.path.split(path)
            self.assertEqual(volumes[mounts[directory]]["secret"]["secretName"], "cbloss-tls")
            self.assertIn(key, ("tls.crt", "tls.key", "ca.crt"))

    def test_probes_use_the_health_check_script(self):
        # Native gRPC probes cannot speak TLS.
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertNotIn("grpc", self.container[probe])
            self.assertEqual(self.container[probe]["exec"]["command"], ["cbloss-healthcheck"])
        self.assertEqual({e["name"]: e["value"] for e in self.container["env"]}
                         ["CBLOSS_TLS_SERVER_NAME"], "localhost")


def sidecar_objects():
    objects = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "deploy", "k8s", "sidecar"))):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for doc in yaml.safe_load_all(read("deploy", "k8s", "sidecar", name)):
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def flag_values(args):
    """{name: [values]} of --name=value / --name arguments (a bare --name is
    "true", as absl reads it)."""
    values = {}
    for name, a in zip(flag_names(args), args):
        values.setdefault(name, []).append(a.split("=", 1)[1] if "=" in a else "true")
    return values


class KubernetesSidecarTest(unittest.TestCase):
    """deploy/k8s/sidecar: a training Job with cbloss-server as a native
    sidecar, on a Unix socket with shared memory (docs/SHARED_MEMORY.md)."""

    SOCKET = "/var/run/cbloss/cbloss.sock"

    def setUp(self):
        self.objects = sidecar_objects()
        self.job = self.objects[("Job", "cbloss-colocated-training")]
        self.pod = self.job["spec"]["template"]["spec"]
        self.server = self.pod["initContainers"][0]
        self.trainer = self.pod["containers"][0]
        self.volumes = {v["name"]: v for v in self.pod["volumes"]}

    def mounts(self, container):
        return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    def test_kustomization_lists_every_file_and_stands_alone(self):
        k = yaml.safe_load(read("deploy", "k8s", "sidecar", "kustomization.yaml"))
        files = sorted(n for n in os.listdir(os.path.join(ROOT, "deploy", "k8s", "sidecar"))
                       if n.endswith(".yaml") and n != "kustomization.yaml")
        self.assertEqual(sorted(k["resources"]), files)
        self.assertEqual(list(self.objects), [("Job", "cbloss-colocated-training")])

    def test_server_is_a_native_sidecar_and_the_trainer_the_only_container(self):
        self.assertEqual(len(self.pod["initContainers"]), 1)
        self.assertEqual(len(self.pod["containers"]), 1)
        self.assertEqual(self.server["restartPolicy"], "Always")
        self.assertEqual(self.pod["restartPolicy"], "Never")
        self.assertEqual(self.server["image"],
                         k8s_objects()[("Deployment", "cbloss")]["spec"]["template"]["spec"]
                         ["containers"][0]["image"])

    def test_server_flags_are_real_and_listen_only_on_the_socket(self):
        args = self.server["args"]
        known = server_flags()
        for name in flag_names(args):
            self.assertIn(name, known)
        values = flag_values(args)
        self.assertEqual(values["listen"], ["unix:" + self.SOCKET])
        self.assertEqual(values["allow_shared_memory"], ["true"])
        self.assertEqual(values["unix_socket_mode"], ["0660"])
        # No gRPC port: only metrics listen on TCP.
        self.assertEqual([p["name"] for p in self.server["ports"]], ["metrics"])
        grace = float(values["shutdown_grace_seconds"][0])
        self.assertLess(grace, self.pod["terminationGracePeriodSeconds"])

    def test_store_tokens_and_datasets_as_the_base_deployment(self):
        base = k8s_objects()
        base_pod = base[("Deployment", "cbloss")]["spec"]["template"]["spec"]
        base_args = flag_values(base_pod["containers"][0]["args"])
        values = flag_values(self.server["args"])
        for flag in ("store_file", "datasets_file", "admin_token_file", "data_dir"):
            self.assertEqual(values[flag], base_args[flag], flag)
        base_volumes = {v["name"]: v for v in base_pod["volumes"]}
        base_mounts = self.mounts(base_pod["containers"][0])
        mounts = self.mounts(self.server)
        for flag in ("store_file", "datasets_file", "admin_token_file"):
            directory = os.path.dirname(values[flag][0])
            self.assertEqual(self.volumes[mounts[directory]],
                             base_volumes[base_mounts[directory]], flag)
        # The ConfigMap it names is the base's.
        cm = self.volumes[mounts["/etc/cbloss/datasets"]]["configMap"]["name"]
        self.assertIn(("ConfigMap", cm), base)

    def test_both_containers_run_as_the_same_non_root_uid(self):
        pod_sc = self.pod["securityContext"]
        self.assertTrue(pod_sc["runAsNonRoot"])
        self.assertEqual(pod_sc["fsGroup"], pod_sc["runAsGroup"])
        uids = set()
        for c in (self.server, self.trainer):
            sc = c.get("securityContext", {})
            uids.add(sc.get("runAsUser", pod_sc["runAsUser"]))
            self.assertFalse(sc["allowPrivilegeEscalation"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(uids, {10001})  # the image's user (docker/Dockerfile)

    def test_socket_dir_and_dev_shm_are_shared_memory_backed_volumes(self):
        server_mounts, trainer_mounts = self.mounts(self.server), self.mounts(self.trainer)
        for path in (os.path.dirname(self.SOCKET), "/dev/shm"):
            self.assertEqual(server_mounts[path], trainer_mounts[path], path)
            volume = self.volumes[server_mounts[path]]
            self.assertEqual(volume["emptyDir"]["medium"], "Memory", path)
            self.assertIn("sizeLimit", volume["emptyDir"], path)
        # The pod's shared memory holds what the server may map.
        shm_limit = self.volumes[server_mounts["/dev/shm"]]["emptyDir"]["sizeLimit"]
        self.assertEqual(shm_limit, "1Gi")
        self.assertEqual(flag_values(self.server["args"])["max_shared_memory_mb"], ["1024"])

    def test_trainer_target_and_probes_name_the_socket(self):
        env = {e["name"]: e["value"] for e in self.trainer["env"]}
        self.assertEqual(env["CBLOSS_TARGET"], "unix:" + self.SOCKET)
        for probe in ("startupProbe", "livenessProbe"):
            command = self.server[probe]["exec"]["command"]
            self.assertEqual(command[0], "cbloss")
            self.assertEqual(command[command.index("--target") + 1], "unix:" + self.SOCKET)
            self.assertEqual(command[-1], "health")
            self.assertNotIn("grpc", self.server[probe])


class SidecarOnARealServerTest(ServerTestCase):
    """The sidecar's server flags and probe command, run: the socket path
    moved into a temporary directory, the rest as in the manifest."""

    def test_probe_against_the_sidecar_flags(self):
        job = sidecar_objects()[("Job", "cbloss-colocated-training")]
        pod = job["spec"]["template"]["spec"]
        server_c, trainer = pod["initContainers"][0], pod["containers"][0]
        # A short directory of its own: a socket path has at most 107 bytes.
        socket_dir = tempfile.mkdtemp(prefix="cbloss-sock-")
        self.addCleanup(shutil.rmtree, socket_dir, True)
        socket_path = os.path.join(socket_dir, "cbloss.sock")

        def moved(text):
            return text.replace(KubernetesSidecarTest.SOCKET, socket_path)

        keep = ("listen", "unix_socket_mode", "allow_shared_memory", "max_shared_memory_mb")
        flags = [moved(a) for a, n in zip(server_c["args"], flag_names(server_c["args"]))
                 if n in keep]
        server = self.start_server(extra_flags=flags)
        self.assertEqual(oct(os.stat(socket_path).st_mode & 0o777), "0o660")
        probe = [CLI] + [moved(a) for a in server_c["startupProbe"]["exec"]["command"][1:]]
        r = subprocess.run(probe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        # The trainer's CBLOSS_TARGET reaches it too (any CLI command).
        env = dict(os.environ, CBLOSS_TARGET=moved(
            {e["name"]: e["value"] for e in trainer["env"]}["CBLOSS_TARGET"]))
        r = subprocess.run([CLI, "health"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        server.stop()
        r = subprocess.run(probe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 15, r.stderr)  # UNAVAILABLE + 1
        self.assertFalse(os.path.exists(socket_path))  # removed on exit


class HealthcheckScriptTest(ServerTestCase):
    def run_check(self, env_extra):
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(CLI) + os.pathsep + env.get("PATH", "")
        env.update(env_extra)
        return subprocess.run([os.path.join(ROOT, "docker", "healthcheck.sh")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=60)

    def test_plaintext_and_dead_server(self):
        server = self.start_server(datasets_file=SAMPLE_DATASETS_FILE)
        r = self.run_check({"CBLOSS_HEALTH_TARGET": server.target})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "SERVING")
        target = server.target
        server.stop()
        r = self.run_check({"CBLOSS_HEALTH_TARGET": target})
        self.assertEqual(r.returncode, 15, r.stderr)  # UNAVAILABLE + 1

    def test_mutual_tls(self):
        certs = make_certificates(self.tmpdir())
        server = ProdServer(self.tmpdir(), name="tls",
                            credentials=channel_credentials(certs, client="client"),
                            extra_flags=["--tls_cert=" + certs["server"],
                                         "--tls_key=" + certs["server.key"],
                                         "--tls_client_ca=" + certs["ca"]])
        self._servers.append(server)
        server.start()
        env = {"CBLOSS_HEALTH_TARGET": server.target, "CBLOSS_TLS_CA": certs["ca"],
               "CBLOSS_TLS_CERT": certs["client"], "CBLOSS_TLS_KEY": certs["client.key"]}
        r = self.run_check(env)
        self.assertEqual(r.returncode, 0, r.stderr)
        del env["CBLOSS_TLS_CERT"], env["CBLOSS_TLS_KEY"]
        r = self.run_check(env)
        self.assertEqual(r.returncode, 15, r.stderr)


if __name__ == "__main__":
    unittest.main()
