"""Causal-LM policy for RLHF: a keras-hub GPT-2 (Keras 3) with a scalar value head, and KV-cache sampling.

Built from constructors (no presets: nothing is downloaded). Sampling and scoring share one function for the
token distribution (`token_log_probs`), so the distribution a token was drawn from is exactly the one PPO
scores it under: at iteration 0 the policy/reference KL is 0 and the first ratio is 1, exactly.
"""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class LMSize:
    """GPT-2 architecture hyper-parameters (keras_hub.models.GPT2Backbone's constructor arguments)."""
    vocabulary_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    hidden_dim: int = 64
    intermediate_dim: int = 256
    max_sequence_length: int = 128


def build_causal_lm(size: LMSize, seed: int = 0) -> keras_hub.models.GPT2CausalLM:
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=size.vocabulary_size, num_layers=size.num_layers, num_heads=size.num_heads,
        hidden_dim=size.hidden_dim, intermediate_dim=size.intermediate_dim, dropout=0.0,
        max_sequence_length=size.max_sequence_length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def frozen_copy(lm: keras_hub.models.GPT2CausalLM) -> keras_hub.models.GPT2CausalLM:
    """The reference model: same architecture and weights, not trainable."""
    backbone = keras_hub.models.GPT2Backbone.from_config(lm.backbone.get_config())
    backbone.set_weights(lm.backbone.get_weights())
    backbone.trainable = False
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def build_value_head(size: LMSize) -> keras.layers.Dense:
    head = keras.layers.Dense(1, kernel_initializer="zeros", name="value_head")
    head.build((None, None, size.hidden_dim))
    return head


def forward(lm, token_ids, padding_mask=None):
    """(logits [B, T, V], hidden states [B, T, H]) for whole sequences."""
    if padding_mask is None:
        padding_mask = tf.ones_like(token_ids)
    hidden = lm.backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    return lm.backbone.token_embedding(hidden, reverse=True), hidden


def token_log_probs(logits, tokens, temperature: float):
    """log p(token) under softmax(logits / temperature): the sampling distribution, used for scoring too."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
    return tf.gather(log_probs, tokens, axis=-1, batch_dims=len(tokens.shape))


def response_log_probs(logits, token_ids, prompt_length: int, temperature: float):
    """Log-probs [B, R] of the response tokens token_ids[:, P:], from the logits that predicted them."""
    return token_log_probs(logits[:, prompt_length - 1:-1], token_ids[:, prompt_length:], temperature)


def response_mask(responses, eos_id: int | None):
    """1 for real response tokens: everything up to and including the first EOS, 0 after it."""
    if eos_id is None:
        return tf.ones_like(responses, tf.float32)
    is_eos = tf.cast(tf.equal(responses, eos_id), tf.int32)
    eos_before = tf.cumsum(is_eos, axis=1, exclusive=True)
    return tf.cast(eos_before == 0, tf.float32)


def sample(lm, prompt_ids, max_new_tokens: int, temperature: float, seed):
    """Samples max_new_tokens after same-length prompts with the KV cache; returns [B, P + R] token ids.

    `seed` is a stateless seed, shape [2]. One cached forward step per new token.
    """
    batch, prompt_length = tf.shape(prompt_ids)[0], prompt_ids.shape[1]
    total = prompt_length + max_new_tokens
    token_ids = tf.concat([prompt_ids, tf.zeros([batch, max_new_tokens], prompt_ids.dtype)], axis=1)
    # keras-hub's own cache layout, seeded by one pass over the prompt (positions >= P are overwritten).
    hidden, cache = lm._build_cache(token_ids)
    next_logits = lm.backbone.token_embedding(hidden[:, prompt_length - 1], reverse=True)

    def step(index, token_ids, cache, next_logits):
        step_seed = tf.random.experimental.stateless_fold_in(seed, index)
        token = tf.random.stateless_categorical(tf.cast(next_logits, tf.float32) / temperature, 1, step_seed,
                                                dtype=token_ids.dtype)
        token_ids = tf.tensor_scatter_nd_update(
            token_ids, tf.stack([tf.range(batch), tf.fill([batch], index)], axis=1), token[:, 0])
        logits, _, cache = lm.call_with_cache(token, cache, index)
        return index + 1, token_ids, cache, logits[:, 0]

    _, token_ids, _, _ = tf.while_loop(lambda index, *_: index < total, step,
                                       (tf.constant(prompt_length), token_ids, cache, next_logits))
    return token_ids
