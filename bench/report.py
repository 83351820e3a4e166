#!/usr/bin/python3
"""Tables (markdown, on stdout) and plots for docs/PERFORMANCE.md from the
JSON that scripts/bench.sh writes into DIR: kernels.json (cbloss-bench
kernels), torch.json (bench/torch_baseline.py), service.json (cbloss-bench
service) and, when present, transports.json (cbloss-bench transports).
Writes DIR/kernels.png and DIR/latency.png.

Usage: report.py DIR
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (at most x memcpy, at least x faster than PyTorch) at 4096x1000, 2 threads.
GOALS = {"softmax": (2, 8), "sigmoid": (3, 10), "focal": (4, 25)}
# LOSS.md section 10 (docs/PERFORMANCE.md, "Detection losses").
GOALS.update({loss: (3, 5) for loss in ("seesaw", "eql", "eql_v2", "vs", "focal_a0.25")})


def load(d, name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


def main():
    d = sys.argv[1]
    kernels = load(d, "kernels.json")
    torch = {(r["loss"], r["batch"], r["classes"], r["threads"]): r
             for r in load(d, "torch.json")}
    service = load(d, "service.json")

    print("### Kernels (loss + gradient, ns per element, fastest repetition; lower is better)\n")
    print("| loss | batch x classes | threads | cbloss | memcpy | cbloss / memcpy "
          "| PyTorch | PyTorch / cbloss |")
    print("|---|---|---|---|---|---|---|---|")
    for r in kernels:
        t = torch.get((r["loss"], r["batch"], r["classes"], r["threads"]))
        tns = t["ns_per_element"] if t else float("nan")
        print(f"| {r['loss']} | {r['batch']}x{r['classes']} | {r['threads']} "
              f"| {r['ns_per_element']:.2f} | {r['memcpy_ns_per_element']:.2f} "
              f"| {r['ns_per_element'] / r['memcpy_ns_per_element']:.2f} "
              f"| {tns:.2f} | {tns / r['ns_per_element']:.1f} |")

    print("\n### Kernel goals (4096x1000, 2 threads)\n")
    print("| loss | x memcpy (goal) | x faster than PyTorch (goal) |")
    print("|---|---|---|")
    for r in kernels:
        if (r["batch"], r["classes"], r["threads"]) != (4096, 1000, 2):
            continue
        t = torch[(r["loss"], 4096, 1000, 2)]["ns_per_element"]
        mem_goal, torch_goal = GOALS[r["loss"]]
        ratio = r["ns_per_element"] / r["memcpy_ns_per_element"]
        speed = t / r["ns_per_element"]
        print(f"| {r['loss']} | {ratio:.2f} (<= {mem_goal}: "
              f"{'met' if ratio <= mem_goal else 'missed'}) | {speed:.1f} "
              f"(>= {torch_goal}: {'met' if speed >= torch_goal else 'missed'}) |")

    print("\n### Service (ComputeLoss with gradient vs bare gRPC echo, microseconds)\n")
    print("| batch x classes | dtype | request bytes | rpc p50 | rpc p99 | echo p50 "
          "| rpc / echo | calls/s, 8 callers | echo calls/s, 8 callers |")
    print("|---|---|---|---|---|---|---|---|---|")
    by = {}
    for r in service:
        by[(r["batch"], r["classes"], r["dtype"])] = r
        print(f"| {r['batch']}x{r['classes']} | {r['dtype']} | {r['request_bytes']} "
              f"| {r['rpc_p50_us']:.0f} | {r['rpc_p99_us']:.0f} | {r['echo_p50_us']:.0f} "
              f"| {r['rpc_p50_us'] / r['echo_p50_us']:.2f} "
              f"| {r['throughput_rps_8_callers']:.0f} "
              f"| {r['echo_throughput_rps_8_callers']:.0f} |")
    print("\n### Service goals\n")
    f32 = by[(256, 1000, "f32")]
    bf16 = by[(256, 1000, "bf16")]
    small = by[(32, 10, "f32")]
    r1 = f32["rpc_p50_us"] / f32["echo_p50_us"]
    r2 = f32["rpc_p50_us"] / bf16["rpc_p50_us"]
    r3 = small["rpc_p50_us"] / small["echo_p50_us"]
    print("| goal | measured | |")
    print("|---|---|---|")
    print(f"| 256x1000 f32 rpc <= 1.2x echo | {r1:.2f}x | {'met' if r1 <= 1.2 else 'missed'} |")
    print(f"| 256x1000 bf16 >= 1.6x faster than f32 | {r2:.2f}x | {'met' if r2 >= 1.6 else 'missed'} |")
    print(f"| 32x10 p50 <= 1.3x echo | {r3:.2f}x | {'met' if r3 <= 1.3 else 'missed'} |")
    for shape in [(4096, 1000)]:
        a, b = by.get(shape + ("f32",)), by.get(shape + ("bf16",))
        if a and b:
            print(f"| (4096x1000: bf16 vs f32, for reference) | "
                  f"{a['rpc_p50_us'] / b['rpc_p50_us']:.2f}x | |")

    if os.path.exists(os.path.join(d, "transports.json")):
        transports_tables(load(d, "transports.json"))

    # Plot 1: ns/element per shape, 2 threads.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=False)
    shapes = [(32, 10), (1024, 100), (256, 1000), (4096, 1000)]
    for ax, loss in zip(axes, ["softmax", "sigmoid", "focal"]):
        xs = range(len(shapes))
        ours = [next(r["ns_per_element"] for r in kernels if r["loss"] == loss and
                     (r["batch"], r["classes"]) == s and r["threads"] == 2) for s in shapes]
        mem = [next(r["memcpy_ns_per_element"] for r in kernels if r["loss"] == loss and
                    (r["batch"], r["classes"]) == s and r["threads"] == 2) for s in shapes]
        tor = [torch[(loss,) + s + (2,)]["ns_per_element"] for s in shapes]
        w = 0.27
        ax.bar([x - w for x in xs], tor, w, label="PyTorch")
        ax.bar(list(xs), ours, w, label="cbloss")
        ax.bar([x + w for x in xs], mem, w, label="memcpy")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{b}x{c}" for b, c in shapes])
        ax.set_title(f"{loss}, 2 threads")
        ax.set_ylabel("ns per element (loss + gradient)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "kernels.png"), dpi=110)

    # Plot 2: latency vs payload size.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dtype, marker in (("f32", "o"), ("bf16", "s")):
        rs = sorted((r for r in service if r["dtype"] == dtype),
                    key=lambda r: r["request_bytes"])
        xs = [r["request_bytes"] + r["response_bytes"] for r in rs]
        ax.plot(xs, [r["rpc_p50_us"] for r in rs], marker=marker, label=f"ComputeLoss {dtype}")
        ax.plot(xs, [r["echo_p50_us"] for r in rs], marker=marker, linestyle="--",
                label=f"echo {dtype}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("request + response bytes")
    ax.set_ylabel("p50 latency, microseconds")
    ax.set_title("ComputeLoss with gradient vs bare gRPC echo (loopback)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "latency.png"), dpi=110)


def transports_tables(records):
    """Markdown of `cbloss-bench transports --json` (docs/SHARED_MEMORY.md)."""
    calls = {(r["transport"], r["batch"], r["classes"], r["dtype"], r["callers"]): r
             for r in records if r["kind"] == "call"}
    kernel = {(r["batch"], r["classes"], r["dtype"]): r["kernel_us"]
              for r in records if r["kind"] == "kernel"}
    echo = next(r for r in records if r["kind"] == "echo")
    print("\n### Transports (ComputeLoss with gradient, microseconds; calls/s)\n")
    print(f"Echo (ListSharedMemory over the socket): p50 {echo['p50_us']:.0f}, "
          f"p99 {echo['p99_us']:.0f}.\n")
    print("| batch x classes | dtype | kernel | tcp p50 / p99 | unix p50 / p99 "
          "| shm p50 / p99 | tcp / shm | shm / (echo + kernel) "
          "| calls/s 8 callers: tcp / unix / shm |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (b, c, dtype), k in kernel.items():
        one = {t: calls[(t, b, c, dtype, 1)] for t in ("tcp", "unix", "shm")}
        many = {t: calls[(t, b, c, dtype, 8)] for t in ("tcp", "unix", "shm")}
        cells = " | ".join(f"{one[t]['p50_us']:.0f} / {one[t]['p99_us']:.0f}"
                           for t in ("tcp", "unix", "shm"))
        rps = " / ".join(f"{many[t]['throughput_rps']:.0f}" for t in ("tcp", "unix", "shm"))
        print(f"| {b}x{c} | {dtype} | {k:.0f} | {cells} "
              f"| {one['tcp']['p50_us'] / one['shm']['p50_us']:.2f} "
              f"| {one['shm']['p50_us'] / (echo['p50_us'] + k):.2f} | {rps} |")
    print("\n| goal | measured | |")
    print("|---|---|---|")
    for r in records:
        if r["kind"] == "ratio":
            print(f"| {r['name']} {r['goal']} | {r['value']:.2f}x "
                  f"| {'met' if r['met'] else 'missed'} |")


if __name__ == "__main__":
    main()
