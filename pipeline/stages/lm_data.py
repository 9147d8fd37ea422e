"""LM data stage: corpus -> train/held-out split, a tokenizer (the checkpoint's, or one trained on the corpus and
saved in the run directory), SFT token batches, and prompts (the first tokens of documents)."""

from __future__ import annotations

import dataclasses

import numpy as np

from models import checkpoints
from pipeline import summaries
from pipeline.config import ConfigError, LMConfig
from pipeline.lm import data as data_lib
from pipeline.rundir import RunDir


@dataclasses.dataclass
class LMData:
    tokenizer: object
    train_ids: np.ndarray
    train_mask: np.ndarray
    val_ids: np.ndarray
    val_mask: np.ndarray
    train_prompts: np.ndarray  # [N, prompt_tokens] from training documents, for PPO
    eval_prompts: np.ndarray   # [M, prompt_tokens] from held-out documents
    bos_id: int | None = None  # the start token every sequence begins with (a checkpoint's convention), or None

    @property
    def eos_id(self) -> int:
        return self.tokenizer.end_token_id

    def decode(self, ids) -> list[str]:
        """Text of each row, cut before its first EOS, without the start token."""
        texts = []
        for row in np.asarray(ids):
            end = np.flatnonzero(row == self.eos_id)
            row = row[:end[0]] if len(end) else row
            texts.append(str(self.tokenizer.detokenize(row[row != self.bos_id] if self.bos_id is not None else row)))
        return texts


def run(cfg: LMConfig, run_dir: RunDir) -> LMData:
    d = cfg.data
    try:
        documents = data_lib.read_corpus(d.corpus, d.format, d.field)
    except (data_lib.CorpusError, OSError) as e:
        raise ConfigError(f"data.corpus: {e}. The default is Debian's fortunes quotes (apt-get install fortunes, "
                          f"or fortunes-min); or point data.corpus (and data.format) at your own text") from None
    rng = np.random.default_rng(d.seed)
    documents = [documents[i] for i in rng.permutation(len(documents))][:d.max_documents]
    held_out = max(1, int(len(documents) * d.validation_fraction))
    val_docs, train_docs = documents[:held_out], documents[held_out:]
    tokenizer, bos_id = _tokenizer(cfg, run_dir, train_docs)
    train_ids, train_mask = data_lib.encode_documents(tokenizer, train_docs, d.sequence_length, bos_id)
    val_ids, val_mask = data_lib.encode_documents(tokenizer, val_docs, d.sequence_length, bos_id)
    data = LMData(tokenizer, train_ids, train_mask, val_ids, val_mask,
                  _prompts(train_ids, train_mask, d.prompt_tokens), _prompts(val_ids, val_mask, d.prompt_tokens),
                  bos_id)
    if not len(data.train_prompts) or not len(data.eval_prompts):
        raise ConfigError(f"data.prompt_tokens: no document has more than {d.prompt_tokens} tokens; lower it")
    with summaries.stage_writer(run_dir, "data"):
        summaries.text("data/corpus", summaries.markdown_table({
            "corpus": d.corpus, "format": d.format, "documents (train / held out)": f"{len(train_docs)} / {held_out}",
            "vocabulary": tokenizer.vocabulary_size(), "tokens per document (mean)": f"{train_mask.sum(1).mean():.1f}",
            "PPO prompts / evaluation prompts": f"{len(data.train_prompts)} / {len(data.eval_prompts)}"}))
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


def _prompts(ids: np.ndarray, mask: np.ndarray, length: int) -> np.ndarray:
    """The first `length` tokens of every document that continues past them."""
    return ids[mask.sum(axis=1) > length, :length]
