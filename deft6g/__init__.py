"""deft6g: device-edge fine-tuning of foundation models over simulated 6G links.

Importing any part of deft6g first sets the environment TensorFlow needs, before TensorFlow is imported
(`deft6g.environment`, docs/design.md §5): legacy Keras 2 for HF transformers' TF classes and quiet native
logs. Values a user has already exported are kept; the model hub's offline mode is left alone.
"""

from importlib.metadata import version

from .environment import set_environment

set_environment()

__version__ = version("deft6g")   # the one version source: pyproject.toml, through the installed metadata
