#!/usr/bin/python3
"""Writes the fuzzers' seed corpora under fuzz/corpus/<target>/.

Run from the repository root after a build that generated the Python stubs
(build/python/cbloss/_proto, target cbloss_python_stubs):

    /usr/bin/python3 fuzz/make_corpus.py [--stubs build/python/cbloss/_proto]

The seeds are small valid inputs that reach deep into each target: requests
for every loss type, source and wire dtype; .npy files as NumPy writes them;
CSV snippets; store call sequences in store_fuzzer.cc's input format. The
output is deterministic, so re-running it changes nothing unless this script
changes.
"""

import argparse
import io
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(target, name, data):
    path = os.path.join(ROOT, "fuzz", "corpus", target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def compute_requests(pb):
    logits = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 3.0]  # [2, 4]

    def request(**kw):
        r = pb.ComputeLossRequest(**kw)
        r.logits.shape.extend([2, 4])
        return r

    def f16(values, dtype):
        a = np.asarray(values, dtype=np.float32)
        if dtype == "f16":
            return a.astype("<f2").tobytes()
        return (a.view(np.uint32) >> 16).astype("<u2").tobytes()  # bfloat16

    out = {}
    r = request(class_counts=pb.ClassCounts(counts=[5, 3, 1, 2]), labels=[0, 2],
                want_gradient=True, want_per_sample_losses=True)
    r.logits.float_data.extend(logits)
    r.config.loss_type = pb.LOSS_TYPE_SOFTMAX
    out["softmax_counts_float_data"] = r

    r = request(class_counts=pb.ClassCounts(counts=[5, 3, 1, 2]),
                want_gradient=True, gradient_dtype=pb.DTYPE_FLOAT16)
    r.logits.dtype = pb.DTYPE_FLOAT16
    r.logits.data = f16(logits, "f16")
    r.targets.dtype = pb.DTYPE_FLOAT32
    r.targets.shape.extend([2, 4])
    r.targets.data = np.asarray([1, 0, 0, 1, 0, 1, 0, 0], "<f4").tobytes()
    r.config.loss_type = pb.LOSS_TYPE_FOCAL
    r.config.gamma = 2.0
    r.config.reduction = pb.REDUCTION_ELEMENT_MEAN
    out["focal_targets_f16"] = r

    r = request(dataset="fuzz-a", labels=[1, 3], sample_weights=[1.0, 0.5],
                want_gradient=True, expected_dataset_version=7)
    r.logits.float_data.extend(logits)
    out["dataset_defaults"] = r

    r = request(dataset="b", labels=[0, 2], want_gradient=True,
                gradient_dtype=pb.DTYPE_BFLOAT16, epoch=3)
    r.logits.shape[1] = 3
    r.logits.dtype = pb.DTYPE_BFLOAT16
    r.logits.data = f16(logits[:6], "bf16")
    r.config.loss_type = pb.LOSS_TYPE_LDAM
    r.config.max_margin = 0.5
    r.config.scale = 30.0
    r.config.drw_start_epoch = 5
    out["ldam_drw_bf16"] = r

    for name, loss in [("balanced_softmax", pb.LOSS_TYPE_BALANCED_SOFTMAX),
                       ("logit_adjusted", pb.LOSS_TYPE_LOGIT_ADJUSTED),
                       ("softmax_focal", pb.LOSS_TYPE_SOFTMAX_FOCAL),
                       ("softmax_bce", pb.LOSS_TYPE_SOFTMAX_BCE)]:
        r = request(class_counts=pb.ClassCounts(counts=[50, 30, 10, 2]),
                    labels=[3, 1], want_gradient=True)
        r.logits.float_data.extend(logits)
        r.config.loss_type = loss
        r.config.weighting = pb.WEIGHTING_SCHEME_INVERSE_SQRT_FREQUENCY
        out[name] = r

    r = request(class_counts=pb.ClassCounts(counts=[5, 3, 1, 2]),
                labels=[0, -100], upstream=[1.0, 2.0], want_gradient=True)
    r.logits.float_data.extend(logits)
    r.config.loss_type = pb.LOSS_TYPE_SIGMOID
    r.config.reduction = pb.REDUCTION_NONE
    r.config.weighting = pb.WEIGHTING_SCHEME_INVERSE_FREQUENCY
    r.config.ignore_index = -100
    out["sigmoid_none_upstream_ignore"] = r

    r = request(class_counts=pb.ClassCounts(counts=[5, 3, 1, 2]), labels=[0, 1])
    r.logits.float_data.extend(logits[:4] + [float("nan")] + logits[5:])
    out["invalid_nan_logit"] = r

    for name, message in sorted(out.items()):
        write("compute_request_fuzzer", name + ".pb",
              message.SerializeToString(deterministic=True))


