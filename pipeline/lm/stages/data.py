"""LM data stage: corpus -> train/held-out split, a tokenizer (the checkpoint's, or one trained on the corpus and
saved in the run directory), SFT token batches, and prompts (the first tokens of documents, or a JSONL file's)."""

from __future__ import annotations

import numpy as np

from models import checkpoints
from pipeline.core import summaries
from pipeline.core.rundir import RunDir
from pipeline.core.schema import ConfigError
from pipeline.lm import data as data_lib
from pipeline.lm.config import LMConfig
from pipeline.lm.data import LMData


def run(cfg: LMConfig, run_dir: RunDir) -> LMData:
    d = cfg.data
    try:
        documents = data_lib.read_corpus(d.corpus, d.format, d.field)
    except (data_lib.CorpusError, OSError) as e:
        raise ConfigError(
            f"data.corpus: {e}. The default is Debian's fortunes quotes (apt-get install fortunes, "
            f"or fortunes-min); or point data.corpus (and data.format) at your own text"
        ) from None
    rng = np.random.default_rng(d.seed)
    documents = [documents[i] for i in rng.permutation(len(documents))][: d.max_documents]
    held_out = max(1, int(len(documents) * d.validation_fraction))
    val_docs, train_docs = documents[:held_out], documents[held_out:]
    tokenizer, bos_id = _tokenizer(cfg, run_dir, train_docs)
    train_ids, train_mask = data_lib.encode_documents(tokenizer, train_docs, d.sequence_length, bos_id)
    val_ids, val_mask = data_lib.encode_documents(tokenizer, val_docs, d.sequence_length, bos_id)
    if d.prompts is None:
        prompts, columns, dropped = (
            (_prompts(train_ids, train_mask, d.prompt_tokens), _prompts(val_ids, val_mask, d.prompt_tokens)),
            ({}, {}),
            0,
        )
        if not len(prompts[0]) or not len(prompts[1]):
            raise ConfigError(f"data.prompt_tokens: no document has more than {d.prompt_tokens} tokens; lower it")
    else:
        prompts, columns, dropped = _prompt_file(cfg, tokenizer, bos_id)
    data = LMData(tokenizer, train_ids, train_mask, val_ids, val_mask, *prompts, bos_id, *columns)
    with summaries.stage_writer(run_dir, "data"):
        summaries.text(
            "data/corpus",
            summaries.markdown_table(
                {
                    "corpus": d.corpus,
                    "format": d.format,
                    "documents (train / held out)": f"{len(train_docs)} / {held_out}",
                    "vocabulary": tokenizer.vocabulary_size(),
                    "tokens per document (mean)": f"{train_mask.sum(1).mean():.1f}",
                    "PPO prompts / evaluation prompts": f"{len(data.train_prompts)} / {len(data.eval_prompts)}",
                    "prompts": d.prompts or f"the first {d.prompt_tokens} tokens of documents",
                    "prompts left out (empty, or over data.prompt_tokens)": dropped,
                }
            ),
        )
        summaries.text("data/examples", "\n\n".join(f"* {text}" for text in train_docs[:5]))
    return data


def _tokenizer(cfg: LMConfig, run_dir: RunDir, train_docs: list[str]):
    """(tokenizer, start token id or None): the checkpoint's, with its convention, or a byte-level BPE trained on
    the training documents (saved in the run directory; no start token, as GPT-2)."""
    if cfg.model.checkpoint is not None:
        info = checkpoints.inspect(cfg.model.checkpoint)  # checked before any work by the driver
        tokenizer = checkpoints.load_tokenizer(info)
        return tokenizer, tokenizer.start_token_id if info.add_start_token else None
    tokenizer_dir = run_dir.root / "tokenizer"
    if (tokenizer_dir / "vocab.json").exists():
        return data_lib.load_tokenizer(tokenizer_dir), None
    return data_lib.train_tokenizer(train_docs, cfg.data.vocabulary_size, tokenizer_dir), None


def _prompt_file(cfg: LMConfig, tokenizer, bos_id):
    """((train, held-out) prompt ids, (train, held-out) columns), prompts left out) from data.prompts, split as
    documents are; the rows' other columns go with them, to the reward functions."""
    from pipeline.lm.rewards import load_reward_functions

    d = cfg.data
    try:
        rows = data_lib.read_prompt_rows(d.prompts, d.prompt_field, load_reward_functions(cfg.reward).columns)
    except (data_lib.CorpusError, OSError) as e:
        raise ConfigError(f"data.prompts: {e}") from None
    order = np.random.default_rng(d.seed).permutation(len(rows.texts))
    held_out = max(1, int(len(order) * d.validation_fraction))
    parts, dropped = [], 0
    for part in (order[:held_out], order[held_out:]):
        part_rows = rows.take(part)
        ids, kept = data_lib.encode_prompts(tokenizer, part_rows.texts, d.prompt_tokens, bos_id)
        parts.append((ids, {name: _objects(values) for name, values in part_rows.take(kept).columns.items()}))
        dropped += len(part) - len(kept)
    (val, val_columns), (train, train_columns) = parts
    if not len(train) or not len(val):
        raise ConfigError(
            f"data.prompts: {d.prompts}: no {'training' if not len(train) else 'held-out'} prompt of 1 "
            f"to data.prompt_tokens ({d.prompt_tokens}) tokens; raise data.prompt_tokens or add prompts"
        )
    return (train, val), (train_columns, val_columns), dropped


def _objects(values: list) -> np.ndarray:
    """A column as a 1-D object array (rows may hold lists or dicts, which np.array would turn into axes)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _prompts(ids: np.ndarray, mask: np.ndarray, length: int) -> np.ndarray:
    """The first `length` tokens of every document that continues past them."""
    return ids[mask.sum(axis=1) > length, :length]
