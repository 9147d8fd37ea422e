"""Writes a random-weight causal LM in Hugging Face's layout, as transformers' save_pretrained writes it.

The benchmark's and the parity check's common input: the project loads it through keras-hub's converters, the
peer through transformers. The tokenizer is a byte-level BPE whose merges are synthetic (pairs of byte symbols,
enough of them for the vocabulary size): the benchmarks feed token ids, but both loaders read the tokenizer's
files, so they must be whole. Nothing is downloaded.

    python write_checkpoint.py DIR [--arch gpt2|llama|mistral|qwen2|qwen3] [--size 124m|small|tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers

SIZES = {  # GPT-2 124M: transformers' GPT2Config() defaults
    ("gpt2", "124m"): dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    ("gpt2", "small"): dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=256, n_positions=256),  # lm_throughput's small
    ("gpt2", "tiny"): dict(vocab_size=1024, n_layer=2, n_head=4, n_embd=64, n_positions=128),
}
_LLAMA_LIKE = dict(
    vocab_size=1024,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_size=64,
    intermediate_size=128,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)
SIZES.update({(arch, "tiny"): _LLAMA_LIKE for arch in ("llama", "mistral", "qwen2", "qwen3")})
MODELS = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}
EOS = "<|endoftext|>"


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level BPE's alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for _, c in sorted(zip(printable, codes))]


def write_tokenizer(path: Path, vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    symbols = byte_symbols()
    merges = [(a, b) for a in symbols for b in symbols][: vocab_size - 1 - len(symbols)]
    vocab = {s: i for i, s in enumerate(symbols + [a + b for a, b in merges])}
    vocab[EOS] = len(vocab)
    tokenizer = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    tokenizer.save_pretrained(str(path))  # tokenizer.json, tokenizer_config.json
    # and the two files the GPT-2 repositories on the Hub carry beside them (transformers 5 no longer writes them)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--arch", choices=sorted(MODELS), default="gpt2")
    parser.add_argument("--size", choices=["124m", "small", "tiny"], default="124m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--initializer-range",
        type=float,
        default=0.02,
        help="std of the random weights (transformers' default 0.02 leaves attention near uniform, "
        "where a parity check cannot see positions; 0.3 makes it sharp)",
    )
    args = parser.parse_args()
    settings = SIZES[(args.arch, args.size)]
    args.path.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(args.path, settings["vocab_size"])
    eos = tokenizer.convert_tokens_to_ids(EOS)
    torch.manual_seed(args.seed)
    config_class, model_class = (getattr(transformers, name) for name in MODELS[args.arch])
    model = model_class(
        config_class(**settings, bos_token_id=eos, eos_token_id=eos, initializer_range=args.initializer_range)
    )
    model.save_pretrained(str(args.path))
    print(f"{args.path}: {args.arch} {args.size}, {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
