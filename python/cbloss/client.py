"""Client: the LossService over one gRPC channel (API.md section 1).

Example::

    client = cbloss.Client("127.0.0.1:50051", timeout=10)
    client.put_dataset("cifar10-lt", counts, beta=0.9999, loss_type="focal")
    w = client.class_weights(dataset="cifar10-lt")            # numpy float64 [C]
    r = client.compute_loss(logits, labels, dataset="cifar10-lt")
    r.loss, r.gradient                                       # float, numpy [B, C]

    with client.stream_loss() as stream:                     # one StreamLoss call
        for logits, labels in batches:
            r = stream.compute_loss(logits, labels, dataset="cifar10-lt")

    client.create_run("lvis-seesaw-1", num_classes=1203, loss_type="seesaw")
    r = client.compute_loss(logits, labels, run="lvis-seesaw-1", accumulate=True)
    r.run_version                                            # the run's version after it

A Client is safe to use from several threads at once; a LossStream
serialises its requests (one outstanding request at a time).
Every failed call raises CblossError (code + details).
"""

import json
import operator
import os
import queue
import threading
import time

import grpc
import numpy as np

from cbloss import _health, enums, messages, tensors
from cbloss import shared_memory as _shm
from cbloss._proto import cbloss_pb2 as pb
from cbloss._proto import cbloss_pb2_grpc as pb_grpc
from cbloss.errors import CblossError, status_code_from_number
from cbloss.messages import Dataset, LossConfig, LossResult, Run, SharedMemoryRegion

DEFAULT_TARGET = "127.0.0.1:50051"

# The service answers with up to --max_message_mb (64 MiB by default); grpc's
# Python default receive limit (4 MiB) would cut large gradients.
_DEFAULT_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)

# The clients' retry policy (proto/cbloss/v1/service_config.json, the file the
# C++ client embeds; the build copies it into this package): idempotent calls
# retried on UNAVAILABLE, writes never (a retried AddClassCounts could count
# twice).
_SERVICE_CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "service_config.json")


def _load_retry_policy(path=_SERVICE_CONFIG_FILE):
    try:
        with open(path) as f:
            return json.load(f)["methodConfig"]
    except (OSError, ValueError, KeyError) as e:
        raise ImportError("cbloss: cannot read the retry policy %s (build the CMake target "
                          "cbloss_python, or `pip install` the python/ folder): %s"
                          % (path, e)) from e


_RETRY_POLICY = _load_retry_policy()


# Options of the channel of accumulating calls (LOSS.md section 11: they are
# not idempotent, so a client never retries them): no service config at all,
# retries off; the load balancing policy is given as a channel argument.
_NO_RETRY_DROPPED_OPTIONS = ("grpc.service_config", "grpc.enable_retries")


def _service_config(load_balancing, retry_unavailable):
    # Round robin (by default) over every address the target resolves to: all
    # replicas behind a headless Service, or ipv4:a,b,c.
    config = {"loadBalancingConfig": [{load_balancing: {}}]}
    if retry_unavailable:
        config["methodConfig"] = _RETRY_POLICY
    return json.dumps(config)


def _set_source(request, dataset, class_counts, run=None):
    if run is not None and dataset is None and class_counts is None:
        return  # the run's dataset (or no static counts at all)
    if (dataset is None) == (class_counts is None):
        if run is not None:
            raise ValueError("give at most one of dataset= and class_counts= with run=")
        raise ValueError("give exactly one of dataset= and class_counts=")
    if dataset is not None:
        request.dataset = dataset
    else:
        request.class_counts.counts.extend(tensors.int64_list(class_counts, "class_counts"))


def build_loss_request(logits, labels=None, targets=None, **kwargs):
    """The ComputeLossRequest of Client.compute_loss (same arguments), with
    the logits as bytes; keyword arguments other than compute_loss's are
    LossConfig fields (cbloss.messages.LOSS_PARAMETERS)."""
    return _build_request(lambda: tensors.encode_logits(logits), labels, targets, **kwargs)


