"""Checkpoint directories: what loads, and clear errors for what does not, from their JSON files alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from models import checkpoints
from models import lm as lm_lib
from tests.conftest import OBJECTS
from tests.presets import write_huggingface, write_llama3_preset

DOCUMENTS = [f"the cat sees {thing}." for thing in OBJECTS] * 20


LLAMA_HF = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


@pytest.mark.parametrize(
    "files, error",
    [
        ({}, "no config.json"),
        ({"config.json": {"model_type": "bert"}}, r"model_type 'bert' is not supported; supported: gpt2"),
        ({"config.json": {"model_type": "llama"}}, "no 'architectures'"),
        ({"config.json": LLAMA_HF, "pytorch_model.bin": b""}, "safetensors weights only"),
        ({"config.json": LLAMA_HF, "model.safetensors": b""}, "tokenizer.json missing"),
        (
            {"config.json": {"registered_name": "keras_hub>BertBackbone"}},
            r"BertBackbone.*not supported; supported: GPT-2",
        ),
        ({"config.json": {"registered_name": "keras_hub>GPT2Backbone"}}, "model.weights.h5 is missing"),
    ],
)
def test_directories_that_cannot_load_say_why_and_what_would(tmp_path, files, error):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(json.dumps(content))
    with pytest.raises(checkpoints.CheckpointError, match=error):
        checkpoints.inspect(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="no such directory"):
        checkpoints.inspect(tmp_path / "missing")


def test_a_preset_round_trips_with_its_tokenizer_and_start_token_convention(tmp_path):
    path = write_llama3_preset(tmp_path / "llama", DOCUMENTS)
    info = checkpoints.inspect(tmp_path / ".." / tmp_path.name / "llama")  # any spelling: resolved to absolute
    assert info.path == path.resolve() and info.architecture == "keras_hub>Llama3Backbone"
    assert info.add_start_token and info.max_sequence_length is None  # rotary positions: no learned limit
    lm, tokenizer = checkpoints.load_causal_lm(info), checkpoints.load_tokenizer(info)
    assert lm.preprocessor is None and tokenizer.start_token_id is not None
    # Saved again (as the SFT stage does) and loaded: the same model, the same convention.
    again = checkpoints.save_preset(lm, tokenizer, tmp_path / "copy", add_start_token=True, sequence_length=64)
    copy = checkpoints.load_causal_lm(checkpoints.inspect(again))
    ids = tf.constant([[tokenizer.start_token_id, *tokenizer("the cat sees")]])
    np.testing.assert_array_equal(lm_lib.forward(copy, ids)[0].numpy(), lm_lib.forward(lm, ids)[0].numpy())
    assert checkpoints.inspect(again).add_start_token
    assert not list(tmp_path.glob(".copy.tmp*"))  # written through a staging folder, renamed into place


def test_hugging_face_layouts_load_with_their_tokenizers_and_conventions(tmp_path):
    """Llama 3 and GPT-2 written in Hugging Face's layout (safetensors, config.json, tokenizer files) by keras-hub's
    exporter (GPT-2 with HF's 4 x hidden feed-forward, which its config leaves implicit), loaded back through
    keras-hub's transformers converters: the same logits, the same token ids, and
    each family's start-token convention read as transformers reads it."""
    from pipeline.lm import data as data_lib

    llama_preset = write_llama3_preset(tmp_path / "llama", DOCUMENTS)
    tokenizer = data_lib.train_tokenizer(DOCUMENTS, 300, tmp_path / "bpe")
    gpt2 = lm_lib.build_causal_lm(
        lm_lib.LMSize(
            vocabulary_size=tokenizer.vocabulary_size(),
            num_layers=1,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=64,
            max_sequence_length=32,
        )
    )
    gpt2_preset = checkpoints.save_preset(gpt2, tokenizer, tmp_path / "gpt2", add_start_token=False, sequence_length=32)
    for preset, model_type, starts in ((llama_preset, "llama", True), (gpt2_preset, "gpt2", False)):
        hf = write_huggingface(preset, tmp_path / f"{model_type}-hf")
        assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file()
        info = checkpoints.inspect(hf)
        assert (info.layout, info.architecture, info.add_start_token) == ("huggingface", model_type, starts)
        source = checkpoints.inspect(preset)
        original, loaded = checkpoints.load_causal_lm(source), checkpoints.load_causal_lm(info)
        source_tokenizer, hf_tokenizer = checkpoints.load_tokenizer(source), checkpoints.load_tokenizer(info)
        text = "the cat sees the moon."
        np.testing.assert_array_equal(hf_tokenizer(text), source_tokenizer(text))
        assert hf_tokenizer.end_token_id == source_tokenizer.end_token_id
        ids = tf.constant([list(source_tokenizer(text))])
        np.testing.assert_allclose(
            lm_lib.forward(loaded, ids)[0].numpy(), lm_lib.forward(original, ids)[0].numpy(), atol=1e-6
        )
    assert checkpoints.inspect(tmp_path / "gpt2-hf").max_sequence_length == 32


def test_stored_dtypes_are_read_from_the_safetensors_headers(tmp_path):
    """What decides the Mistral float16 warning: every shard's dtypes, as safetensors wrote them."""
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float16)}, str(tmp_path / "model.safetensors"))
    assert checkpoints.stored_dtypes(tmp_path) == {"F32", "F16"}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"a": np.zeros(2, np.int32)}, str(sharded / "one.safetensors"), metadata={"format": "pt"})
    save_file({"b": np.zeros(2, np.float64)}, str(sharded / "two.safetensors"))
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}})
    )
    assert checkpoints.stored_dtypes(sharded) == {"I32", "F64"}
