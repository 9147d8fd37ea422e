"""The LM servable: prompt strings in, completion strings out, with the tokenizer and sampling loop in the graph.

Signatures (what a TF Serving client sees):
  serving_default(prompts [B] string, max_new_tokens, temperature, seed) -> completions [B] string
      Only `prompts` is required: the others have defaults in the SignatureDef (TF Serving fills in missing
      inputs from them). temperature 0 is greedy; seed -1 draws a fresh seed per request.
  log_probs(texts [B] string) -> token_ids [B, T], log_probs [B, T], lengths [B]
      log p(token t | tokens < t) under the model (temperature 1, no top-k/top-p); 0 at t = 0 and at padding.

Written with keras.export.ExportArchive: a tf.Module holding Keras 3 layers saves, but TF Serving's Session
loader cannot find its variables. The graph holds only core TF and TF Text ops: the KV-cache writes are traced
with `core_op_cache_updates` (no XlaDynamicUpdateSlice) and nothing is jit-compiled, as TF Serving disables XLA.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from export import tf_serving
from models import lm as lm_lib


@dataclasses.dataclass(frozen=True)
class GenerationDefaults:
    """The sampling settings the policy was trained with; the defaults of serving_default's optional inputs."""

    max_new_tokens: int
    temperature: float
    top_k: int = 0
    top_p: float = 1.0


def build_archive(
    lm, tokenizer, eos_id: int, defaults: GenerationDefaults, max_length: int, bos_id: int | None = None
) -> keras.export.ExportArchive:
    """max_length: the positions a request works within (prompt and completion); bos_id: the start token every
    sequence begins with, where the model's convention has one (added in the graph, as the pipeline adds it)."""
    # keras-hub builds the tokenizer's TF lookup tables lazily; build them eagerly, not inside a traced function.
    tokenizer._maybe_initialized_tf()
    tokenizer.build(None)  # a tokenizer has no weights; ExportArchive only tracks built layers

    def right_padded(tokens):
        """Token ids [B, W] (W >= 1, padded with EOS) and lengths [B] (an empty prompt counts as one EOS)."""
        dense = tf.pad(tokens.to_tensor(default_value=eos_id), [[0, 0], [0, 1]], constant_values=eos_id)
        lengths = tf.cast(tokens.row_lengths(), tf.int32)
        return dense[:, : tf.maximum(tf.reduce_max(lengths), 1)], tf.maximum(lengths, 1)

    def with_start(tokens):
        if bos_id is None:
            return tokens
        start = tf.RaggedTensor.from_tensor(tf.fill([tokens.nrows(), 1], tf.cast(bos_id, tokens.dtype)))
        return tf.concat([start, tokens], axis=1)

    def generate(
        prompts,
        max_new_tokens=tf.constant(defaults.max_new_tokens),  # noqa: B008 (the SignatureDef's defaults)
        temperature=tf.constant(defaults.temperature),  # noqa: B008 (the SignatureDef's defaults)
        seed=tf.constant(-1, tf.int64),  # noqa: B008 (the SignatureDef's defaults)
    ):
        # Prompts keep their last max_length - 1 tokens, so at least one token can follow.
        tokens = with_start(tokenizer.tokenize(prompts))[:, -(max_length - 1) :]
        ids, lengths = right_padded(tokens)
        width = tf.shape(ids)[1]
        max_new_tokens = tf.clip_by_value(max_new_tokens, 0, max_length - width)
        seed = tf.where(seed < 0, tf.random.uniform([], 0, tf.int64.max, tf.int64), seed)
        sequences = lm_lib.sample(
            lm,
            ids,
            max_new_tokens,
            tf.maximum(temperature, 0.0),
            tf.stack([seed, 0]),
            defaults.top_k,
            defaults.top_p,
            prompt_lengths=lengths,
            eos_id=eos_id,
        )
        # A completion: its max_new_tokens after its own prompt, up to (not including) its first EOS.
        positions = tf.range(tf.shape(sequences)[1])[None, :]
        generated = (positions >= lengths[:, None]) & (positions < lengths[:, None] + max_new_tokens)
        ended = tf.cumsum(tf.cast(generated & tf.equal(sequences, eos_id), tf.int32), axis=1) > 0
        completion = tf.ragged.boolean_mask(sequences, generated & ~ended)
        # Byte-level BPE can stop inside a multi-byte character. TF Serving's REST API returns strings as JSON
        # text, so invalid UTF-8 is dropped here, as keras-hub's detokenize drops it when decoding in Python.
        text = tf.strings.unicode_transcode(tokenizer.detokenize(completion), "UTF-8", "UTF-8", errors="ignore")
        return {"completions": text}

    def log_probs(texts):
        tokens = with_start(tokenizer.tokenize(texts))[:, :max_length]
        ids, lengths = tokens.to_tensor(default_value=eos_id), tf.cast(tokens.row_lengths(), tf.int32)
        mask = tf.sequence_mask(lengths, tf.shape(ids)[1], tf.int32)
        logits, _ = lm_lib.forward(lm, ids, padding_mask=mask)
        next_log_probs = lm_lib.token_log_probs(logits[:, :-1], ids[:, 1:])
        scores = tf.concat([tf.zeros_like(next_log_probs[:, :1]), next_log_probs], axis=1)
        return {"token_ids": ids, "log_probs": scores * tf.cast(mask, tf.float32), "lengths": lengths}

    archive = keras.export.ExportArchive()
    archive.track(lm)
    archive.track(tokenizer)
    with core_op_cache_updates():
        archive.add_endpoint(
            "serving_default",
            generate,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int64),
            ],
        )
        archive.add_endpoint("log_probs", log_probs, input_signature=[tf.TensorSpec([None], tf.string)])
    return archive


def save(archive: keras.export.ExportArchive, path: str) -> None:
    with core_op_cache_updates():
        archive.write_out(path, verbose=False)
    tf_serving.drop_cluster_devices(path)


@contextlib.contextmanager
def core_op_cache_updates():
    """While tracing inside this block, keras-hub's KV-cache writes use a core TF op.

    Keras' TF backend writes slices with XlaDynamicUpdateSlice, which TF Serving (XLA disabled) cannot run;
    TensorStridedSliceUpdate does the same write and is a stock op."""
    from keras.src.backend.tensorflow import core

    def slice_update(inputs, start_indices, updates):
        start = tf.cast(tf.stack(start_indices), tf.int32)
        return tf.raw_ops.TensorStridedSliceUpdate(
            input=inputs, begin=start, end=start + tf.shape(updates), strides=tf.ones_like(start), value=updates
        )

    original = core.slice_update
    core.slice_update = slice_update
    try:
        yield
    finally:
        core.slice_update = original