def _build_request(logits_tensor, labels=None, targets=None, *, dataset=None,
                   class_counts=None, config=None, sample_weights=None, upstream=None,
                   want_gradient=True, want_per_sample_losses=False, gradient_dtype=None,
                   expected_dataset_version=None, epoch=None, run=None, accumulate=False,
                   **loss_params):
    """build_loss_request with the logits' Tensor message from
    logits_tensor() (bytes, or a shared-memory reference)."""
    messages.check_loss_keywords("build_loss_request", loss_params)
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels and targets")
    request = pb.ComputeLossRequest(
        want_gradient=bool(want_gradient),
        want_per_sample_losses=bool(want_per_sample_losses),
        gradient_dtype=enums.dtype_number(gradient_dtype))
    _set_source(request, dataset, class_counts, run)
    if run is not None:
        request.run = run
    # Sent as asked: the service answers `accumulate` without `run` with
    # INVALID_ARGUMENT.
    request.accumulate = bool(accumulate)
    request.config.CopyFrom(messages.merged_config(config, loss_params).to_proto())
    request.logits.CopyFrom(logits_tensor())
    if labels is not None:
        request.labels.extend(tensors.int32_list(labels, "labels"))
    else:
        request.targets.CopyFrom(tensors.encode_targets(targets))
    if sample_weights is not None:
        request.sample_weights.extend(tensors.float_list(sample_weights, "sample_weights"))
    if upstream is not None:
        request.upstream.extend(tensors.float_list(upstream, "upstream"))
    if expected_dataset_version is not None:
        request.expected_dataset_version = expected_dataset_version
    if epoch is not None:
        request.epoch = _epoch(epoch)
    return request


