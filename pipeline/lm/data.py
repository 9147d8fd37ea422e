"""Text corpora and a tokenizer trained on them locally: nothing is downloaded.

Corpus formats: `text` (one document per non-empty line), `fortune` (entries separated by a line holding only
`%`, as in Debian's fortunes files) and `jsonl` (one JSON object per line, the text under a named field).
The tokenizer is a byte-level BPE trained with Hugging Face `tokenizers` and loaded into keras-hub's
GPT2Tokenizer, so it round-trips any text and its ops exist in a stock TF Serving build (TF Text's).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import keras_hub
import numpy as np
import tensorflow as tf

END_TOKEN = "<|endoftext|>"  # id 0: end of a document (EOS) and padding; GPT2Tokenizer requires it
FORMATS = ("text", "fortune", "jsonl")


class CorpusError(ValueError):
    """A corpus cannot be read; the message names the path and what was expected."""


def read_corpus(path: str | Path, fmt: str, field: str = "text") -> list[str]:
    path = Path(path)
    if fmt not in FORMATS:
        raise CorpusError(f"corpus format {fmt!r}: allowed {', '.join(FORMATS)}")
    # In a folder: every regular file but fortune's .dat indexes (and its .u8 symlinks, which repeat files).
    files = (
        sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink() and p.suffix != ".dat")
        if path.is_dir()
        else [path]
    )
    if not files or not all(p.exists() for p in files):
        raise CorpusError(f"{path}: no corpus file there")
    documents = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        if fmt == "text":
            documents += [line.strip() for line in text.splitlines() if line.strip()]
        elif fmt == "fortune":
            entries = re.split(r"^%[ \t]*$", text, flags=re.MULTILINE)
            documents += [" ".join(e.split()) for e in entries if e.strip()]
        else:
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                documents.append(_json_text(file, number, line, field)[0])
    if not documents:
        raise CorpusError(f"{path}: no documents found in format {fmt!r}")
    return documents


def _json_text(file, number: int, line: str, field: str) -> tuple[str, dict]:
    """(the row's text, the row) of one JSONL line; a CorpusError naming file:line unless the line is an object
    whose `field` is a string (not null, a number or a list, which str() would quietly turn into text)."""
    try:
        row = json.loads(line)
        value = row[field]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CorpusError(f"{file}:{number}: expected a JSON object with a {field!r} string ({e})") from None
    if not isinstance(value, str):
        raise CorpusError(
            f"{file}:{number}: {field!r} is {json.dumps(value)[:40]}, not a string; expected a JSON object with a "
            f"{field!r} string"
        )
    return value, row


@dataclasses.dataclass(frozen=True)
class PromptRows:
    """A prompt file's rows: each prompt's text and the row's other columns (TRL passes them to reward functions
    as keyword arguments), aligned."""

    texts: list[str]
    columns: dict[str, list]  # column -> one value per row (None where a row lacks the column)

    def take(self, rows) -> PromptRows:
        return PromptRows([self.texts[i] for i in rows], {k: [v[i] for i in rows] for k, v in self.columns.items()})


def read_prompt_rows(path: str | Path, field: str, required: tuple[str, ...] = ()) -> PromptRows:
    """The rows of a JSONL prompt file. CorpusError naming file:line for a prompt that is not a string, or a row
    without a column in `required` (what a reward function asks for by name)."""
    path = Path(path)
    texts, rows = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        text, row = _json_text(path, number, line, field)
        missing = [column for column in required if column not in row]
        if missing:
            raise CorpusError(
                f"{path}:{number}: no {', '.join(map(repr, missing))} column, which the reward function takes; "
                f"every row needs {', '.join(map(repr, required))}"
            )
        texts.append(text)
        rows.append({k: v for k, v in row.items() if k != field})
    if not texts:
        raise CorpusError(f"{path}: no prompts found")
    names = sorted({k for row in rows for k in row})
    return PromptRows(texts, {k: [row.get(k) for row in rows] for k in names})


def train_tokenizer(documents: list[str], vocabulary_size: int, out_dir: str | Path):
    """Trains a byte-level BPE on the documents, writes vocab.json and merges.txt, returns the keras-hub tokenizer."""
    from tokenizers import ByteLevelBPETokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        documents, vocab_size=vocabulary_size, min_frequency=2, special_tokens=[END_TOKEN], show_progress=False
    )
    bpe.save_model(str(out_dir))
    return load_tokenizer(out_dir)


def load_tokenizer(directory: str | Path):
    directory = Path(directory)
    return keras_hub.tokenizers.GPT2Tokenizer(
        vocabulary=str(directory / "vocab.json"), merges=str(directory / "merges.txt")
    )


def encode_documents(
    tokenizer, documents: list[str], sequence_length: int, start_id: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """[N, sequence_length] token ids ([start +] document + EOS, cut or padded with EOS) and the 0/1 mask of real
    tokens. start_id: the start token a checkpoint's convention puts first (None: none, as GPT-2's)."""
    end = tokenizer.end_token_id
    start = [] if start_id is None else [start_id]
    ids = np.full((len(documents), sequence_length), end, np.int32)
    mask = np.zeros((len(documents), sequence_length), np.int32)
    for row, tokens in enumerate(tokenizer(tf.constant(documents))):
        tokens = (start + list(np.asarray(tokens)))[: sequence_length - 1] + [end]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def encode_prompts(
    tokenizer, texts: list[str], max_tokens: int, start_id: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """([N, P] prompt ids right-padded with EOS, the indices of the texts kept): [start +] each text's tokens;
    a prompt longer than max_tokens, or empty, is left out (as TRL's examples filter prompts by length). P is the
    longest prompt kept."""
    start = [] if start_id is None else [start_id]
    rows = [start + [int(t) for t in np.asarray(tokens)] for tokens in tokenizer(tf.constant(texts))] if texts else []
    kept = [i for i, row in enumerate(rows) if 0 < len(row) <= max_tokens and row != start]
    ids = np.full((len(kept), max((len(rows[i]) for i in kept), default=0)), tokenizer.end_token_id, np.int32)
    for out, i in enumerate(kept):
        ids[out, : len(rows[i])] = rows[i]
    return ids, np.asarray(kept, np.int64)


def prompt_lengths(prompt_ids, pad_id: int) -> np.ndarray:
    """[N] lengths of prompts right-padded with `pad_id` (EOS, which no prompt holds): up to each row's first pad."""
    is_pad = np.asarray(prompt_ids) == pad_id
    return np.where(is_pad.any(axis=1), is_pad.argmax(axis=1), is_pad.shape[1]).astype(np.int32)


def language_model_dataset(ids: np.ndarray, mask: np.ndarray, batch_size: int, seed: int, shuffle: bool = True):
    """tf.data of (token_ids, padding_mask) batches for next-token training."""
    dataset = tf.data.Dataset.from_tensor_slices((ids, mask))
    if shuffle:
        dataset = dataset.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=shuffle).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class LMData:
    """What the data stage hands the later stages: the tokenizer, SFT token batches and the prompts."""

    tokenizer: object
    train_ids: np.ndarray
    train_mask: np.ndarray
    val_ids: np.ndarray
    val_mask: np.ndarray
    train_prompts: np.ndarray  # [N, P] for PPO (right-padded with EOS: `prompt_batch` gives their lengths)
    eval_prompts: np.ndarray  # [M, P] held out, for evaluation
    bos_id: int | None = None  # the start token every sequence begins with (a checkpoint's convention), or None
    # A prompt file's other columns, aligned with train_prompts / eval_prompts rows: column -> object array [N]
    train_columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    eval_columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.end_token_id

    def prompt_batch(self, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prompt ids, [B] lengths): what the learner and sampler take. Every batch keeps the full width (the
        longest prompt of the data): one shape, so the compiled functions are traced and compiled once."""
        return prompts, prompt_lengths(prompts, self.eos_id)

    def decode(self, ids) -> list[str]:
        """Text of each row, cut before its first EOS, without the start token."""
        texts = []
        for row in np.asarray(ids):
            end = np.flatnonzero(row == self.eos_id)
            row = row[: end[0]] if len(end) else row
            texts.append(str(self.tokenizer.detokenize(row[row != self.bos_id] if self.bos_id is not None else row)))
        return texts


def columns_at(columns: dict[str, np.ndarray], rows) -> dict[str, list]:
    """Each column's values at these rows (indices, repeats allowed), as the lists reward functions get."""
    return {name: values[np.asarray(rows)].tolist() for name, values in columns.items()}
