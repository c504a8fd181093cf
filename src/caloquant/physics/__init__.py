"""Physics validation: the reduced-precision paper's metrics and modern generative metrics."""

from caloquant.physics.bins import EnergyBin, parse_bins
from caloquant.physics.classifier import ClassifierResult, classifier_test
from caloquant.physics.distances import frechet_distance, kernel_distance, separation_power
from caloquant.physics.features import high_level_vector, shower_features
from caloquant.physics.validate import ValidationReport, validate

__all__ = [
    "ClassifierResult",
    "EnergyBin",
    "ValidationReport",
    "classifier_test",
    "frechet_distance",
    "high_level_vector",
    "kernel_distance",
    "parse_bins",
    "separation_power",
    "shower_features",
    "validate",
]