def _epoch(value):
    """The int32 of an epoch (int, numpy or 0-d torch integer); TypeError /
    ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError("epoch must be an integer, got %r" % (value,))
    try:
        epoch = operator.index(value)
    except TypeError:
        raise TypeError("epoch must be an integer, got %r" % (value,)) from None
    if not -2 ** 31 <= epoch < 2 ** 31:
        raise ValueError("epoch = %d is outside int32" % epoch)
    return epoch


def loss_result(response):
    """LossResult of a ComputeLossResponse."""
    gradient = gradient_dtype = None
    tensor = response.gradient if response.HasField("gradient") else None
    if tensor is not None and (tensor.data or len(tensor.float_data) or list(tensor.shape)):
        gradient, gradient_dtype = tensors.decode_tensor(tensor)
    else:
        tensor = None
    per_sample = None
    if len(response.per_sample_losses):
        per_sample = np.asarray(response.per_sample_losses, dtype=np.float32)
    return LossResult(
        loss=float(response.loss),
        gradient=gradient,
        per_sample_losses=per_sample,
        class_weights=np.asarray(response.class_weights, dtype=np.float64),
        num_samples=int(response.num_samples),
        resolved_config=LossConfig.from_proto(response.resolved_config),
        dataset_version=int(response.dataset_version),
        gradient_dtype=gradient_dtype,
        gradient_tensor=tensor,
        run_version=int(response.run_version))


def _set_shared_gradient(result, area, placement):
    """Puts the gradient the server wrote into `area` into `result`: a view
    for float32 and float16, float32 values for bfloat16."""
    view = area.gradient_view(placement["shape"], placement["logits_dtype"],
                              placement["gradient_dtype"])
    if placement["gradient_dtype"] == pb.DTYPE_BFLOAT16:
        result.gradient, result.gradient_dtype = tensors.bfloat16_bits_to_float32(view), "bfloat16"
    else:
        result.gradient = view
        result.gradient_dtype = "float16" if placement["gradient_dtype"] == pb.DTYPE_FLOAT16 \
            else "float32"
        result.shared_memory = True


def tls_credentials(root_ca=None, cert=None, key=None):
    """grpc.ChannelCredentials for a TLS server, from PEM files.

    Args:
      root_ca: file of the CA that signs the server's certificate (None: the
        system's roots).
      cert, key: this client's certificate and private key, for servers
        started with --tls_client_ca (mutual TLS); both or neither.
    """
    if (cert is None) != (key is None):
        raise ValueError("cert and key come together")

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(root_ca),
                                        private_key=read(key),
                                        certificate_chain=read(cert))


def read_token_file(path):
    """The token in `path`, without its trailing newline."""
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise ValueError("token file %s is empty" % path)
    return token


class Client:
    """The cbloss LossService at `target`.

    Args:
      target: "HOST:PORT"; None means $CBLOSS_TARGET, else 127.0.0.1:50051.
      timeout: default deadline of every unary call, in seconds (None: none).
      options: extra gRPC channel options, [(key, value)], applied after the
        client's defaults (no client-side message size limit).
      credentials: a grpc.ChannelCredentials (e.g. grpc.ssl_channel_credentials())
        for a TLS channel; None for plaintext.
      metadata: [(key, value)] sent with every call (e.g. an authorization
        header).
      channel: an existing grpc.Channel to use instead of opening one (the
        Client does not close it).
      token: bearer token sent with every call as ``authorization: Bearer
        <token>`` (servers with --admin_token_file / --compute_token_file);
        None means $CBLOSS_TOKEN if set. Use it with TLS credentials.
      load_balancing: gRPC policy over the target's addresses ("round_robin",
        or "pick_first").
      retry_unavailable: retry GetDataset, ListDatasets, GetClassWeights,
        GetRun, ListRuns and ComputeLoss on UNAVAILABLE (up to 5 attempts), so
        a replica that dies mid-call costs a retry on another one.
      shared_memory: None (default): use shared memory for a "unix:" target
        if the server allows it, else bytes, silently; True: always (a
        refusal raises CblossError); False: never.
      shared_memory_prefix: start of the shared-memory objects' keys (the
        server's --shared_memory_prefix).

    Shared memory (API.md section 5.3). Over a Unix socket to a server
    started with --allow_shared_memory, compute_loss (and LossStream's)
    copies the logits once into one shared-memory region of this client
    and sends a reference; the server writes the gradient into the region,
    and the LossResult's gradient is a numpy VIEW of it (`shared_memory`
    True), valid until the next call of this client that uses the region:
    copy it to keep it. The region is made on first use, grown when a batch
    does not fit, and its object is unlinked from /dev/shm at once. If the
    server has lost the region (it restarted), the call registers a new one
    and is sent again, once. While one thread uses the region, other threads'
    calls send bytes. A bfloat16 gradient is converted to float32 (a copy:
    numpy has no bfloat16).

    Accumulating calls (compute_loss(..., accumulate=True)) are never
    retried, whatever retry_unavailable says: they change a run's statistics
    and are not idempotent (LOSS.md section 11). They go over a second
    channel to the same target without the retry policy (grpc.enable_retries
    0), opened by the first such call. With channel= the client cannot open
    one, and accumulating calls use the given channel: give it no retry
    policy.

    TLS: ``credentials=cbloss.tls_credentials(root_ca="ca.pem")``, plus
    ``cert=`` and ``key=`` for mutual TLS.
    """

    def __init__(self, target=None, *, timeout=None, options=None, credentials=None,
                 metadata=None, channel=None, token=None, load_balancing="round_robin",
                 retry_unavailable=True, shared_memory=None,
                 shared_memory_prefix=_shm.DEFAULT_PREFIX):
        self.target = target or os.environ.get("CBLOSS_TARGET") or DEFAULT_TARGET
        self.timeout = timeout
        if token is None:
            token = os.environ.get("CBLOSS_TOKEN") or None
        metadata = list(metadata or ())
        if token is not None:
            token = token.strip()
            if not token:
                raise ValueError("token is empty")
            metadata.append(("authorization", "Bearer " + token))
        self._metadata = tuple(metadata) if metadata else None
        self._owns_channel = channel is None
        self._credentials = credentials
        self._options = list(options or ())
        self._load_balancing = load_balancing
        if channel is None:
            channel = self._open_channel([
                ("grpc.service_config", _service_config(load_balancing, retry_unavailable))
            ] + self._options)
        self._channel = channel
        self._stub = pb_grpc.LossServiceStub(channel)
        # The channel of accumulating calls (no retries), opened on first use.
        self._no_retry_lock = threading.Lock()
        self._no_retry_channel = None
        self._no_retry_stub = None if self._owns_channel else self._stub
        if shared_memory not in (None, True, False):
            raise ValueError("shared_memory must be None (auto), True or False; got %r"
                             % (shared_memory,))
        self.shared_memory = shared_memory
        self._shm_prefix = shared_memory_prefix
        # Why this client sends bytes in auto mode (the server refused), or None.
        self._shm_refusal = None
        self._shm_slot = _shm.SharedMemorySlot()

    # -- plumbing --------------------------------------------------------------

    def _open_channel(self, options):
        opts = list(_DEFAULT_OPTIONS) + list(options)
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, options=opts)
        return grpc.insecure_channel(self.target, options=opts)

    def _stub_for(self, request):
        """The stub that sends ComputeLossRequest `request`: an accumulating
        one goes over the channel without retries (opened here on first use),
        any other over the main channel."""
        if not request.accumulate or self._channel is None:
            return self._stub  # (after close(): fails as a closed channel does)
        with self._no_retry_lock:
            if self._no_retry_stub is None:
                self._no_retry_channel = self._open_channel(
                    [("grpc.enable_retries", 0), ("grpc.lb_policy_name", self._load_balancing)]
                    + [option for option in self._options
                       if option[0] not in _NO_RETRY_DROPPED_OPTIONS])
                self._no_retry_stub = pb_grpc.LossServiceStub(self._no_retry_channel)
            return self._no_retry_stub

    def close(self):
        """Unregisters the client's shared-memory region and closes the
        channels (if this client opened them)."""
        self._shm_slot.close()
        if self._owns_channel and self._channel is not None:
            self._channel.close()
        self._channel = None
        with self._no_retry_lock:
            if self._no_retry_channel is not None:
                self._no_retry_channel.close()
                self._no_retry_channel = None
                self._no_retry_stub = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "cbloss.Client(%r)" % self.target

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise CblossError.from_rpc_error(e) from None

    def health(self, service="", timeout=None):
        """grpc.health.v1 status of `service` ("" = the whole server):
        "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN"."""
        check = self._channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.HealthCheckRequest.SerializeToString,
            response_deserializer=_health.HealthCheckResponse.FromString)
        request = _health.HealthCheckRequest(service=service)
        return _health.status_name(self._call(check, request, timeout))

    def wait_until_serving(self, timeout=10.0):
        """Polls health until the server is SERVING; raises CblossError
        (DEADLINE_EXCEEDED) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            left = deadline - time.monotonic()
            try:
                status = self.health(timeout=max(0.05, min(1.0, left)))
                if status == "SERVING":
                    return
                last = status
            except CblossError as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise CblossError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  "%s not SERVING after %.1f s (last: %s)"
                                  % (self.target, timeout, last))
            time.sleep(0.05)

    # -- datasets --------------------------------------------------------------

    def put_dataset(self, name, class_counts, *, class_names=None, expected_version=None,
                    timeout=None, **defaults):
        """Creates or replaces dataset `name` with counts n_j and default loss
        parameters: `defaults` are LossConfig fields (loss_type, beta, gamma,
        reduction, weighting, ignore_index, tau, max_margin, scale,
        drw_start_epoch, ...; None = unset). expected_version: None =
        unconditional, 0 = must not exist yet, N = must be at version N (else
        CblossError ABORTED). Returns the stored Dataset."""
        messages.check_loss_keywords("Client.put_dataset", defaults)
        dataset = pb.Dataset(name=name,
                             class_counts=tensors.int64_list(class_counts, "class_counts"),
                             class_names=list(class_names or ()))
        dataset.defaults.CopyFrom(messages.merged_config(None, defaults).to_proto())
        request = pb.PutDatasetRequest(dataset=dataset)
        if expected_version is not None:
            request.expected_version = expected_version
        return Dataset.from_proto(self._call(self._stub.PutDataset, request, timeout))

    def get_dataset(self, name, *, timeout=None):
        """The Dataset `name` (CblossError NOT_FOUND if absent)."""
        return Dataset.from_proto(
            self._call(self._stub.GetDataset, pb.GetDatasetRequest(name=name), timeout))

    def list_datasets(self, *, page_size=0, timeout=None):
        """Every dataset, ordered by name; fetches pages of `page_size`
        (0 = server default) as the iteration goes."""
        token = ""
        while True:
            page = self._call(self._stub.ListDatasets,
                              pb.ListDatasetsRequest(page_size=page_size, page_token=token),
                              timeout)
            for dataset in page.datasets:
                yield Dataset.from_proto(dataset)
            token = page.next_page_token
            if not token:
                return

    def delete_dataset(self, name, *, expected_version=None, timeout=None):
        """Deletes dataset `name` (NOT_FOUND if absent; ABORTED if not at
        expected_version)."""
        request = pb.DeleteDatasetRequest(name=name)
        if expected_version is not None:
            request.expected_version = expected_version
        self._call(self._stub.DeleteDataset, request, timeout)

    def add_counts(self, name, deltas=None, labels=None, *, timeout=None):
        """Atomically adds `deltas` (C entries) to the counts and/or one
        sample per entry of `labels`. Returns the updated Dataset."""
        if deltas is None and labels is None:
            raise ValueError("give deltas and/or labels")
        request = pb.AddClassCountsRequest(name=name)
        if deltas is not None:
            request.deltas.extend(tensors.int64_list(deltas, "deltas"))
        if labels is not None:
            request.labels.extend(tensors.int32_list(labels, "labels"))
        return Dataset.from_proto(self._call(self._stub.AddClassCounts, request, timeout))

    def class_weights(self, dataset=None, class_counts=None, *, beta=None, weighting=None,
                      timeout=None):
        """The normalised class weights w of LOSS.md section 2, float64 [C]."""
        request = pb.GetClassWeightsRequest()
        _set_source(request, dataset, class_counts)
        request.config.CopyFrom(
            messages.merged_config(None, dict(beta=beta, weighting=weighting)).to_proto())
        response = self._call(self._stub.GetClassWeights, request, timeout)
        return np.asarray(response.weights, dtype=np.float64)

    # -- runs (LOSS.md section 11) ----------------------------------------------

    def create_run(self, name, dataset=None, num_classes=0, *, timeout=None, **loss_defaults):
        """Creates run `name`: statistics all zero, version 1. Returns the Run.

        Args:
          dataset: the dataset whose counts and defaults its requests use
            (None: no dataset; then num_classes >= 1 is needed).
          num_classes: C; 0 with a dataset means the dataset's C, otherwise
            it must equal it.
          loss_defaults: LossConfig fields (loss_type="seesaw", seesaw_p=...;
            None = unset), over the dataset's defaults.

        CblossError ALREADY_EXISTS if the name is taken, NOT_FOUND if the
        dataset is absent. Needs the admin token on servers with token files.
        """
        messages.check_loss_keywords("Client.create_run", loss_defaults)
        run = pb.Run(name=name, num_classes=num_classes)
        if dataset is not None:
            run.dataset = dataset
        run.defaults.CopyFrom(messages.merged_config(None, loss_defaults).to_proto())
        return Run.from_proto(
            self._call(self._stub.CreateRun, pb.CreateRunRequest(run=run), timeout))

    def get_run(self, name, *, timeout=None):
        """The Run `name` with its statistics (CblossError NOT_FOUND if absent)."""
        return Run.from_proto(self._call(self._stub.GetRun, pb.GetRunRequest(name=name), timeout))

    def list_runs(self, dataset=None, *, page_size=0, timeout=None):
        """A list of every run (those of `dataset` if given), ordered by name,
        read in pages of `page_size` (0 = server default); `timeout` bounds
        each page's call."""
        runs = []
        token = ""
        while True:
            request = pb.ListRunsRequest(page_size=page_size, page_token=token)
            if dataset is not None:
                request.dataset = dataset
            page = self._call(self._stub.ListRuns, request, timeout)
            runs.extend(Run.from_proto(run) for run in page.runs)
            token = page.next_page_token
            if not token:
                return runs

    def delete_run(self, name, expected_version=None, *, timeout=None):
        """Deletes run `name` (NOT_FOUND if absent; ABORTED if not at
        expected_version)."""
        request = pb.DeleteRunRequest(name=name)
        if expected_version is not None:
            request.expected_version = expected_version
        self._call(self._stub.DeleteRun, request, timeout)

    # -- shared memory (API.md section 5.3) ------------------------------------

    def register_shared_memory(self, name, key, byte_size, offset=0, *, timeout=None):
        """Registers [offset, offset + byte_size) of the POSIX shared-memory
        object `key` (its shm_open name, under the server's
        --shared_memory_prefix, owned by this process's uid) as region
        `name`; returns the SharedMemoryRegion. Needs a unix: target and a
        server with --allow_shared_memory. compute_loss does this by itself;
        this is for callers that place tensors themselves (Tensor.shm)."""
        request = pb.RegisterSharedMemoryRequest(name=name, key=key, offset=offset,
                                                 byte_size=byte_size)
        return SharedMemoryRegion.from_proto(
            self._call(self._stub.RegisterSharedMemory, request, timeout))

    def unregister_shared_memory(self, name="", *, timeout=None):
        """Unregisters region `name` ("" = every region of this uid);
        CblossError NOT_FOUND if there is none of that name."""
        self._call(self._stub.UnregisterSharedMemory,
                   pb.UnregisterSharedMemoryRequest(name=name), timeout)

    def list_shared_memory(self, *, timeout=None):
        """This uid's regions on the server, ordered by name."""
        response = self._call(self._stub.ListSharedMemory, pb.ListSharedMemoryRequest(),
                              timeout)
        return [SharedMemoryRegion.from_proto(r) for r in response.regions]

    @property
    def shared_memory_region(self):
        """The name of the region compute_loss uses, or None (none yet, or
        bytes are sent)."""
        area = self._shm_slot.area
        return area.region if area is not None and area.map is not None else None

    def _uses_shared_memory(self):
        if self.shared_memory is None:
            return self._shm_refusal is None and self.target.startswith("unix:")
        return self.shared_memory

    def _area_for(self, slot, needed):
        """slot's area, made or grown to hold `needed` bytes; None if this
        client sends bytes (the server refused, in auto mode)."""
        area = slot.area
        if area is not None and area.map is not None and area.byte_size >= needed:
            return area
        size = _shm.SharedMemoryArea.grown_size(needed, area.byte_size if area else 0)
        try:
            new = _shm.SharedMemoryArea(
                lambda name, key, byte_size: self.register_shared_memory(name, key, byte_size),
                # Bounded: close() must not hang on a server that went away.
                lambda name: self.unregister_shared_memory(name, timeout=5),
                size, self._shm_prefix)
        except (CblossError, OSError) as e:
            refused = isinstance(e, OSError) or e.code in _shm.REFUSALS
            if self.shared_memory is None and refused:
                self._shm_refusal = e
                slot.replace(None)
                return None
            raise
        slot.replace(new)
        return new

    def _compute(self, slot, send, logits, labels, targets, kwargs):
        """(LossResult, placement) of one loss request built from
        compute_loss's arguments and sent by send(request) -> response.

        With shared memory, the logits are copied into slot's area, the
        gradient is written there, and the result's gradient is a view of
        it; placement is then {"area", "shape", "logits_dtype",
        "gradient_dtype"} (None when bytes were sent). A FAILED_PRECONDITION
        naming the region (the server lost it) registers a new one and sends
        again, once."""
        if not self._uses_shared_memory() or not slot.lock.acquire(blocking=False):
            return loss_result(send(build_loss_request(logits, labels, targets, **kwargs))), None
        try:
            for attempt in range(2):
                placement = {}
                request = _build_request(
                    lambda: self._place_logits(slot, logits, kwargs, placement),
                    labels, targets, **kwargs)
                area = placement.get("area")
                if area is not None and request.want_gradient:
                    request.gradient_shm.CopyFrom(area.gradient_ref(
                        placement["shape"], placement["logits_dtype"],
                        placement["gradient_dtype"]))
                try:
                    response = send(request)
                except CblossError as e:
                    if attempt == 0 and area is not None and area.names_region_in(e):
                        slot.replace(None)
                        continue
                    raise
                result = loss_result(response)
                if area is None:
                    return result, None
                if request.want_gradient:
                    _set_shared_gradient(result, area, placement)
                return result, placement
        finally:
            slot.lock.release()

    def _place_logits(self, slot, logits, kwargs, placement):
        """The logits' Tensor message: a reference to them in slot's area
        (copied there), or their bytes if this client sends bytes."""
        shape, wire, write = _shm.logits_layout(logits)
        gradient_dtype = enums.dtype_number(kwargs.get("gradient_dtype")) or pb.DTYPE_FLOAT32
        area = self._area_for(slot, _shm.SharedMemoryArea.size_for(
            shape[0], shape[1], wire, gradient_dtype))
        if area is None:
            return tensors.encode_logits(logits)
        write(area)
        placement.update(area=area, shape=shape, logits_dtype=wire,
                         gradient_dtype=gradient_dtype)
        return pb.Tensor(dtype=wire, shape=list(shape), shm=area.logits_ref(shape, wire))

    # -- losses ----------------------------------------------------------------

    def compute_loss(self, logits, labels=None, targets=None, *, timeout=None, **kwargs):
        """Loss (and gradient) of one batch; returns a LossResult.

        Args:
          logits: [B, C] numpy array or torch tensor; float32, float16 and
            bfloat16 are sent as they are, other types as float32.
          labels: B class indices (labels mode), or
          targets: [B, C] values in [0, 1] (targets mode; sigmoid and focal).
          dataset / class_counts: exactly one: a stored dataset's name, or C
            counts given inline; with run=, at most one (none: the run's
            dataset).
          loss_type, reduction, weighting, beta, gamma, ignore_index, tau,
          max_margin, scale, drw_start_epoch (every LossConfig field):
            overrides of the dataset's defaults (None = unset); enum names as
            in cbloss.enums.
          config: a cbloss.LossConfig to start from (the keywords win).
          sample_weights: B weights s_i >= 0. upstream: B values u_i
            (reduction "none" only).
          want_gradient (default True), want_per_sample_losses (default False).
          gradient_dtype: None/"float32", "float16"/"f16", "bfloat16"/"bf16".
          expected_dataset_version: ABORTED if the dataset is at another one.
          epoch: training epoch, for deferred re-weighting: with
            drw_start_epoch = E (in the request or the dataset's defaults),
            epoch < E uses class weights 1, epoch >= E the configured ones;
            None (no epoch sent) = the configured ones.
          run: name of a run (LOSS.md section 11) whose statistics the
            request reads (SEESAW's seen counts, EQL_V2's P and Q).
          accumulate: also add this request to the run's statistics (needs
            run=). Such a call is sent once, never retried: if it fails, it
            may or may not have been applied, and the run's version
            (get_run) tells which.

        The result's run_version is the run's version after this request.
        Over shared memory (see the class), the gradient is a view valid
        until this client's next call.
        """
        return self._compute(
            self._shm_slot,
            lambda request: self._call(self._stub_for(request).ComputeLoss, request, timeout),
            logits, labels, targets, kwargs)[0]

    def send(self, request, *, timeout=None):
        """Sends one ComputeLossRequest (e.g. from build_loss_request) and
        returns its LossResult: compute_loss for a request built beforehand,
        the unary twin of LossStream.send. CblossError if the call fails.
        An accumulating request is sent once (see compute_loss)."""
        return loss_result(self._call(self._stub_for(request).ComputeLoss, request, timeout))

    def stream_loss(self, *, timeout=None):
        """Opens a StreamLoss call: a LossStream with compute_loss(...) taking
        the arguments of Client.compute_loss. `timeout` bounds the whole
        stream (None: no deadline)."""
        return LossStream(self, timeout=timeout)


