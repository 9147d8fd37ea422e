"""Causal-LM policy for RLHF: a keras-hub causal LM (Keras 3) with a scalar value head, and KV-cache sampling.

The from-scratch model is a GPT-2 built from its constructor (no presets: nothing is downloaded); copying,
scoring and sampling work on any keras-hub CausalLM whose LM head is its token embedding's reverse (GPT-2, the
Llama family, Qwen, Mistral): sampling goes through keras-hub's own per-architecture cache API. Sampling and
scoring share one definition of the token distribution (`sampling_logits`: temperature, top-k, top-p), so the
distribution a token was drawn from is the one PPO scores it under: at iteration 0 the policy/reference KL is 0
and the first ratio is 1, to rounding.
"""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import tensorflow as tf

from models import lora


@dataclasses.dataclass(frozen=True)
class LMSize:
    """GPT-2 architecture hyper-parameters (keras_hub.models.GPT2Backbone's constructor arguments)."""

    vocabulary_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    hidden_dim: int = 64
    intermediate_dim: int = 256
    max_sequence_length: int = 128


def build_causal_lm(size: LMSize, seed: int = 0, precision: str = "float32") -> keras_hub.models.GPT2CausalLM:
    """precision: a Keras dtype policy. mixed_bfloat16 keeps float32 weights and needs no loss scaling (float16
    would); on CPUs without bfloat16 units it is slower, on recent GPUs faster."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=size.vocabulary_size,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        hidden_dim=size.hidden_dim,
        intermediate_dim=size.intermediate_dim,
        dropout=0.0,
        max_sequence_length=size.max_sequence_length,
        dtype=precision,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def copy_lm(lm: keras_hub.models.CausalLM, trainable: bool, precision: str | None = None) -> keras_hub.models.CausalLM:
    """Same architecture and weights: the frozen reference, a separate value model's trunk, or the export's
    policy. precision: a Keras dtype policy for the copy (e.g. bfloat16: weights stored in bfloat16, half the
    memory); None keeps lm's. LoRA adapters, if any, are merged into the copy's kernels (models.lora), so the copy
    has none."""
    config = lm.backbone.get_config()
    if precision is not None:
        config["dtype"] = precision
    backbone = type(lm.backbone).from_config(config)
    for source, target in zip(lm.backbone._flatten_layers(), backbone._flatten_layers()):
        target.load_own_variables(lora.merged_own_variables(source))
    backbone.trainable = trainable
    return type(lm)(backbone=backbone, preprocessor=None)


def build_value_head(hidden_dim: int) -> keras.layers.Dense:
    head = keras.layers.Dense(1, kernel_initializer="zeros", name="value_head")
    head.build((None, None, hidden_dim))
    return head


def hidden_states(lm, token_ids, padding_mask=None):
    """The backbone's last hidden states [B, T, H]."""
    if padding_mask is None:
        padding_mask = tf.ones_like(token_ids)
    return lm.backbone({"token_ids": token_ids, "padding_mask": padding_mask})


def forward(lm, token_ids, padding_mask=None):
    """(logits [B, T, V], hidden states [B, T, H]) for whole sequences."""
    hidden = hidden_states(lm, token_ids, padding_mask)
    return lm.backbone.token_embedding(hidden, reverse=True), hidden


# Logit given to tokens outside top-k / the top-p nucleus: finite, so log-probs and ratios stay finite.
FILTERED_LOGIT = -1e9


def sampling_logits(logits, temperature, top_k: int = 0, top_p: float = 1.0):
    """Logits of the distribution tokens are drawn from: logits / temperature, then top-k, then top-p.

    Tokens outside the kept set get FILTERED_LOGIT. Sampling and PPO scoring both go through here.
    """
    logits = tf.cast(logits, tf.float32) / temperature
    if top_k:
        kth_largest = tf.math.top_k(logits, k=top_k).values[..., -1:]
        logits = tf.where(logits < kth_largest, FILTERED_LOGIT, logits)
    if top_p < 1.0:
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        mass_before = tf.cumsum(tf.nn.softmax(ordered), axis=-1, exclusive=True)
        # The smallest logit whose predecessors hold < top_p of the mass: the nucleus (never empty).
        cutoff = tf.reduce_min(tf.where(mass_before < top_p, ordered, ordered[..., :1]), axis=-1, keepdims=True)
        logits = tf.where(logits < cutoff, FILTERED_LOGIT, logits)
    return logits


def kept_tokens(logits, tokens, temperature, top_k: int = 0, top_p: float = 1.0):
    """[..., V] bool: the tokens `sampling_logits` keeps, and the drawn `tokens` [...] whatever it says.

    PPO fixes this set when it scores a batch and keeps it for every update on that batch: the policy, the
    reference and the updated policy are all scored on it (`token_log_probs(..., kept=)`), so every sampled
    token has a finite log-probability under each (a drawn token is in the set even where the scoring pass's
    logits, computed by other kernels than the sampler's, put it a rounding error outside the filter).
    """
    kept = sampling_logits(logits, temperature, top_k, top_p) > FILTERED_LOGIT
    return kept | tf.one_hot(tokens, tf.shape(logits)[-1], on_value=True, off_value=False)


