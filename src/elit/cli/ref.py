"""`elit ref`: feature statistics (mean, covariance) of a reference image set, saved as an .npz that
`elit fid` and `elit eval` take as their reference.

    elit ref --data fmnist-test --out runs/fmnist-test-inception.npz [--num N] [--metric-net inception|dinov2|fmnist]

fmnist-test and fmnist-train are computed once per feature network and count and then read from the
user cache (~/.cache/elit/references): the Inception pass over the 10,000 test images took about half
an hour on a busy 2-core CPU (500 images in 97 s); reading the cached result takes a second.
"""
from __future__ import annotations

from elit.cli._metric_args import add_network_arguments, extractor

HELP = "compute reference feature statistics (.npz)"


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="fmnist-test, fmnist-train, an image folder or an .npz (arr_0)")
    parser.add_argument("--out", required=True, help="output .npz (ADM-compatible mu/sigma + feature_net tag)")
    parser.add_argument("--keep-features", action="store_true",
                        help="also store the features (needed for precision/recall and KID)")
    add_network_arguments(parser)


def check_out(path, overwrite: bool = False) -> None:
    """Only reference statistics (what elit ref writes) are replaced; any other .npz is someone's data."""
    from elit.errors import UserError
    from elit.eval.metrics.stats import written_by_save_stats
    held = written_by_save_stats(path)
    if held is not None:
        raise UserError(f"--out {path} exists and is not reference statistics that elit ref wrote ({held}); "
                        f"choose another --out, or move that file")


def run(args) -> int:
    from elit._output import guarded_output
    from elit.eval.metrics.compute import compute_reference
    # before the minutes of feature extraction
    with guarded_output(args.out, "elit ref", kind="file", suffix=".npz", ours=check_out) as out:
        st = compute_reference(args.data, args.metric_net, out, num=args.num, keep_features=args.keep_features,
                               batch_size=args.batch_size, progress=not args.quiet, extractor=extractor(args))
    print(f"saved {args.out}: {st.num} images of {args.data}; feature net {st.feature_net}\nprotocol: {st.protocol}")
    return 0
