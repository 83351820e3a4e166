"""PyTorch loss modules whose value and gradient come from cbloss.

Example::

    from cbloss.torch import ClassBalancedLoss
    criterion = ClassBalancedLoss(target="127.0.0.1:50051",
                                  class_counts=[5000, 2997, 1796, 1077, 645],
                                  loss_type="focal", beta=0.9999, gamma=2.0)
    loss = criterion(model(x), y)      # a scalar tensor
    loss.backward()                    # dL/dlogits is the service's gradient

How backward works. The forward pass asks the service for the loss and the
analytic gradient G = dL/dz in one call (one request per forward) and keeps G;
backward returns grad_output * G. For the scalar reductions this is the chain
rule as is. For reduction "none" the module returns the per-sample losses l_i
and the forward requests G with upstream u = 1, i.e. row i of G is dl_i/dz_i
(each l_i depends on row i of the logits only, for every loss type of
LOSS.md); backward scales row i by grad_output[i], which is exactly
sum_k grad_output[k] * dl_k/dz. To keep that exact in 16-bit, for "none" the
gradient is requested in float32, scaled in float32 and rounded once to the
logits' dtype. The alternative (a second request in backward with upstream =
grad_output) would cost a second call and could see a dataset that changed
between forward and backward.

Only the logits receive a gradient (targets and sample weights are data).
The gradient is requested only when the logits require grad and grad mode is
on, so evaluation under torch.no_grad() is a loss-only call.

Logits in float32, float16 or bfloat16 are sent as they are and, for the
scalar reductions, the gradient comes back in the same dtype; float64 logits
are sent as float32 (what the service computes on). CUDA tensors are copied
to the CPU and the gradient is moved back to the logits' device and dtype.
The returned loss is float32 for 16-bit logits (the logits' dtype otherwise),
on the logits' device.

Shared memory (API.md section 5.3). For a ``unix:`` target whose server has
--allow_shared_memory, each module keeps one shared-memory region of its own
(made on the first forward, grown when a batch does not fit, re-registered
if the server restarted): the logits are copied into it once and the server
writes the gradient there. The gradient is then copied once, in forward,
into a tensor the graph owns: autograd may keep the tensor backward returns
as ``.grad``, and a graph's backward may come after the module's next
forward (two forwards, one backward), which overwrites the region.
``module.last_result.gradient`` is the numpy view of the region, valid until
the next forward. ``close()`` unregisters the region. Results are
bit-identical to the bytes path.

Runs (LOSS.md section 11). With ``run="name"`` every forward names the run:
SEESAW reads its seen counts, EQL_V2 its P and Q. The module updates the run
the way BatchNorm updates its running statistics: in training mode
(``criterion.train()``, the state an nn.Module starts in) each forward is an
accumulating request (its labels, and EQL_V2's P and Q, are added; the run's
version grows by 1); in eval mode (``criterion.eval()``) it only reads the
run. As with BatchNorm, torch.no_grad() does not change this: only the mode
does. An accumulating forward is sent once and never retried (it is not
idempotent); if it fails, the run's version tells whether it was applied.
Without ``run`` the mode changes nothing::

    client.create_run("lvis-seesaw-1", num_classes=1203, loss_type="seesaw")
    criterion = ClassBalancedLoss(client, run="lvis-seesaw-1", loss_type=None)
    criterion.train()     # forward accumulates
    criterion.eval()      # forward reads the run only
"""

import threading

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from cbloss import enums, messages
from cbloss._proto import cbloss_pb2 as pb
from cbloss.client import Client, build_loss_request
from cbloss.shared_memory import SharedMemorySlot

__all__ = ["ClassBalancedLoss", "StreamingClassBalancedLoss"]

_WIRE_GRADIENT_DTYPES = {torch.float32: "float32", torch.float16: "float16",
                         torch.bfloat16: "bfloat16"}
