"""Corpus formats, the locally trained tokenizer, and SFT lowering validation perplexity, on data made here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from models import lm as lm_lib
from pipeline.lm import data
from pipeline.lm.sft import SFTTrainer

SUBJECTS, VERBS, OBJECTS = (
    ["the cat", "a dog", "my friend", "the bird"],
    ["sees", "likes", "finds"],
    ["the mat", "a ball", "the moon", "some bread"],
)


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n)]


def test_corpus_formats(tmp_path):
    (tmp_path / "plain.txt").write_text("first line\n\n  second line  \n")
    assert data.read_corpus(tmp_path / "plain.txt", "text") == ["first line", "second line"]
    (tmp_path / "quotes").write_text("A quote\non two lines.\n%\nAnother one.\n%\n")
    assert data.read_corpus(tmp_path / "quotes", "fortune") == ["A quote on two lines.", "Another one."]
    folder = tmp_path / "fortunes"  # as Debian lays it out: file, .dat index, .u8 symlink to the file
    folder.mkdir()
    (folder / "art").write_text("One.\n%\nTwo.\n")
    (folder / "art.dat").write_bytes(b"\x00\x01")
    (folder / "art.u8").symlink_to(folder / "art")
    assert data.read_corpus(folder, "fortune") == ["One.", "Two."]
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "hi", "x": 1}) + "\n\n" + json.dumps({"prompt": "yo"}))
    assert data.read_corpus(tmp_path / "rows.jsonl", "jsonl", field="prompt") == ["hi", "yo"]
    with pytest.raises(data.CorpusError, match=r"rows.jsonl:1: expected a JSON object with a 'text'"):
        data.read_corpus(tmp_path / "rows.jsonl", "jsonl")
    (tmp_path / "odd.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": None}) + "\n")
    with pytest.raises(data.CorpusError, match=r"odd.jsonl:2: 'text' is null, not a string"):
        data.read_corpus(tmp_path / "odd.jsonl", "jsonl")  # str() would have trained on "None"
    with pytest.raises(data.CorpusError, match="allowed text, fortune, jsonl"):
        data.read_corpus(tmp_path / "plain.txt", "csv")
    with pytest.raises(data.CorpusError, match="no corpus file"):
        data.read_corpus(tmp_path / "missing", "text")


def test_tokenizer_round_trips_and_is_saved(tmp_path):
    docs = sentences(300, seed=0)
    tokenizer = data.train_tokenizer(docs, vocabulary_size=300, out_dir=tmp_path / "tok")
    assert tokenizer.vocabulary_size() <= 300 and tokenizer.token_to_id(data.END_TOKEN) == 0
    reloaded = data.load_tokenizer(tmp_path / "tok")
    text = "the cat finds some bread, and unseen words: Zebra!"
    ids = reloaded(text)
    assert reloaded.detokenize(ids) == text  # byte-level: any text round-trips
    assert len(tokenizer("the cat sees the moon.")) < len("the cat sees the moon.") / 2  # merges learnt
    ids, mask = data.encode_documents(tokenizer, ["the cat", "a dog likes the moon. " * 10], sequence_length=12)
    assert ids.shape == (2, 12) and mask[0].sum() < 12 and mask[1].sum() == 12
    assert ids[0, mask[0].sum() - 1] == 0 and ids[1, -1] == 0  # every row ends in the EOS


def test_sft_lowers_validation_perplexity(tmp_path):
    tokenizer = data.train_tokenizer(sentences(500, seed=1), vocabulary_size=300, out_dir=tmp_path / "tok")
    train_ids, train_mask = data.encode_documents(tokenizer, sentences(512, seed=2), sequence_length=16)
    val_ids, val_mask = data.encode_documents(tokenizer, sentences(64, seed=3), sequence_length=16)
    size = lm_lib.LMSize(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
    )
    trainer = SFTTrainer(lm_lib.build_causal_lm(size), learning_rate=3e-3, jit_compile=False)
    before = trainer.perplexity(val_ids, val_mask)
    for _ in range(3):
        for ids, mask in data.language_model_dataset(train_ids, train_mask, batch_size=32, seed=0):
            trainer.train_step(ids, mask)
    after = trainer.perplexity(val_ids, val_mask)
    assert before > 100 and after < 6, (before, after)  # a near-uniform guess, then the grammar learnt


def test_sft_stops_on_a_non_finite_loss_or_gradient():
    from pipeline.core.guards import NonFiniteError

    lm = lm_lib.build_causal_lm(
        lm_lib.LMSize(
            vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=8
        )
    )
    trainer = SFTTrainer(lm, learning_rate=1e30, jit_compile=False)
    ids, mask = np.arange(16, dtype=np.int32).reshape(2, 8) % 32, np.ones((2, 8), np.int32)
    with pytest.raises(NonFiniteError, match="sft"):
        for _ in range(5):
            trainer.train_step(ids, mask)


def test_prompt_files_are_encoded_right_padded_and_too_long_or_empty_ones_left_out(tmp_path):
    tokenizer = data.train_tokenizer(sentences(500, seed=1), vocabulary_size=300, out_dir=tmp_path / "tok")
    texts = ["the cat", "my friend likes the moon and the cat sees the ball", "", "a dog sees"]
    ids, kept = data.encode_prompts(tokenizer, texts, max_tokens=6, start_id=None)
    assert kept.tolist() == [0, 3]  # the long one and the empty one left out
    lengths = data.prompt_lengths(ids, tokenizer.end_token_id)
    assert [str(tokenizer.detokenize(row[:n])) for row, n in zip(ids, lengths)] == ["the cat", "a dog sees"]
    assert ids.shape[1] == lengths.max() and (ids[0, lengths[0] :] == tokenizer.end_token_id).all()
    with_start, _ = data.encode_prompts(tokenizer, ["the cat", ""], max_tokens=6, start_id=5)
    assert with_start.tolist() == [[5] + ids[0, : lengths[0]].tolist()]  # a start token alone is no prompt


def test_prompt_rows_keep_their_columns_and_bad_rows_name_file_and_line(tmp_path):
    rows = [{"prompt": "1 + 1 =", "answer": "2"}, {"prompt": "2 + 2 =", "answer": "4", "level": [1, 2]}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    read = data.read_prompt_rows(path, "prompt", required=("answer",))
    assert read.texts == ["1 + 1 =", "2 + 2 ="]
    assert read.columns == {"answer": ["2", "4"], "level": [None, [1, 2]]}  # None where a row lacks one
    assert read.take([1, 1]).columns["answer"] == ["4", "4"]
    for line, fragment in [
        ({"prompt": ["a", "b"], "answer": "1"}, 'is ["a", "b"], not a string'),
        ({"prompt": 7, "answer": "1"}, "is 7, not a string"),
        ({"prompt": "3 + 3 ="}, "no 'answer' column, which the reward function takes"),
    ]:
        path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(line) + "\n")
        with pytest.raises(data.CorpusError, match=re.escape("prompts.jsonl:3: ") + ".*" + re.escape(fragment)):
            data.read_prompt_rows(path, "prompt", required=("answer",))


def test_the_data_stage_keeps_each_prompts_columns_on_its_row_through_the_shuffle_and_length_filter(tmp_path):
    from pipeline import config
    from pipeline.core.rundir import RunDir
    from pipeline.lm.stages import data as data_stage

    (tmp_path / "corpus.txt").write_text("\n".join(sentences(200, seed=3)))
    lines = [{"prompt": f"{n} " + "and more " * (n % 4), "answer": n} for n in range(60)]  # some too long
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    cfg = config.from_dict(
        {
            "task": "lm",
            "data": {
                "corpus": str(tmp_path / "corpus.txt"),
                "format": "text",
                "vocabulary_size": 300,
                "prompts": str(tmp_path / "prompts.jsonl"),
                "prompt_tokens": 6,
                "validation_fraction": 0.25,
            },
            "reward": {"function": "tests.lm_rewards:exact_answer"},
        }
    )
    lm_data = data_stage.run(cfg, RunDir(tmp_path / "run"))
    for ids, columns in ((lm_data.train_prompts, lm_data.train_columns), (lm_data.eval_prompts, lm_data.eval_columns)):
        assert 0 < len(ids) < 60 * 0.75 and len(columns["answer"]) == len(ids)
        for text, answer in zip(lm_data.decode(ids), columns["answer"]):
            assert int(text.split()[0]) == answer
