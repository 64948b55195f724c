"""Built-in detector plugins, registered through the ``harness`` entry points like any third party's."""

from harness.api import hookimpl

from .activations import ActivationsLOF, ActivationsMahalanobis
from .attribution import AttributionLOF, AttributionMahalanobis
from .baselines import InputOnly, NameOnly, SteeringNorm
from .basin import BasinMahalanobis, BasinVolume
from .flow import FlowLaplace, FlowMahalanobis
from .probe import ProbeLOF, ProbeMahalanobis
from .poser import ActivationNoise, ActivationNoiseControl, Confidence, WeightNorm
from .sae import SAEDiagMahalanobis, SAEL0

# MAD detectors that need only cached features (testable on synthetic arrays)
FEATURE_DETECTORS = (
    ActivationsMahalanobis,
    ActivationsLOF,
    ProbeMahalanobis,
    ProbeLOF,
    AttributionMahalanobis,
    AttributionLOF,
    FlowMahalanobis,
    FlowLaplace,
    SAEDiagMahalanobis,
    SAEL0,
)
# MAD detectors that perturb the model's weights
WEIGHT_DETECTORS = (BasinVolume, BasinMahalanobis)
# baselines that cannot see the mechanism (MAD: the name's representation, the prompt text;
# POSER: the steering vector's norm)
BASELINE_DETECTORS = (NameOnly, InputOnly, SteeringNorm)
# POSER detectors (items are models)
POSER_DETECTORS = (Confidence, ActivationNoise, ActivationNoiseControl, WeightNorm)
BUILTIN_DETECTORS = FEATURE_DETECTORS + WEIGHT_DETECTORS + BASELINE_DETECTORS + POSER_DETECTORS


@hookimpl
def register_detectors(register):
    for detector in BUILTIN_DETECTORS:
        register(detector)
