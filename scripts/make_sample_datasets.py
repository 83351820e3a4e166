#!/usr/bin/env python3
"""Writes datasets/sample_datasets.json: the long-tailed CIFAR-10 and CIFAR-100
counts of Cui et al. (CVPR 2019) at imbalance 100, n_i = floor(5000 * (1/100)^(i/(C-1))),
as protobuf JSON of cbloss.v1.ListDatasetsResponse (cbloss-server --datasets_file).

Usage: python3 scripts/make_sample_datasets.py > datasets/sample_datasets.json
"""
import json
import math

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog",
                 "frog", "horse", "ship", "truck"]


def long_tail_counts(classes, n_max=5000, imbalance=100):
    # The exponent i/(C-1) and the floor follow the paper's construction.
    return [math.floor(n_max * (1.0 / imbalance) ** (i / (classes - 1)))
            for i in range(classes)]


def main():
    datasets = [
        {
            "name": "cifar10-lt",
            "classCounts": [str(n) for n in long_tail_counts(10)],
            "classNames": CIFAR10_NAMES,
            "defaults": {"lossType": "LOSS_TYPE_FOCAL", "beta": 0.9999,
                         "gamma": 1.0},
        },
        {
            "name": "cifar100-lt",
            "classCounts": [str(n) for n in long_tail_counts(100)],
            "defaults": {"lossType": "LOSS_TYPE_SOFTMAX", "beta": 0.999},
        },
    ]
    print(json.dumps({"datasets": datasets}, indent=1))


if __name__ == "__main__":
    main()