def token_log_probs(logits, tokens, temperature: float = 1.0, kept=None):
    """log p(token) under softmax(logits / temperature), renormalised over `kept` ([..., V] bool) when given."""
    return log_probs_and_entropy(logits, tokens, temperature, kept)[0]


def log_probs_and_entropy(logits, tokens, temperature: float = 1.0, kept=None):
    """(log p(token), entropy) of softmax(logits / temperature), renormalised over `kept` when given."""
    logits = tf.cast(logits, tf.float32) / temperature
    if kept is not None:
        logits = tf.where(kept, logits, FILTERED_LOGIT)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)  # a filtered token: 0 * (-1e9) = 0
    return tf.gather(log_probs, tokens, axis=-1, batch_dims=len(tokens.shape)), entropy


def draw(logits, seed):
    """One token per row from softmax(logits) [B, V], by inverse CDF: one uniform number per row.

    tf.random.stateless_categorical draws a uniform number per vocabulary entry and takes two logs of each
    (Gumbel-max), a noticeable share of a small model's decoding step, for the same distribution. A token whose
    probability is 0 (FILTERED_LOGIT) is never drawn: the first position where the CDF passes the target has
    positive mass, and a target that rounding pushes past the total falls back to the last such token.
    """
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    cdf = tf.cumsum(probs, axis=-1)
    target = tf.random.stateless_uniform([tf.shape(logits)[0], 1], seed) * cdf[:, -1:]
    drawn = tf.reduce_sum(tf.cast(cdf <= target, tf.int32), axis=-1)
    vocabulary = tf.shape(logits)[-1]
    last_possible = vocabulary - 1 - tf.argmax(tf.reverse(probs > 0.0, axis=[-1]), axis=-1, output_type=tf.int32)
    return tf.minimum(drawn, last_possible)


def response_positions(prompt_lengths, width: int):
    """[B, width] positions of each row's response in a sequence `sample` wrote: right after the row's prompt."""
    return tf.cast(prompt_lengths, tf.int32)[:, None] + tf.range(width)[None, :]


def responses(sequences, prompt_lengths, width: int):
    """[B, width] response tokens of [B, P + width] sequences `sample` wrote from prompts of these lengths."""
    sequences = tf.convert_to_tensor(sequences)
    return tf.gather(sequences, response_positions(prompt_lengths, width), batch_dims=1)


def response_mask(responses, eos_id: int | None):
    """1 for real response tokens: everything up to and including the first EOS, 0 after it."""
    if eos_id is None:
        return tf.ones_like(responses, tf.float32)
    is_eos = tf.cast(tf.equal(responses, eos_id), tf.int32)
    eos_before = tf.cumsum(is_eos, axis=1, exclusive=True)
    return tf.cast(eos_before == 0, tf.float32)


def sample(
    lm,
    prompt_ids,
    max_new_tokens,
    temperature,
    seed,
    top_k: int = 0,
    top_p: float = 1.0,
    prompt_lengths=None,
    eos_id: int | None = None,
    generic_cache: bool = False,
):
    """Samples after the prompts with the KV cache; returns [B, P + max_new_tokens] token ids.

    prompt_ids: [B, P]; rows shorter than P are right-padded and `prompt_lengths` [B] says where each ends (the
    loop starts at the shortest and keeps each row's own prompt tokens until it ends, as keras-hub does). Every
    row gets max_new_tokens of its own: a short prompt's row stops after them (keras-hub's generate fills each row
    to the longest prompt + max_new_tokens, so a short prompt got more), its later positions left as they are.
    temperature: a positive value samples from `sampling_logits`; 0 is greedy. `seed`: stateless, shape [2].
    With eos_id, a row also stops once it has sampled EOS; the loop ends when every row has stopped.
    Any keras-hub CausalLM decodes through its own cache API; GPT-2 through a faster path of its own, unless
    generic_cache (for tests and benchmarks).
    """
    batch, width = tf.shape(prompt_ids)[0], tf.shape(prompt_ids)[1]
    if prompt_lengths is None:
        prompt_lengths = tf.fill([batch], width)
    total = width + max_new_tokens
    token_ids = tf.concat([prompt_ids, tf.zeros([batch, max_new_tokens], prompt_ids.dtype)], axis=1)
    start = tf.reduce_min(prompt_lengths)
    fast = isinstance(lm, keras_hub.models.GPT2CausalLM) and not generic_cache
    decoder = _Gpt2Decoder if fast else _KerasHubDecoder
    caches, next_logits = decoder.start(lm, prompt_ids, token_ids, start)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    positive = tf.maximum(temperature, 1e-6)

    def step(index, token_ids, caches, next_logits, done):
        step_seed = tf.random.experimental.stateless_fold_in(seed, index)
        drawn = tf.cast(draw(sampling_logits(next_logits, positive, top_k, top_p), step_seed), token_ids.dtype)
        greedy = tf.argmax(next_logits, axis=-1, output_type=token_ids.dtype)
        generated = (index >= prompt_lengths) & ~done
        token = tf.where(generated, tf.where(temperature > 0.0, drawn, greedy), token_ids[:, index])
        token_ids = tf.tensor_scatter_nd_update(
            token_ids, tf.stack([tf.range(batch), tf.fill([batch], index)], axis=1), token
        )
        done = done | (index + 1 >= prompt_lengths + max_new_tokens)
        if eos_id is not None:
            done = done | (generated & tf.equal(token, eos_id))
        logits, caches = decoder.step(lm, token[:, None], caches, index)
        return index + 1, token_ids, caches, logits, done

    _, token_ids, _, _, _ = tf.while_loop(
        lambda index, token_ids, caches, next_logits, done: (index < total) & ~tf.reduce_all(done),
        step,
        (start, token_ids, caches, next_logits, tf.zeros([batch], tf.bool)),
    )
    return token_ids


