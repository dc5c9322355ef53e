"""PEFT methods as registered objects: one module per method with its config, its layer and its tuner."""

from .base import PEFT_METHODS, PEFT_PREFIX, BaseTuner, PeftConfig, WrappedModule, WrapperTuner, config_from_dict, \
    register_peft_method, tuner_class
from .lora import LoraConfig, LoraLayer, LoraTuner
from .adapter import ADAPTER_PLACEMENTS, ADAPTER_TARGETS, AdapterConfig, AdapterLayer, AdapterTuner
from .prompt_tuning import PromptTuner, PromptTuningConfig
from .bitfit import BitFitConfig, BitFitTuner
