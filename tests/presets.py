"""Tiny pretrained-style checkpoints the tests write themselves, in keras-hub's preset layout (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def write_llama3_preset(path: Path, documents: list[str], seed: int = 0) -> Path:
    """A random-weight Llama 3 (rotary positions, grouped-query attention) with a byte-level BPE trained on the
    documents and Llama 3's special tokens; its preprocessor records Llama 3's convention: a start token first."""
    import keras
    import keras_hub
    from tokenizers import ByteLevelBPETokenizer

    vocabulary_dir = path.parent / f"{path.name}-vocabulary"
    vocabulary_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        documents, vocab_size=300, min_frequency=2, special_tokens=LLAMA3_SPECIAL, show_progress=False
    )
    bpe.save_model(str(vocabulary_dir))
    tokenizer = keras_hub.tokenizers.Llama3Tokenizer(
        vocabulary=str(vocabulary_dir / "vocab.json"), merges=str(vocabulary_dir / "merges.txt")
    )
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
    )
    preprocessor = keras_hub.models.Llama3CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=64, add_start_token=True
    )
    keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(str(path))
    return path


HF_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}


def write_huggingface(preset: Path, path: Path) -> Path:
    """The keras-hub preset at `preset` in Hugging Face's layout (config.json, model.safetensors, the tokenizer's
    files), written by keras-hub's own exporter; config.json gets the `architectures` entry transformers writes
    and keras-hub's GPT-2 exporter leaves out."""
    import json

    import keras_hub

    keras_hub.models.CausalLM.from_preset(str(preset)).export_to_transformers(str(path))
    config = json.loads((path / "config.json").read_text())
    config.setdefault("architectures", [HF_ARCHITECTURES[config["model_type"]]])
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path
