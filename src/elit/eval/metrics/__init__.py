"""Evaluation metrics: FID (TF Inception-v3 pool3), FDD (DINOv2 ViT-L/14), FD-FMNIST (a small
Fashion-MNIST CNN; NOT FID), precision/recall, KID. Heavy networks load only when asked for."""
from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics.compute import (METRIC_NET, compute_metrics, compute_reference, extract_stats, format_results,
                                   get_extractor)
from elit.eval.metrics.scores import inception_score, kid, precision_recall
from elit.eval.metrics.stats import FeatureStats, RunningStats, frechet_distance, load_stats, save_stats

__all__ = ["FeatureExtractor", "FeatureStats", "METRIC_NET", "RunningStats", "compute_metrics", "compute_reference",
           "extract_stats", "format_results", "frechet_distance", "get_extractor", "inception_score", "kid",
           "load_stats", "precision_recall", "save_stats"]
