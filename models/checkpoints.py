"""Pretrained causal LMs from a local directory, through keras-hub's own loaders (nothing is downloaded).

Two layouts: keras-hub's preset (what `save_to_preset` writes: config.json naming a registered backbone class,
model.weights.h5, tokenizer.json and the tokenizer's assets, preprocessor.json), and Hugging Face's (config.json
with a model_type, model.safetensors or a sharded index, the tokenizer's files), which keras-hub's transformers
converters read. `inspect` reads only JSON files, so the driver checks a checkpoint before TensorFlow loads;
`load_*` build the model and its tokenizer; `save_preset` writes one (the SFT stage's, for a later run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import struct
from pathlib import Path

log = logging.getLogger(__name__)

# Backbones whose causal LM this project's learner and sampler serve (their LM head is the token embedding's
# reverse; sampling through keras-hub's cache API): registered name -> what users call it.
SUPPORTED = {
    "keras_hub>GPT2Backbone": "GPT-2",
    "keras_hub>LlamaBackbone": "Llama 2",
    "keras_hub>Llama3Backbone": "Llama 3",
    "keras_hub>MistralBackbone": "Mistral",
    "keras_hub>QwenBackbone": "Qwen 2",
    "keras_hub>Qwen3Backbone": "Qwen 3",
}


# Hugging Face model_type -> the same families, through keras-hub's transformers converters.
SUPPORTED_HF = {"gpt2": "GPT-2", "llama": "Llama 2 and 3", "mistral": "Mistral", "qwen2": "Qwen 2", "qwen3": "Qwen 3"}


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used; the message says what is wrong and what would work."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    path: Path  # absolute
    architecture: str  # a SUPPORTED or SUPPORTED_HF key
    layout: str  # "keras-hub" or "huggingface"
    add_start_token: bool  # the checkpoint's convention: sequences begin with its start token
    max_sequence_length: int | None  # learned positions, where the architecture has a limit (GPT-2)

    @property
    def family(self) -> str:
        """What users call the architecture, whichever layout: "GPT-2", "Llama 3", "Llama 2 and 3", ..."""
        return SUPPORTED.get(self.architecture) or SUPPORTED_HF[self.architecture]


def inspect(path: str | Path) -> CheckpointInfo:
    """What the directory holds, from its JSON files alone; CheckpointError if it cannot be used."""
    path = Path(path).expanduser().resolve()  # absolute: a bare name equal to a keras-hub preset would download
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: no such directory (a local keras-hub preset or Hugging Face checkpoint directory is expected)"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; expected a keras-hub preset directory (config.json, "
            f"model.weights.h5, tokenizer.json, preprocessor.json) or a Hugging Face one "
            f"(config.json, model.safetensors, the tokenizer's files)"
        )
    config = _read_json(config_file)
    if "model_type" in config:
        return _inspect_huggingface(path, config)
    architecture = config.get("registered_name")
    if architecture not in SUPPORTED:
        supported = ", ".join(f"{name} ({key.split('>')[1]})" for key, name in SUPPORTED.items())
        raise CheckpointError(
            f"{path}: backbone {architecture!r} is not supported; supported: {supported}, or a "
            f"Hugging Face checkpoint of model_type {', '.join(SUPPORTED_HF)}"
        )
    for required in ("model.weights.h5", "tokenizer.json"):
        if not (path / required).is_file():
            raise CheckpointError(f"{path}: {required} is missing")
    preprocessor = _read_json(path / "preprocessor.json") if (path / "preprocessor.json").is_file() else {}
    add_start_token = bool(preprocessor.get("config", {}).get("add_start_token", False))
    return CheckpointInfo(
        path, architecture, "keras-hub", add_start_token, config.get("config", {}).get("max_sequence_length")
    )


def _inspect_huggingface(path: Path, config: dict) -> CheckpointInfo:
    model_type = config["model_type"]
    if model_type not in SUPPORTED_HF:
        raise CheckpointError(
            f"{path}: Hugging Face model_type {model_type!r} is not supported; supported: "
            f"{', '.join(f'{key} ({name})' for key, name in SUPPORTED_HF.items())}"
        )
    if not config.get("architectures"):
        raise CheckpointError(
            f"{path}: config.json has no 'architectures' (e.g. [\"LlamaForCausalLM\"]), which "
            f"keras-hub's loader reads; transformers' save_pretrained writes it"
        )
    if not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise CheckpointError(
            f"{path}: no model.safetensors (or model.safetensors.index.json); keras-hub reads "
            f"safetensors weights only, not pytorch_model.bin"
        )
    tokenizer_files = ("vocab.json", "merges.txt") if model_type == "gpt2" else ("tokenizer.json",)
    missing = [name for name in tokenizer_files if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: the tokenizer's {', '.join(missing)} missing")
    return CheckpointInfo(
        path,
        model_type,
        "huggingface",
        _hf_adds_start_token(path),
        config.get("n_positions") or config.get("max_position_embeddings"),
    )


def _hf_adds_start_token(path: Path) -> bool:
    """What transformers does: tokenizer_config.json's add_bos_token where it says, else whether tokenizer.json's
    post-processor puts a special token before a single sequence (Llama 3's does, GPT-2's has none)."""
    if (path / "tokenizer_config.json").is_file():
        setting = _read_json(path / "tokenizer_config.json").get("add_bos_token")
        if setting is not None:
            return bool(setting)
    if (path / "tokenizer.json").is_file():
        post = _read_json(path / "tokenizer.json").get("post_processor") or {}
        processors = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
        for processor in processors:
            single = processor.get("single") if processor.get("type") == "TemplateProcessing" else None
            if single and "SpecialToken" in single[0]:
                return True
    return False


def load_causal_lm(info: CheckpointInfo, precision: str = "float32"):
    """The checkpoint's CausalLM with its weights, no preprocessor (the pipeline tokenizes itself)."""
    import keras_hub

    if info.layout == "huggingface" and info.architecture == "mistral" and "F32" in stored_dtypes(info.path):
        # keras-hub 0.32's Mistral converter casts every weight to float16 on the way in: lossless for the
        # bfloat16 weights Mistral ships (measured: logits equal transformers' to 2e-5), not for float32 ones.
        log.warning(
            "%s: float32 Mistral weights are rounded to float16 by keras-hub's converter (logits differ "
            "from transformers' by up to ~5e-2 on a test model); a bfloat16 copy of the checkpoint loads "
            "exactly",
            info.path,
        )
    return keras_hub.models.CausalLM.from_preset(str(info.path), preprocessor=None, dtype=precision)


def stored_dtypes(path: Path) -> set[str]:
    """The dtypes ("F32", "BF16", ...) a Hugging Face checkpoint's safetensors files store, from their headers."""
    index = path / "model.safetensors.index.json"
    files = sorted(set(_read_json(index).get("weight_map", {}).values())) if index.is_file() else ["model.safetensors"]
    dtypes = set()
    for name in files:
        with open(path / name, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        dtypes |= {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}
    return dtypes


def load_tokenizer(info: CheckpointInfo):
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(str(info.path))


def save_preset(lm, tokenizer, path: str | Path, add_start_token: bool, sequence_length: int) -> Path:
    """Writes lm and tokenizer as a keras-hub preset at path, atomically (a half-written preset never sits there),
    recording whether sequences begin with the start token."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    preprocessor = type(lm).preprocessor_cls(
        tokenizer=tokenizer, sequence_length=sequence_length, add_start_token=add_start_token
    )
    type(lm)(backbone=lm.backbone, preprocessor=preprocessor).save_to_preset(str(staging))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(staging, path)
    return path


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return value
