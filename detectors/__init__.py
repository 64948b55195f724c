"""Built-in detector plugins, registered through the ``harness`` entry points like any third party's."""

from harness import hookimpl

from .activations import ActivationsLOF, ActivationsMahalanobis

BUILTIN_DETECTORS = (ActivationsMahalanobis, ActivationsLOF)


@hookimpl
def register_detectors(register):
    for detector in BUILTIN_DETECTORS:
        register(detector)
