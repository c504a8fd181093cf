"""Physics validation: the reduced-precision paper's metrics and modern generative metrics."""

from caloquant.physics.bins import EnergyBin, parse_bins, parse_points
from caloquant.physics.calochallenge import (
    CaloChallengeConfig,
    CaloChallengeResult,
    ClassifierScore,
    calochallenge_test,
)
from caloquant.physics.classifier import ClassifierResult, classifier_test
from caloquant.physics.distances import frechet_distance, kernel_distance, separation_power
from caloquant.physics.features import (
    AUTHORS_HIT_THRESHOLD_GEV,
    AUTHORS_ZERO_THRESHOLD_GEV,
    DEFAULT_HIT_THRESHOLD_GEV,
    DEFAULT_ZERO_THRESHOLD_GEV,
    high_level_vector,
    shower_features,
)
from caloquant.physics.optimisation import (
    DEFAULT_METRIC_HALF_WIDTH_GEV,
    DEFAULT_METRIC_POINTS_GEV,
    optimisation_metric,
)
from caloquant.physics.resolution import fit_resolution, resolution_model
from caloquant.physics.validate import ValidationReport, validate

__all__ = [
    "AUTHORS_HIT_THRESHOLD_GEV",
    "AUTHORS_ZERO_THRESHOLD_GEV",
    "CaloChallengeConfig",
    "CaloChallengeResult",
    "ClassifierResult",
    "ClassifierScore",
    "DEFAULT_HIT_THRESHOLD_GEV",
    "DEFAULT_METRIC_HALF_WIDTH_GEV",
    "DEFAULT_METRIC_POINTS_GEV",
    "DEFAULT_ZERO_THRESHOLD_GEV",
    "EnergyBin",
    "ValidationReport",
    "calochallenge_test",
    "classifier_test",
    "fit_resolution",
    "frechet_distance",
    "high_level_vector",
    "kernel_distance",
    "optimisation_metric",
    "parse_bins",
    "parse_points",
    "resolution_model",
    "separation_power",
    "shower_features",
    "validate",
]