class _KerasHubDecoder:
    """Any keras-hub CausalLM, through its own cache API: `_build_cache` seeds a [B, layers, 2, T, kv heads, dim]
    cache over the whole buffer (prompts and the zeros after them, overwritten as tokens come), `call_with_cache`
    runs one token. The architecture (rotary positions, grouped-query attention, ...) is the model's business."""

    @staticmethod
    def start(lm, prompt_ids, token_ids, start):
        """(cache, logits [B, V] predicting position `start`)."""
        _, cache = lm._build_cache(token_ids)
        # The token before `start` once more: its logits, and its cache entry rewritten with the same values.
        last = tf.slice(token_ids, tf.stack([0, start - 1]), [-1, 1])
        logits, _, cache = lm.call_with_cache(last, cache, start - 1)
        return cache, logits[:, 0]

    @staticmethod
    def step(lm, token_ids, cache, index):
        logits, _, cache = lm.call_with_cache(token_ids, cache, index)
        return logits[:, 0], cache


class _Gpt2Decoder:
    """GPT-2 with per-layer key and value caches [B, heads, T, head_dim], written in place.

    keras-hub's call_with_cache keeps one [B, layers, 2, T, heads, head_dim] cache and, every step, slices each
    layer's part out, writes the new key and value, and stacks it all back: copies of the whole cache per token.
    Here each cache is its own loop variable (one dynamic-update-slice each), laid out [B, heads, T, dim] (the
    attention dots' own layout, no transposes per step), seeded by one pass over the prompts only. It reads
    GPT-2's layers' private attributes: kept because it pays (benchmarks/README.md), tested against full-forward
    decoding and against the generic decoder.
    """

    @staticmethod
    def start(lm, prompt_ids, token_ids, start):
        hidden, cache = lm._build_cache(prompt_ids)
        padding = [[0, 0], [0, 0], [0, tf.shape(token_ids)[1] - tf.shape(prompt_ids)[1]], [0, 0]]
        caches = tuple(
            (
                tf.pad(tf.transpose(cache[:, layer, 0], [0, 2, 1, 3]), padding),
                tf.pad(tf.transpose(cache[:, layer, 1], [0, 2, 1, 3]), padding),
            )
            for layer in range(lm.backbone.num_layers)
        )
        return caches, lm.backbone.token_embedding(tf.gather(hidden, start - 1, axis=1), reverse=True)

    @staticmethod
    def step(lm, token_ids, caches, index):
        backbone = lm.backbone
        x = backbone.token_embedding(token_ids)
        x = backbone.embeddings_dropout(backbone.embeddings_add((x, backbone.position_embedding(x, start_index=index))))
        length = tf.shape(caches[0][0])[2]
        visible = tf.range(length)[None, None, None, :] <= index  # [1, 1, 1, T]: positions up to this token
        heads_first = lambda t: tf.transpose(t, [0, 2, 1, 3])  # noqa: E731  [B, 1, heads, dim] <-> [B, heads, 1, dim]
        updated = []
        for layer, (keys, values) in zip(backbone.transformer_layers, caches):
            attention = layer._self_attention_layer
            h = layer._self_attention_layer_norm(x)
            start = [0, 0, index, 0]
            keys = keras.ops.slice_update(keys, start, heads_first(attention._key_dense(h)))
            values = keras.ops.slice_update(values, start, heads_first(attention._value_dense(h)))
            query = heads_first(attention._query_dense(h))  # [B, heads, 1, head_dim]
            scores = tf.einsum("bnqd,bntd->bnqt", tf.cast(query, tf.float32), tf.cast(keys, tf.float32))
            scores = tf.where(visible, scores * attention._inverse_sqrt_key_dim, tf.float32.min)
            weights = tf.cast(tf.nn.softmax(scores, axis=-1), values.dtype)
            x = x + attention._output_dense(heads_first(tf.einsum("bnqt,bntd->bnqd", weights, values)))
            h = layer._feedforward_layer_norm(x)
            x = x + layer._feedforward_output_dense(layer._feedforward_intermediate_dense(h))
            updated.append((keys, values))
        return backbone.token_embedding(backbone.layer_norm(x), reverse=True)[:, 0], tuple(updated)
