"""The PEFT core: HF peft's API on TF-Keras models, and the models, data and caches the rest of deft6g.finetune
builds on (fomo, data and activation_store are here because federation and every technique read models,
datasets and cached activations through them).

- tuners/: the PEFT methods (LoRA, adapters, prompt tuning, BitFit), each a registered config, layer and tuner
- architecture: the anatomy of an HF TF model (its blocks, dense projections and their PyTorch-style names)
- block_runner: running a model block by block (deep prompts, split models, activation caching)
- peft_model: `get_peft_model` and `PeftModel`
- peft_saving: saving, reloading and merging PEFT weights as HF peft does
- training: the compiled training step, evaluation and block importance
- cost: the analytic cost of a PEFT configuration (parameters, payload, memory, FLOPs)
- fomo: foundation models (the packaged MiniLM, local HF folders, random models from configs)
- data: offline datasets, seeded splits, cached tokenisation, device partitions
- activation_store: the bounded-memory (ragged, float16, memory-mapped) activation cache
"""
