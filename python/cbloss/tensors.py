"""Wire encoding of arrays (API.md section 1, `Tensor`).

Logits go out raw and little-endian in their own element type when it is one
the wire knows (float32, float16, bfloat16); float64 (and Python lists) are
rounded to float32, which is what the service computes on. Inputs may be numpy
arrays, torch tensors (any device; copied to the CPU) or nested lists. torch
is never imported here: a tensor is recognised only if torch is loaded.
"""

import sys

import numpy as np

from cbloss._proto import cbloss_pb2 as pb

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def is_torch_tensor(value):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_to_numpy(tensor):
    """(numpy array, wire dtype) of a torch tensor; bfloat16 as uint16 bits."""
    import torch
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16), pb.DTYPE_BFLOAT16
    return t.numpy(), None


def _as_numpy(value):
    """(numpy array, wire dtype or None) of a numpy array, torch tensor or list."""
    if is_torch_tensor(value):
        return _torch_to_numpy(value)
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # ml_dtypes' numpy bfloat16
        return array.view(np.uint16), pb.DTYPE_BFLOAT16
    return array, None


def encode_logits(logits):
    """Tensor message of logits [B, C]: float32 / float16 / bfloat16 raw."""
    array, wire = _as_numpy(logits)
    if array.ndim != 2:
        raise ValueError("logits must have shape [B, C]; got shape %s" % (list(array.shape),))
    if wire == pb.DTYPE_BFLOAT16:
        data = np.ascontiguousarray(array, dtype="<u2").tobytes()
    elif array.dtype == np.float16:
        wire, data = pb.DTYPE_FLOAT16, np.ascontiguousarray(array, dtype="<f2").tobytes()
    elif array.dtype.kind in "fiub":
        wire, data = pb.DTYPE_FLOAT32, np.ascontiguousarray(array, dtype="<f4").tobytes()
    else:
        raise TypeError("logits: unsupported element type %s" % array.dtype)
    return pb.Tensor(dtype=wire, shape=list(array.shape), data=data)


def encode_targets(targets):
    """Tensor message of targets [B, C] as raw float32."""
    array, wire = _as_numpy(targets)
    if wire == pb.DTYPE_BFLOAT16:
        array = bfloat16_bits_to_float32(array)
    if array.ndim != 2:
        raise ValueError("targets must have shape [B, C]; got shape %s" % (list(array.shape),))
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=list(array.shape), data=data)


def int32_list(values, what):
    """Python ints of a 1-D integer array (labels), checked to fit int32."""
    array, _ = _as_numpy(values)
    array = array.reshape(-1) if array.ndim == 0 else array
    if array.ndim != 1:
        raise ValueError("%s must be 1-D; got shape %s" % (what, list(array.shape)))
    if array.size and array.dtype.kind not in "iub":
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise TypeError("%s must be integers; got %s" % (what, array.dtype))
    array = array.astype(np.int64)
    bad = np.nonzero((array < _INT32_MIN) | (array > _INT32_MAX))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError("%s[%d] = %d does not fit in int32" % (what, i, array[i]))
    return array.tolist()


def int64_list(values, what):
    array, _ = _as_numpy(values)
    if array.ndim != 1:
        raise ValueError("%s must be 1-D; got shape %s" % (what, list(array.shape)))
    return array.astype(np.int64).tolist()


def float_list(values, what):
    """Python floats of a 1-D array (sample weights, upstream), as float32."""
    array, wire = _as_numpy(values)
    if wire == pb.DTYPE_BFLOAT16:
        array = bfloat16_bits_to_float32(array)
    array = array.reshape(-1) if array.ndim == 0 else array
    if array.ndim != 1:
        raise ValueError("%s must be 1-D; got shape %s" % (what, list(array.shape)))
    return array.astype(np.float32).tolist()


def bfloat16_bits_to_float32(bits):
    """float32 array of bfloat16 bit patterns (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def decode_tensor(tensor):
    """(numpy array of the tensor's shape, dtype name) of a wire Tensor.

    float32 -> float32, float16 -> float16, bfloat16 -> float32 (exact values).
    """
    shape = tuple(tensor.shape)
    if len(tensor.float_data):
        return np.asarray(tensor.float_data, dtype=np.float32).reshape(shape), "float32"
    if tensor.dtype in (pb.DTYPE_UNSPECIFIED, pb.DTYPE_FLOAT32):
        return np.frombuffer(tensor.data, dtype="<f4").astype(np.float32).reshape(shape), "float32"
    if tensor.dtype == pb.DTYPE_FLOAT16:
        return np.frombuffer(tensor.data, dtype="<f2").astype(np.float16).reshape(shape), "float16"
    if tensor.dtype == pb.DTYPE_BFLOAT16:
        bits = np.frombuffer(tensor.data, dtype="<u2")
        return bfloat16_bits_to_float32(bits).reshape(shape), "bfloat16"
    raise ValueError("gradient tensor has unknown dtype %d" % tensor.dtype)
