"""`elit fid`: the Frechet distance between two image sets under one feature network.

    elit fid A B [--json] [--metric-net inception|dinov2|fmnist]

A and B: image folders, ADM .npz sample batches (arr_0), or statistics .npz files (`elit ref`). A
reference is read by the same rule as `elit eval` (`elit.eval.metrics.compute.reference_stats`), so
both commands give the same number for the same inputs.
"""
from __future__ import annotations

import json

from elit.cli._metric_args import LABELS, METRIC_OF_NET, add_network_arguments, extractor

HELP = "FID (or FDD, FD-FMNIST) between two image folders or .npz files"


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs=2, metavar="PATH",
                        help="image folder, ADM .npz sample batch (arr_0) or reference stats .npz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fd-method", default="sqrtm", choices=("sqrtm", "eigh"),
                        help="matrix square root: scipy sqrtm (pytorch-fid/ADM) or eigh (same value, ~2x faster)")
    add_network_arguments(parser)


def run(args) -> int:
    from elit.eval.metrics.compute import reference_stats
    from elit.eval.metrics.stats import frechet_distance
    ext = extractor(args)
    a, b = (reference_stats(p, {"net": ext}, batch_size=args.batch_size, num=args.num,
                            progress=not args.quiet)[0]["net"] for p in args.paths)
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=args.fd_method)
    key = METRIC_OF_NET[args.metric_net]
    if args.json:
        print(json.dumps({"metric": key, key: value, "value": value, "feature_net": ext.name, "protocol": ext.protocol,
                          "num_a": a.num, "num_b": b.num, "paths": list(args.paths)}))
    else:
        print(f"{LABELS[key]}: {value:.4f}\nprotocol: {ext.protocol}; {a.num} vs {b.num} images")
    return 0
