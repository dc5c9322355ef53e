"""deft6g.finetune: TF-Keras PEFT on TF-ported foundation models, and the federated DEFT techniques.

Three subpackages, each importing only the ones before it: `peft` (the PEFT core: tuners, PeftModel, training,
cost, and the models, data and caches the rest builds on), `federation` (federated DEFT: aggregation over the
uplink, server optimisers, emulators) and `techniques` (AirComp connections, multi-view models, prompt pools,
ensembles and transfer). Every public name is imported from here.
"""

import deft6g  # noqa: F401  (sets the TensorFlow environment before TensorFlow is imported)
from deft6g.deprecation import moved_modules

from .peft.tuners import PEFT_METHODS, AdapterConfig, AdapterLayer, BaseTuner, BitFitConfig, LoraConfig, \
    LoraLayer, PeftConfig, PromptTuningConfig, WrappedModule, WrapperTuner, config_from_dict, register_peft_method, \
    tuner_class
from .peft.architecture import architecture_of, module_name, projection_kernel, pt_name, transformer_blocks
from .peft.cost import MODELS, Cost, Dims, allocation_table, dims_of, full_finetune_cost, peft_cost, total_params
from .peft.data import (DATASETS, DataSplit, Dataset, StudyData, cached_arrays, data_split, load_dataset,
                        load_study_data, partition, to_tf_dataset, tokenize, train_test_split, validation_split)
from .peft.fomo import (ARCHITECTURES, PRETRAINED, RANDOM_MODELS, SMOKE_MODEL, build_fomo, load_fomo,
                        load_study_model, port_folder, save_tf)
from .peft.peft_model import PeftModel, PeftModelOutput, freeze_all_but, get_peft_model
from .peft.training import CROSS_ENTROPY, block_importance, evaluate, make_grad_fn, make_train_step
from .federation.aggregation import SCHEMES, Aggregate, AirCompAggregator, DigitalAggregator, IdealAggregator, \
    NoisyAggregator, OBDAAggregator, RoundChannel, make_aggregator
from .federation.emulator import build_emulator, emulator_blocks, emulator_config, plug_in, plug_in_state
from .federation.emulator_package import apply_low_rank, dequantize, download_bits, low_rank_factors, \
    pack_emulator, quantize_int8, remap_tokens, token_map, unpack_emulator
from .federation.distillation import align_emulator, boundary_states, hidden_state, masked_mse, public_texts
from .federation.emulator_builder import COMPRESSED, EmulatorBuilder, EmulatorRecipe, public_vocabulary
from .federation.federated import LOCAL_OPTIMIZERS, LORA_AGGREGATIONS, FederatedDEFT, RoundLog
from .federation.server_optimizers import SERVER_OPTIMIZERS, FedAdamServer, FedAvgServer
from .techniques.multiview import MultiViewData, load_multiview, split_views
from .techniques.aircomp_connection import AirCompConnection, ChannelBlocks, DigitalConnection, IdealConnection, \
    payload_stats, side_info_channel_uses
from .techniques.multiview_model import MultiViewModel, evaluate_multiview, feature_stats, task_importance, \
    train_multiview, training_stats
from .techniques.prompt_transfer import TASKS, PromptClassifier, PromptTrainer, TransferTask, choose_by_similarity, \
    choose_by_trial, cosine_similarities, get_task, initial_prompt, task_arrays, task_embedding
from .techniques.prompt_pool import INFERENCE_MODES, PromptMember, PromptPool, load_member, member_of, \
    one_by_one_logits, pool_logits, pool_logits_from_tokens
from .techniques.prompt_ensemble import RULES, EnsembleGate, MemberTrainer, OnTheFlyEnsemble, combine, \
    frozen_features, heldout_scores

# The module paths before the subpackages (deft6g.finetune.training, ...) import, warning, until deft6g 0.2.0.
__getattr__ = moved_modules(__name__, {
    "activation_store": "peft.activation_store", "architecture": "peft.architecture",
    "block_runner": "peft.block_runner", "cost": "peft.cost", "data": "peft.data", "fomo": "peft.fomo",
    "peft_model": "peft.peft_model", "peft_saving": "peft.peft_saving", "training": "peft.training",
    "tuners": "peft.tuners",
    "aggregation": "federation.aggregation", "distillation": "federation.distillation",
    "emulator": "federation.emulator", "emulator_builder": "federation.emulator_builder",
    "emulator_package": "federation.emulator_package", "federated": "federation.federated",
    "server_optimizers": "federation.server_optimizers",
    "aircomp_connection": "techniques.aircomp_connection", "multiview": "techniques.multiview",
    "multiview_model": "techniques.multiview_model", "prompt_ensemble": "techniques.prompt_ensemble",
    "prompt_pool": "techniques.prompt_pool", "prompt_transfer": "techniques.prompt_transfer"})
