"""Training: `elit train` (cli), the loop (trainer), configs, checkpoints, EMA, distributed setup.

    from elit.train import load_config, train
    train(load_config("fmnist-elit-dit", ["train.max_steps=100"]), out="runs/demo")
"""
from elit.train.config import RunConfig, list_presets, load_config


def train(cfg: RunConfig, out) -> dict:
    from elit.train.trainer import train as _train
    return _train(cfg, out)


__all__ = ["RunConfig", "list_presets", "load_config", "train"]
