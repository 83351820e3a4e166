#!/usr/bin/python3
"""Data-parallel Seesaw with statistics shared through a cbloss run.

torch.distributed (gloo) with --world-size processes on this machine trains
the small CNN of examples/fashion_lt.py on Fashion-MNIST-LT (imbalance
--imbalance) with DistributedDataParallel and a DistributedSampler (each
worker sees its shard of every epoch). The loss is Seesaw (LOSS.md section 10)
through cbloss.torch.ClassBalancedLoss in training mode, so each forward adds
its labels to the run's seen counts (LOSS.md section 11):

- --stats shared: every worker names the same run; the run's seen counts are
  the label counts of all workers' batches, as a single-process job would
  see them.
- --stats per-worker: worker r names its own run (as mmdetection's
  SeesawLoss keeps cum_samples per process): each run sees only its shard.

At the end rank 0 prints one JSON line: per run, its seen counts and version;
the label counts of the batches of each worker (all-gathered); the balanced
test accuracy and that of the three rarest classes.

    PYTHONPATH=build/python /usr/bin/python3 examples/ddp_seesaw.py --stats shared
"""

import argparse
import json
import os
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import fashion_lt
from fashion_lt import NUM_CLASSES, ROOT, cbloss
from cbloss.torch import ClassBalancedLoss


def run_names(args):
    if args.stats == "shared":
        return [args.run]
    return ["%s-w%d" % (args.run, r) for r in range(args.world_size)]


def worker(rank, args, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=args.world_size)
    try:
        x_tr, y_tr, x_te, y_te = fashion_lt.lt_dataset(args.imbalance, args.data_dir)
        if args.limit:
            x_tr, y_tr = x_tr[:args.limit], y_tr[:args.limit]
        sampler = torch.utils.data.DistributedSampler(
            torch.utils.data.TensorDataset(y_tr), num_replicas=args.world_size, rank=rank,
            shuffle=True, seed=args.seed, drop_last=False)
        torch.manual_seed(args.seed)  # the same initial weights on every worker
        model = DistributedDataParallel(fashion_lt.small_cnn())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        names = run_names(args)
        client = cbloss.Client(args.target, timeout=30)
        criterion = ClassBalancedLoss(client, run=names[rank % len(names)], loss_type=None)
        criterion.train()
        label_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            indices = torch.tensor(list(iter(sampler)))
            for start in range(0, len(indices), args.batch):
                batch = indices[start:start + args.batch]
                labels = y_tr[batch]
                label_counts += np.bincount(labels.numpy(), minlength=NUM_CLASSES)
                optimizer.zero_grad()
                loss = criterion(model(x_tr[batch]), labels)
                loss.backward()  # DDP all-reduces the gradients
                optimizer.step()
        gathered = [torch.zeros(NUM_CLASSES, dtype=torch.int64) for _ in range(args.world_size)]
        dist.all_gather(gathered, torch.from_numpy(label_counts))
        if rank == 0:
            acc = fashion_lt.per_class_accuracy(model.module, x_te, y_te)
            runs = {}
            for name in names:
                r = client.get_run(name)
                runs[name] = {"seen_counts": r.statistics.seen_counts, "version": r.version}
            print(json.dumps({
                "stats": args.stats, "world_size": args.world_size, "epochs": args.epochs,
                "runs": runs,
                "worker_label_counts": [g.tolist() for g in gathered],
                "balanced_accuracy": float(acc.mean()),
                "tail3_accuracy": float(acc[-3:].mean()),
                "per_class_accuracy": acc.tolist()}), flush=True)
        client.close()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=os.path.join(ROOT, "build", "bin", "cbloss-server"))
    parser.add_argument("--target", help="use a running server at HOST:PORT instead")
    parser.add_argument("--stats", choices=("shared", "per-worker"), default="shared")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="per-worker batch size")
    parser.add_argument("--imbalance", type=int, default=100)
    parser.add_argument("--limit", type=int, default=0,
                        help="use only the first N training images of the split (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default="", help="run name (default: made up)")
    parser.add_argument("--data-dir", default=fashion_lt.DATA_DIR)
    args = parser.parse_args()
    if not args.run:
        args.run = "ddp-seesaw-%s-%d" % (args.stats, time.time_ns())
    with fashion_lt.service(args.server, args.target) as target:
        args.target = target
        with cbloss.Client(target, timeout=30) as client:
            for name in run_names(args):
                client.create_run(name, num_classes=NUM_CLASSES, loss_type="seesaw")
        mp.spawn(worker, args=(args, free_port()), nprocs=args.world_size, join=True)


if __name__ == "__main__":
    main()
