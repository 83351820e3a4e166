#!/usr/bin/python3
"""Smoke test of cbloss-bench (docs/PERFORMANCE.md): the benchmarks run with
--quick and print the JSON records the performance issue specifies. Checks
keys, record sets and that every number is finite and positive; never speed.

Usage: check_bench_json.py PATH/TO/cbloss-bench
"""

import json
import math
import subprocess
import sys

KERNEL_KEYS = {"loss", "batch", "classes", "threads", "ns_per_element",
               "memcpy_ns_per_element"}
SERVICE_KEYS = {"batch", "classes", "dtype", "rpc_p50_us", "rpc_p99_us",
                "echo_p50_us", "throughput_rps_8_callers"}
RUNS_KEYS = {"batch", "classes", "loss", "plain_p50_us", "accumulate_p50_us",
             "p50_ratio", "plain_rps_8_callers",
             "accumulate_rps_8_callers_one_run", "throughput_ratio"}
TRANSPORT_CALL_KEYS = {"transport", "batch", "classes", "dtype", "callers", "p50_us",
                       "p99_us", "throughput_rps"}
TRANSPORT_RATIOS = {"shm_vs_tcp_256x1000_f32", "shm_vs_echo_plus_kernel_256x1000_f32",
                    "bf16_vs_f32_tcp_256x1000"}


def run(bench, what):
    out = subprocess.run([bench, what, "--json", "--quick"], check=True,
                         capture_output=True, text=True, timeout=240)
    records = json.loads(out.stdout)
    assert isinstance(records, list), out.stdout
    return records


def positive(record, keys):
    for k in keys:
        v = record[k]
        if isinstance(v, (int, float)):
            assert math.isfinite(v) and v > 0, (k, record)


def main():
    bench = sys.argv[1]
    kernels = run(bench, "kernels")
    want = {(loss, b, c, t) for loss in ("softmax", "sigmoid", "focal")
            for b, c in ((256, 1000), (4096, 1000), (1024, 100), (32, 10))
            for t in (1, 2)}
    assert len(kernels) == len(want), len(kernels)
    for r in kernels:
        assert KERNEL_KEYS <= r.keys(), r
        positive(r, KERNEL_KEYS)
    got = {(r["loss"], r["batch"], r["classes"], r["threads"]) for r in kernels}
    assert got == want, got ^ want

    service = run(bench, "service")
    for r in service:
        assert SERVICE_KEYS <= r.keys(), r
        assert r["dtype"] in ("f32", "bf16"), r
        positive(r, SERVICE_KEYS)
        assert r["rpc_p50_us"] <= r["rpc_p99_us"], r
    sizes = {(r["batch"], r["classes"], r["dtype"]) for r in service}
    for b, c in ((32, 10), (256, 1000), (4096, 1000)):
        for dtype in ("f32", "bf16"):
            assert (b, c, dtype) in sizes, (b, c, dtype)

    runs = run(bench, "runs")
    for r in runs:
        assert RUNS_KEYS <= r.keys(), r
        positive(r, RUNS_KEYS - {"loss"})
    assert {(r["batch"], r["classes"]) for r in runs} == {(32, 10), (256, 1000)}, runs

    transports = run(bench, "transports")
    by_kind = {}
    for r in transports:
        by_kind.setdefault(r["kind"], []).append(r)
    assert set(by_kind) == {"call", "echo", "kernel", "ratio"}, set(by_kind)
    shapes = {(b, c, dtype) for b, c in ((32, 10), (256, 1000), (4096, 1000))
              for dtype in ("f32", "bf16")}
    for r in by_kind["call"]:
        assert TRANSPORT_CALL_KEYS <= r.keys(), r
        positive(r, TRANSPORT_CALL_KEYS)
        assert r["p50_us"] <= r["p99_us"], r
    assert sorted((r["transport"], r["batch"], r["classes"], r["dtype"], r["callers"])
                  for r in by_kind["call"]) == sorted(
        (t, b, c, d, n) for t in ("tcp", "unix", "shm") for b, c, d in shapes
        for n in (1, 8))
    assert len(by_kind["echo"]) == 1, by_kind["echo"]
    positive(by_kind["echo"][0], {"p50_us", "p99_us"})
    assert {(r["batch"], r["classes"], r["dtype"]) for r in by_kind["kernel"]} == shapes
    assert len(by_kind["kernel"]) == len(shapes)
    for r in by_kind["kernel"]:
        positive(r, {"kernel_us", "threads"})
        assert r["validate_us"] >= 0 and r["copy_in_us"] >= 0, r
    assert {r["name"] for r in by_kind["ratio"]} == TRANSPORT_RATIOS, by_kind["ratio"]
    for r in by_kind["ratio"]:
        positive(r, {"value"})
        assert isinstance(r["met"], bool), r

    print(f"ok: {len(kernels)} kernel records, {len(service)} service records, "
          f"{len(runs)} runs records, {len(transports)} transports records")


if __name__ == "__main__":
    main()
