"""detector-harness: score detectors of anomalous or misaligned LM behaviour on one AUROC leaderboard.

Plugins (built-in and third-party alike) implement the hooks of :mod:`harness.hookspecs`
with the :data:`hookimpl` marker and are found through the ``harness`` entry-point group.
"""

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "harness"
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl", "__version__", "PROJECT_NAME"]
