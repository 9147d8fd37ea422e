"""Checkpoint directories: what loads, and clear errors for what does not, from their JSON files alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from models import checkpoints
from models import lm as lm_lib
from tests.conftest import OBJECTS
from tests.presets import write_llama3_preset

DOCUMENTS = [f"the cat sees {thing}." for thing in OBJECTS] * 20


def test_directories_that_cannot_load_say_why_and_what_would(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="no such directory"):
        checkpoints.inspect(tmp_path / "missing")
    with pytest.raises(checkpoints.CheckpointError, match="no config.json"):
        checkpoints.inspect(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(checkpoints.CheckpointError, match="Hugging Face checkpoint"):
        checkpoints.inspect(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"registered_name": "keras_hub>BertBackbone"}))
    with pytest.raises(checkpoints.CheckpointError, match=r"BertBackbone.*not supported; supported: GPT-2"):
        checkpoints.inspect(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"registered_name": "keras_hub>GPT2Backbone"}))
    with pytest.raises(checkpoints.CheckpointError, match="model.weights.h5 is missing"):
        checkpoints.inspect(tmp_path)


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