_END = object()


class LossStream:
    """One open StreamLoss call: compute_loss() sends one request and waits
    for its response, so results come back in order. A request the service
    rejects raises CblossError and the stream goes on; a broken stream
    (transport error, deadline) raises CblossError and `broken` becomes True.
    Thread-safe (requests are serialised). Close it, or use `with`."""

    def __init__(self, client, timeout=None):
        self._client = client
        self._requests = queue.Queue()
        self._lock = threading.Lock()
        self.broken = False
        self.closed = False
        self._responses = client._stub.StreamLoss(
            iter(self._requests.get, _END), timeout=timeout, metadata=client._metadata)

    def compute_loss(self, logits, labels=None, targets=None, **kwargs):
        """Same arguments and result as Client.compute_loss (no timeout);
        shared memory as the client's (its region)."""
        return self._client._compute(self._client._shm_slot, self._exchange,
                                     logits, labels, targets, kwargs)[0]

    def send(self, request):
        """Sends one ComputeLossRequest and returns its LossResult."""
        return loss_result(self._exchange(request))

    def _exchange(self, request):
        """The response to `request`; CblossError for an error response."""
        with self._lock:
            if self.closed or self.broken:
                raise CblossError(grpc.StatusCode.FAILED_PRECONDITION,
                                  "the loss stream is %s" % ("closed" if self.closed else "broken"))
            self._requests.put(request)
            try:
                response = next(self._responses)
            except StopIteration:
                self.broken = True
                raise CblossError(grpc.StatusCode.UNAVAILABLE,
                                  "the server ended the loss stream") from None
            except grpc.RpcError as e:
                self.broken = True
                raise CblossError.from_rpc_error(e) from None
        if response.error_code:
            raise CblossError(status_code_from_number(response.error_code),
                              response.error_message)
        return response

    def close(self):
        """Half-closes the stream and waits for the server to end it."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._requests.put(_END)
            if not self.broken:
                try:
                    for _ in self._responses:
                        pass
                except grpc.RpcError:
                    pass

    def cancel(self):
        """Ends the stream at once (no waiting)."""
        self.closed = True
        self._responses.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
