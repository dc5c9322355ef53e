"""deft6g: device-edge fine-tuning of foundation models over simulated 6G links.

Importing any part of deft6g first sets the TensorFlow environment the stack needs (DESIGN.md §4):
legacy Keras 2 for HF transformers' TF classes, quiet C++ logs, and an offline model hub. Values a
user has already exported are kept.
"""

import os

for _name, _value in {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
