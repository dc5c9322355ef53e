"""pyproject's pytest `filterwarnings` hides the third-party stack's DeprecationWarnings, not deft6g's.

Each test issues a DeprecationWarning attributed to a module name under the filters pytest applies to
every test, and counts how many reach the warning machinery (no randomness).
"""

import warnings

import pytest


def _shown(module):
    """Number of DeprecationWarnings shown when `module` issues one (0 when a filter ignores it)."""
    with warnings.catch_warnings(record=True) as caught:  # keeps the active filters, records what passes
        warnings.warn_explicit("old API", DeprecationWarning, filename=module.replace(".", "/") + ".py",
                               lineno=1, module=module)
    return len(caught)


@pytest.mark.parametrize("module", ["gast.astn", "tensorflow.python.autograph.pyct.parser",
                                    "tf_keras.src.engine.base_layer", "keras.src.backend",
                                    "sionna.phy.utils", "transformers.modeling_tf_utils",
                                    "cvxpy.reductions.solvers", "google.protobuf.internal.well_known_types"])
def test_third_party_deprecation_hidden(module):
    assert _shown(module) == 0


@pytest.mark.parametrize("module", ["deft6g", "deft6g.phy.aircomp", "deft6g.experiment.runner",
                                    "deft6g.benchmarks.cli", "tests.test_warnings"])
def test_deft6g_deprecation_shown(module):
    assert _shown(module) == 1
