"""`elit train-classifier`: train the small Fashion-MNIST CNN whose features give FD-FMNIST (a
domain metric, NOT FID). The package ships one (elit/assets); this command reproduces it.

    elit train-classifier --out fmnist_classifier.safetensors [--epochs 4] [--seed 0]
"""
from __future__ import annotations

HELP = "train the Fashion-MNIST feature classifier (domain metric)"


from elit.cli._args import integer


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output .safetensors; pass it to --classifier-weights "
                        "(the shipped classifier inside the package is never overwritten)")
    parser.add_argument("--epochs", type=integer(1), default=4, help="passes over the 60k training images")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--threads", type=integer(1), default=1,
                        help="torch CPU threads; results are bit-identical only for the same count")


def _check_out(path, overwrite: bool = False) -> None:
    """An existing --out is replaced only if it is a classifier this command trained (its metadata says
    so): any other .safetensors (a model's weights) is someone's data."""
    from safetensors import safe_open

    from elit.errors import UserError
    try:
        with safe_open(str(path), "pt") as f:
            note = (f.metadata() or {}).get("note", "")
    except Exception:   # not a safetensors file
        note = ""
    if "FD-FMNIST feature network" not in note:
        raise UserError(f"--out {path} exists and is not a classifier elit train-classifier wrote; choose another "
                        f"--out, or move that file")


def run(args) -> int:
    import torch

    from elit._output import guarded_output
    from elit.eval.metrics.classifier import train_classifier
    torch.set_num_threads(args.threads)
    with guarded_output(args.out, "elit train-classifier", kind="file", suffix=".safetensors", ours=_check_out) as out:
        info = train_classifier(str(out), epochs=args.epochs, seed=args.seed)
    print(f"saved {info['path']}: test accuracy {info['test_accuracy']:.4f} ({info['seconds']:.0f} s)")
    return 0