def shm_refs(pb):
    """Seeds for shm_refs_fuzzer: a fill byte, then a request whose tensors
    refer to its regions r (1024 bytes at 3 in the object), b (1024 at 515,
    overlapping r) and c (8 bytes at 2048)."""
    F32, BF16, F16, INPUT = 0, 1, 2, 3

    def ref(region, offset, size):
        return pb.SharedMemoryRef(region=region, offset=offset, byte_size=size)

    def request(dtype, B, C, logits_ref, **kw):
        r = pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=[5, 3, 1, 2][:C]), **kw)
        r.logits.dtype = dtype
        r.logits.shape.extend([B, C])
        if logits_ref is not None:
            r.logits.shm.CopyFrom(logits_ref)
        return r

    out = {}
    r = request(pb.DTYPE_FLOAT32, 2, 4, ref("r", 0, 32), labels=[0, 2],
                want_per_sample_losses=True, gradient_shm=ref("r", 64, 32))
    out["f32_logits_gradient"] = (F32, r)

    r = request(pb.DTYPE_BFLOAT16, 2, 4, ref("r", 1, 16), labels=[1, 3],
                gradient_dtype=pb.DTYPE_BFLOAT16, gradient_shm=ref("b", 600, 16))
    r.config.loss_type = pb.LOSS_TYPE_FOCAL
    r.config.gamma = 2.0
    out["bf16_unaligned"] = (BF16 | 1 << 2, r)

    r = request(pb.DTYPE_FLOAT16, 2, 4, ref("r", 0, 16),
                gradient_shm=ref("b", 512, 32))
    r.targets.dtype = pb.DTYPE_FLOAT16
    r.targets.shape.extend([2, 4])
    r.targets.shm.CopyFrom(ref("r", 16, 16))
    r.config.loss_type = pb.LOSS_TYPE_SIGMOID
    out["f16_targets"] = (F16, r)

    r = request(pb.DTYPE_FLOAT32, 2, 4, ref("r", 2, 32), labels=[3, 0],
                gradient_shm=ref("r", 515, 32))
    out["f32_unaligned"] = (F32 | 2 << 2, r)

    r = request(pb.DTYPE_FLOAT32, 2, 4, ref("r", 512, 32), labels=[0, 1],
                gradient_shm=ref("b", 0, 32))
    out["overlap_through_b"] = (F32, r)

    r = request(pb.DTYPE_FLOAT32, 1, 2, None, labels=[1],
                gradient_shm=ref("c", 0, 8))
    r.logits.float_data.extend([0.25, -1.0])
    out["float_data_gradient_in_c"] = (F32, r)

    r = request(pb.DTYPE_FLOAT32, 2, 4, ref("c", 4, 32), labels=[0, 1],
                want_gradient=True)
    out["beyond_region"] = (F32, r)

    r = request(pb.DTYPE_FLOAT32, 2, 4, ref("zz", 0, 32), labels=[0, 1])
    out["unknown_region"] = (F32, r)

    r = request(pb.DTYPE_BFLOAT16, 4, 4, ref("r", 0, 32), labels=[0, 1, 2, 3],
                want_gradient=True)
    out["input_bytes"] = (INPUT, r)

    for name, (fill, message) in sorted(out.items()):
        write("shm_refs_fuzzer", name,
              bytes([fill]) + message.SerializeToString(deterministic=True))


