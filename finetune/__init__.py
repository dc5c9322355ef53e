"""deft6g.finetune: TF-Keras PEFT on TF-ported foundation models, and the federated DEFT techniques."""

import deft6g  # noqa: F401  (sets the TensorFlow environment before TensorFlow is imported)

from .tuners import PEFT_METHODS, AdapterConfig, AdapterLayer, BaseTuner, BitFitConfig, LoraConfig, LoraLayer, \
    PeftConfig, PromptTuningConfig, WrappedModule, WrapperTuner, config_from_dict, register_peft_method, tuner_class
from .architecture import architecture_of, module_name, projection_kernel, pt_name, transformer_blocks
from .cost import MODELS, Cost, Dims, allocation_table, dims_of, full_finetune_cost, peft_cost, total_params
from .data import (DATASETS, DataSplit, Dataset, cached_arrays, data_split, load_dataset, partition, to_tf_dataset,
                   tokenize, train_test_split, validation_split)
from .fomo import (ARCHITECTURES, PRETRAINED, RANDOM_MODELS, SMOKE_MODEL, build_fomo, load_fomo, load_study_model,
                   port_folder, save_tf)
from .peft_model import PeftModel, PeftModelOutput, freeze_all_but, get_peft_model
from .training import CROSS_ENTROPY, block_importance, evaluate, make_grad_fn, make_train_step
from .aggregation import SCHEMES, Aggregate, AirCompAggregator, DigitalAggregator, IdealAggregator, \
    NoisyAggregator, OBDAAggregator, make_aggregator
from .emulator import build_emulator, emulator_blocks, emulator_config, plug_in, plug_in_state
from .emulator_package import apply_low_rank, dequantize, download_bits, low_rank_factors, pack_emulator, \
    quantize_int8, remap_tokens, token_map, unpack_emulator
from .distillation import align_emulator, boundary_states, hidden_state, masked_mse, public_texts
from .emulator_builder import COMPRESSED, EmulatorBuilder, EmulatorRecipe, public_vocabulary
from .federated import LOCAL_OPTIMIZERS, LORA_AGGREGATIONS, FederatedDEFT, RoundLog
from .server_optimizers import SERVER_OPTIMIZERS, FedAdamServer, FedAvgServer
from .multiview import MultiViewData, load_multiview, split_views
from .aircomp_connection import AirCompConnection, ChannelBlocks, DigitalConnection, IdealConnection, payload_stats, \
    side_info_channel_uses
from .multiview_model import MultiViewModel, evaluate_multiview, feature_stats, task_importance, train_multiview, \
    training_stats
from .prompt_transfer import TASKS, PromptClassifier, PromptTrainer, TransferTask, choose_by_similarity, \
    choose_by_trial, cosine_similarities, get_task, initial_prompt, task_arrays, task_embedding
from .prompt_pool import INFERENCE_MODES, PromptMember, PromptPool, load_member, member_of, one_by_one_logits, \
    pool_logits, pool_logits_from_tokens
from .prompt_ensemble import RULES, EnsembleGate, MemberTrainer, OnTheFlyEnsemble, combine, frozen_features, \
    heldout_scores