_TORCH_DTYPES = {pb.DTYPE_FLOAT32: torch.float32, pb.DTYPE_FLOAT16: torch.float16,
                 pb.DTYPE_BFLOAT16: torch.bfloat16}
_NONE = enums.REDUCTIONS["none"]


class _ServiceLoss(torch.autograd.Function):
    """Autograd node: forward = one service call, backward = its gradient."""

    @staticmethod
    def forward(ctx, logits, compute, want_gradient):
        result, shared_gradient = compute(want_gradient)
        ctx.per_sample = result.resolved_config.reduction == "none"
        ctx.logits_dtype = logits.dtype
        ctx.gradient = None
        if want_gradient:
            # bfloat16 gradients arrive as float32 holding bfloat16 values, so
            # the conversion below is exact; for "none" the gradient stays
            # float32 until backward has scaled it (see the module docstring).
            gradient = shared_gradient if shared_gradient is not None \
                else torch.from_numpy(result.gradient)
            ctx.gradient = gradient.to(
                device=logits.device,
                dtype=torch.float32 if ctx.per_sample else logits.dtype)
            if shared_gradient is not None and ctx.gradient.data_ptr() == gradient.data_ptr():
                # A view of the module's shared-memory region: the next
                # forward overwrites it, while this graph's backward may come
                # later (two forwards, one backward) and autograd may keep
                # the tensor it gets as .grad. One copy, the one the bytes
                # path makes too.
                ctx.gradient = ctx.gradient.clone()
        if ctx.per_sample:
            out = torch.from_numpy(result.per_sample_losses)
        else:
            out = torch.tensor(result.loss, dtype=torch.float64)
        out_dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) \
            else logits.dtype
        return out.to(device=logits.device, dtype=out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        if ctx.gradient is None:
            raise RuntimeError("cbloss: the gradient was not requested in forward "
                               "(the logits did not require grad)")
        if ctx.per_sample:
            scale = grad_output.to(torch.float32).reshape(-1, 1)
            grad = (ctx.gradient * scale).to(ctx.logits_dtype)
        elif float(grad_output) == 1.0:
            grad = ctx.gradient
        else:
            grad = (ctx.gradient.to(torch.float32) * grad_output.to(torch.float32)).to(
                ctx.logits_dtype)
        return grad, None, None


class ClassBalancedLoss(nn.Module):
    """Class-balanced loss computed by the cbloss service (LOSS.md).

    Args:
      client: a cbloss.Client; or
      target: "HOST:PORT" of the service to open one for (default
        $CBLOSS_TARGET, else 127.0.0.1:50051).
      dataset / class_counts: exactly one: a stored dataset's name (its
        counts and defaults are used), or the C class counts inline; with
        run=, at most one.
      loss_type: "softmax", "sigmoid", "focal", "softmax_bce", a loss of
        LOSS.md section 9 ("balanced_softmax", "logit_adjusted", "ldam",
        "softmax_focal") or section 10 ("seesaw", "eql", "eql_v2", "vs");
        None = the run's, then the dataset's default.
      beta, gamma, weighting, ignore_index: as in LOSS.md; None = the
        dataset's default, then LOSS.md's.
      tau (logit_adjusted, >= 0), max_margin (ldam, > 0), scale (ldam, > 0):
        LOSS.md section 9; None = the dataset's default, then 1, 0.5, 30.
      drw_start_epoch: deferred re-weighting (LOSS.md section 9): while
        `module.epoch` < drw_start_epoch every class weight is 1, from then
        on the configured weights apply. None = the dataset's default (no
        deferral if it has none).
      reduction: "mean" (default), "sum", "element_mean", "weighted_mean",
        "none" (per-sample losses, shape [B]); None = the dataset's default.
      run: name of a run (LOSS.md section 11); with it, dataset= and
        class_counts= may both be left out (the run's dataset is used, and
        the run's defaults apply over the dataset's). In training mode each
        forward accumulates into the run, in eval mode it only reads it (see
        the module docstring). None: no run, the mode changes nothing.
      timeout: deadline of each call, seconds.
      shared_memory: for the client opened from `target`: None (shared
        memory for unix: targets when the server allows it), True, False
        (see cbloss.Client).
      Any other LossConfig field is a keyword too (cbloss.LossConfig; None =
      the dataset's default).

    forward(logits [B, C], labels_or_targets, sample_weights=None): an integer
    tensor [B] is labels, a floating tensor [B, C] is targets (multi-label or
    soft).

    Attribute `epoch` (int or None, initially None): the training epoch sent
    with every request, for deferred re-weighting. The training loop sets it
    (`criterion.epoch = epoch`) at the start of each epoch; None sends no
    epoch, and then the configured weights apply.

    `last_result` holds the LossResult of the latest forward (class weights,
    resolved config, num_samples, run_version...).

    Training and eval mode: with a run, a forward in training mode
    (self.training, True after construction and after .train()) adds the
    batch to the run's statistics; after .eval() it does not, as BatchNorm's
    running statistics. Without a run both modes compute the same.
    """

    def __init__(self, client=None, target=None, dataset=None, class_counts=None,
                 loss_type="softmax", beta=None, gamma=None, reduction="mean",
                 weighting=None, ignore_index=None, *, run=None, timeout=None,
                 shared_memory=None, **loss_params):
        super().__init__()
        messages.check_loss_keywords("ClassBalancedLoss.__init__", loss_params)
        if run is not None:
            if dataset is not None and class_counts is not None:
                raise ValueError("give at most one of dataset= and class_counts= with run=")
        elif (dataset is None) == (class_counts is None):
            raise ValueError("give exactly one of dataset= and class_counts=")
        if client is not None and target is not None:
            raise ValueError("give client= or target=, not both")
        if client is not None and shared_memory is not None:
            raise ValueError("give shared_memory= to the client, not to the module")
        self.client = client if client is not None else \
            Client(target, shared_memory=shared_memory)
        # This module's shared-memory region (unix: targets; see the module
        # docstring), made on the first forward.
        self._shm_slot = SharedMemorySlot()
        self.run = run
        self.dataset = dataset
        self.class_counts = None if class_counts is None else \
            [int(n) for n in np.asarray(
                class_counts.cpu() if isinstance(class_counts, torch.Tensor) else class_counts,
                dtype=np.int64).reshape(-1)]
        # Every LossConfig field: the positional ones first, then the others in
        # proto order (the order extra_repr shows).
        self.config = dict(loss_type=loss_type, beta=beta, gamma=gamma, reduction=reduction,
                           weighting=weighting, ignore_index=ignore_index)
        for name in messages.LOSS_PARAMETERS:
            self.config.setdefault(name, loss_params.get(name))
        # Check the names now rather than at the first batch.
        messages.check_enum_names(self.config)
        self.timeout = timeout
        self.epoch = None
        self.last_result = None

    def extra_repr(self):
        sources = []
        if self.run is not None:
            sources.append("run=%r" % self.run)
        if self.dataset is not None:
            sources.append("dataset=%r" % self.dataset)
        if self.class_counts is not None:
            sources.append("class_counts=%s" % self.class_counts)
        source = ", ".join(sources)
        options = ", ".join("%s=%r" % (k, v) for k, v in self.config.items() if v is not None)
        return "%s, %s, target=%r" % (source, options, self.client.target)

    def _request(self, logits, labels_or_targets, sample_weights, want_gradient):
        """The ComputeLossRequest of one forward (logits as bytes)."""
        labels, targets, kwargs = self._arguments(logits, labels_or_targets, sample_weights,
                                                  want_gradient)
        return build_loss_request(logits, labels, targets, **kwargs)

    def _arguments(self, logits, labels_or_targets, sample_weights, want_gradient):
        """(labels, targets, keyword arguments) of compute_loss for one
        forward."""
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("logits must be a tensor of shape [B, C]")
        y = labels_or_targets
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        if y.is_floating_point():
            if tuple(y.shape) != tuple(logits.shape):
                raise ValueError("targets must have the logits' shape %s; got %s"
                                 % (list(logits.shape), list(y.shape)))
            labels, targets = None, y
        elif y.dtype == torch.bool and tuple(y.shape) == tuple(logits.shape):
            labels, targets = None, y.to(torch.float32)
        else:
            if y.dim() != 1:
                raise ValueError("labels must be an integer tensor of shape [B]; got %s"
                                 % list(y.shape))
            labels, targets = y, None
        # For "none", or a reduction left to the dataset's defaults (which
        # may be "none"), the gradient travels in float32 and per-sample
        # losses are asked for (B floats).
        reduction = self.config["reduction"]
        per_sample = reduction is None or enums.reduction_number(reduction) == _NONE
        gradient_dtype = "float32" if per_sample else \
            _WIRE_GRADIENT_DTYPES.get(logits.dtype, "float32")
        return labels, targets, dict(
            dataset=self.dataset, class_counts=self.class_counts,
            sample_weights=sample_weights, want_gradient=want_gradient,
            want_per_sample_losses=per_sample, gradient_dtype=gradient_dtype,
            epoch=self.epoch, run=self.run, accumulate=self.run is not None and self.training,
            **self.config)

    def _send(self, request):
        """LossResult of one ComputeLossRequest."""
        return self.client.send(request, timeout=self.timeout)

    def _exchange(self, request):
        """The ComputeLossResponse of one request (CblossError if it fails)."""
        client = self.client
        return client._call(client._stub_for(request).ComputeLoss, request, self.timeout)

    def _compute(self, logits, labels_or_targets, sample_weights, want_gradient):
        """(LossResult, the gradient as a torch view of this module's
        shared-memory region or None) of one forward."""
        labels, targets, kwargs = self._arguments(logits, labels_or_targets, sample_weights,
                                                  want_gradient)
        result, placement = self.client._compute(self._shm_slot, self._exchange,
                                                 logits, labels, targets, kwargs)
        self.last_result = result
        if placement is None or not want_gradient:
            return result, None
        shape = placement["shape"]
        area = placement["area"]
        gradient = torch.frombuffer(
            area.map, dtype=_TORCH_DTYPES[placement["gradient_dtype"]],
            count=shape[0] * shape[1],
            offset=area.gradient_offset(shape, placement["logits_dtype"])).view(shape)
        return result, gradient

    def close(self):
        """Unregisters this module's shared-memory region (if it has one)."""
        self._shm_slot.close()

    def forward(self, logits, labels_or_targets, sample_weights=None):
        want_gradient = torch.is_grad_enabled() and logits.requires_grad

        def compute(want):
            return self._compute(logits, labels_or_targets, sample_weights, want)

        return _ServiceLoss.apply(logits, compute, want_gradient)


class StreamingClassBalancedLoss(ClassBalancedLoss):
    """ClassBalancedLoss over one long-lived StreamLoss call: each forward
    sends one request on the stream and reads its response (no per-call
    connection setup). Same arguments and results as ClassBalancedLoss. A
    request the service rejects raises CblossError and the stream goes on; if
    the stream itself breaks, the next forward opens a new one. Call close()
    when done (also on garbage collection)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream = None
        self._stream_lock = threading.Lock()

    def _current_stream(self):
        with self._stream_lock:
            if self._stream is None or self._stream.broken or self._stream.closed:
                self._stream = self.client.stream_loss()
            return self._stream

    def _send(self, request):
        return self._current_stream().send(request)

    def _exchange(self, request):
        return self._current_stream()._exchange(request)

    def close(self):
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        super().close()

    def __del__(self):
        try:
            stream = self.__dict__.get("_stream")
            if stream is not None:
                stream.cancel()
        except Exception:
            pass