def npy_bytes(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def arrays():
    t = "arrays_fuzzer"
    write(t, "logits_f4.npy",
          npy_bytes(np.arange(6, dtype="<f4").reshape(2, 3) / 4))
    write(t, "logits_f2.npy",
          npy_bytes(np.array([[0.5, -1.0], [2.0, 0.0]], dtype="<f2")))
    write(t, "labels_i4.npy", npy_bytes(np.array([0, 2, 1], dtype="<i4")))
    write(t, "labels_i8_v2.npy",
          npy_bytes(np.array([3, 1], dtype="<i8"), version=(2, 0)))
    write(t, "empty_f4.npy", npy_bytes(np.zeros((0, 4), dtype="<f4")))
    write(t, "scalar_f4.npy", npy_bytes(np.array(1.5, dtype="<f4")))
    write(t, "logits.csv", b"0.5,-1,2\n1e-3, 4.25 ,-0\n")
    write(t, "labels_column.csv", b"# labels\n0\n2\n\n1\n")
    write(t, "special_values.csv", b"inf,-inf,nan\r\n1E308,-2.5e-310,0x10\n")


def store_sequences():
    # store_fuzzer.cc's format. Ops: 0 Put, 1 Get, 2 List, 3 Delete, 4 Add.
    # Names: 0 "a", 1 "b", 2 "ab", 3 "a-b.c", 4 "ete", 5 "a\0b", 6 "".
    # expected_version: 0 none, 1 zero, 2 current, 3 current+1, 4 max.
    # Amounts: 0 0, 1 1, 2 2, 3 7, 4 -1, 5 max, 6 max-1, 7 min.
    seqs = {
        "put_get_list": [
            0, 0, 1, 3, 1, 2, 3, 1, 9,   # Put a [1,2,7] + names, expected 0
            0, 1, 0, 2, 3, 3, 0, 0,      # Put b [7,7]
            1, 0,                        # Get a
            2, 0, 7, 5,                  # List after "", limit 100
            0, 0, 2, 2, 2, 2, 1, 0,      # Put a [2,2] at its current version
        ],
        "add_counts": [
            0, 2, 0, 3, 1, 1, 1, 0, 0,   # Put ab [1,1,1]
            4, 2, 1, 1, 4, 1, 3, 1, 2, 3,  # Add ab deltas [1,-1,1] labels 0,1,2
            4, 2, 0, 2, 0, 9,            # Add ab labels [-1,8]: out of range
            4, 2, 1, 4, 4, 7, 0,         # Add ab deltas [-1,-1,min]: below 0
            1, 2,                        # Get ab
        ],
        "overflow_delete": [
            0, 3, 1, 2, 6, 0, 0, 0,      # Put a-b.c [max-1,0], expected 0
            4, 3, 0, 2, 1, 1,            # Add labels [0,0]: overflow
            3, 3, 3,                     # Delete, expected current+1: ABORTED
            3, 3, 2,                     # Delete at the current version
            1, 3, 3, 3, 0,               # Get, Delete: NOT_FOUND
        ],
        "odd_names": [
            0, 5, 0, 1, 0, 1, 0,         # Put "a\0b" [0] + names
            0, 4, 0, 1, 2, 0, 0,         # Put ete [2]
            0, 6, 0, 1, 1, 0, 0,         # Put "": INVALID_ARGUMENT
            2, 0, 0, 3,                  # List after "a", limit 2
            2, 0, 5, 3,                  # List after "a\0b", limit 2
        ],
    }
    for name, seq in seqs.items():
        write("store_fuzzer", name, bytes(seq))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", default=os.path.join(
        ROOT, "build", "python", "cbloss", "_proto"))
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    from cbloss.v1 import cbloss_pb2  # pylint: disable=import-outside-toplevel
    compute_requests(cbloss_pb2)
    shm_refs(cbloss_pb2)
    arrays()
    store_sequences()


if __name__ == "__main__":
    main()
