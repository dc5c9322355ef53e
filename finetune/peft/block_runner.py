"""Running a PeftModel's frozen FoMo block by block (BERT-like encoders: bert, vit): the embedding, any range
of blocks with deep prompts prepended, mean pooling and the head. This gives deep prompts, split models and
activation caching: `h, mask = activations(inputs, k)` once, then `forward_from(h, mask, k)` every step."""

import numpy as np
import tensorflow as tf

from .architecture import BLOCKWISE


class BlockRunner:
    """Mixin of `PeftModel`: needs `base`, `kind`, `blocks`, `num_blocks`, `prompts`, `head` and
    `lowest_tuned_block()`."""

    def embed(self, inputs, training=False):
        """Block-0 input: (hidden [B, T, H], mask float [B, T]). inputs: {input_ids, attention_mask} int [B, T]
        (bert); pixel_values [B, H, W] or [B, C, H, W], or {"pixel_values": ...} (vit)."""
        if self.kind == "bert":
            ids = tf.convert_to_tensor(inputs["input_ids"])
            h = self.base.bert.embeddings(input_ids=ids, training=training)
            return h, tf.cast(inputs["attention_mask"], h.dtype)
        if isinstance(inputs, dict):
            if "pixel_values" not in inputs:
                raise ValueError(f"a vit model takes `pixel_values`, got the inputs {sorted(inputs)}")
            inputs = inputs["pixel_values"]
        x = tf.convert_to_tensor(inputs, tf.float32)
        if x.shape.rank == 3:
            x = x[:, None]
        h = self.base.vit.embeddings(pixel_values=x, training=training)
        return h, tf.ones(tf.shape(h)[:2], h.dtype)

    def run_blocks(self, h, mask, start=0, stop=None, training=False, prompts=None):
        """Run blocks start..stop-1 (prepending deep prompts); returns (hidden, mask).

        `prompts` {block: [n, H] or one per example [B, n, H]} replaces the model's own deep prompts (a
        prompt pool's batched pass); the lengths must be the model's own for `pooled` to skip them."""
        if self.kind not in BLOCKWISE:
            raise ValueError(f"block-by-block runs need a bert or vit model, got {self.kind!r}")
        prompts = self.prompts if prompts is None else prompts
        for i in range(start, self.num_blocks if stop is None else stop):
            if i in prompts:
                b = tf.shape(h)[0]
                p = tf.convert_to_tensor(prompts[i])
                p = tf.broadcast_to(p[None], [b, *p.shape]) if p.shape.rank == 2 else p
                h = tf.concat([tf.cast(p, h.dtype), h], axis=1)
                mask = tf.concat([tf.ones([b, p.shape[1]], mask.dtype), mask], axis=1)
            if self.kind == "bert":
                ext = (1.0 - mask[:, None, None, :]) * -10000.0
                h = self.blocks[i](hidden_states=h, attention_mask=ext, head_mask=None, encoder_hidden_states=None,
                                   encoder_attention_mask=None, past_key_value=None, output_attentions=False,
                                   training=training)[0]
            else:
                h = self.blocks[i](hidden_states=h, head_mask=None, output_attentions=False, training=training)[0]
        return h, mask

    def pooled(self, h, mask):
        """Final norm (vit), mean pooling over the real tokens (prompts excluded): features [B, H]."""
        if self.kind == "vit":
            h = self.base.vit.layernorm(h)
        n_prompt = sum(int(p.shape[0]) for p in self.prompts.values())
        h, mask = h[:, n_prompt:], mask[:, n_prompt:]
        return tf.reduce_sum(h * mask[..., None], 1) / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)

    def head_from(self, h, mask, training=False):
        """`pooled` features, then the head."""
        pooled = self.pooled(h, mask)
        return pooled if self.head is None else self.head(pooled)

    def forward_from(self, h, mask, start, training=False):
        """Logits [B, num_labels] (pooled features [B, H] without a head) from the input of block `start`
        (e.g. cached by `activations`)."""
        h, mask = self.run_blocks(h, mask, start, training=training)
        return self.head_from(h, mask, training)

    def activations(self, inputs, block, batch_size=64):
        """Frozen input of block `block` for every example, computed once (inference mode).

        inputs: a dict of arrays [S, T] or pixels [S, ...]. Returns (hidden float32 [S, T', H], mask [S, T']).
        `block` must not exceed `lowest_tuned_block()` (the cached part must be frozen).
        """
        if not 0 <= block <= self.lowest_tuned_block():
            raise ValueError(f"`block` must be in [0, {self.lowest_tuned_block()}] (lowest tuned block), got {block}")
        steps = self.__dict__.setdefault("_activation_steps", {})    # compiled once per block, not per call
        if block not in steps:
            steps[block] = tf.function(lambda x: self.run_blocks(*self.embed(x), 0, block), reduce_retracing=True)
        step = steps[block]
        n = len(inputs["input_ids"]) if isinstance(inputs, dict) else len(inputs)
        hs, ms = [], []
        for s in range(0, n, batch_size):
            x = {k: v[s:s + batch_size] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[s:s + batch_size]
            h, m = step(x)
            hs.append(h.numpy())
            ms.append(m.numpy())
        return np.concatenate(hs), np.concatenate(ms)
