"""Splits are tokenized once and the batches padded by our collate function: the batches must be
exactly what the tokenizer itself returns for the same texts, at every padding setting."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import minilm_tokenizer

from glasswork.data.datamodule import EncodedTexts, LengthBucketSampler, TextCollator, loader


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["good", "bad", "film", "unbelievably", "¡olé!", "naïve", "3.14", "—", "emoji🙂", "x"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))) for _ in range(n)]
    return texts + ["", "   "]  # empty texts are [CLS] [SEP]


@pytest.mark.parametrize(
    ("fixed", "multiple", "side"),
    [(False, None, "right"), (False, 8, "right"), (True, None, "right"), (True, 8, "right"), (False, 8, "left")],
)
def test_batches_equal_the_tokenizers_own(fixed, multiple, side):
    tokenizer = minilm_tokenizer()
    tokenizer.padding_side = side
    texts = _texts(40, seed=3)
    frame = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    collate = TextCollator(tokenizer, 32, multiple, fixed_length=fixed)  # 32: some texts are cut
    items = collate.encode(frame)
    every = [items[i] for i in range(len(items))]
    for batch_texts, batch_items in [(texts, every), (texts[:5], every[:5]), (texts[-2:], every[-2:])]:
        ours = collate(batch_items)
        theirs = tokenizer(
            batch_texts,
            padding="max_length" if fixed else "longest",
            truncation=True,
            max_length=32,
            pad_to_multiple_of=multiple,
            return_tensors="pt",
        )
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
        assert ours["input_ids"].dtype == ours["attention_mask"].dtype == torch.long
    assert max(len(ids) for ids, _ in items) == 32  # the cut happened
    assert collate(every)["labels"].tolist() == frame["label"].tolist()


@pytest.mark.parametrize("fixed", [False, True])
def test_widths_stop_at_a_max_length_that_is_not_a_multiple(fixed):
    # The tokenizer refuses max_length=30 with multiples of 8; we pad to multiples up to 30.
    tokenizer = minilm_tokenizer()
    texts = _texts(60, seed=4)
    collate = TextCollator(tokenizer, 30, 8, fixed_length=fixed)
    items = collate.encode(pd.DataFrame({"text": texts}))
    widths = {
        collate([items[j] for j in range(i, min(i + 3, len(items)))])["input_ids"].shape[1]
        for i in range(0, len(items), 3)
    }
    assert widths == {30} if fixed else (widths <= {8, 16, 24, 30} and len(widths) > 1)
    assert 30 in widths  # some texts are cut at 30 tokens


def test_unlabelled_frames_get_label_minus_one():
    collate = TextCollator(minilm_tokenizer(), 16)
    assert [label for _, label in collate.encode(pd.DataFrame({"text": ["a", "b"]}))] == [-1, -1]


def test_length_buckets_group_texts_by_their_token_count():
    # Bucketed batches are cut from texts sorted by tokens: far less padding than random ones.
    tokenizer = minilm_tokenizer()
    texts = _texts(400, seed=5)
    frame = pd.DataFrame({"text": texts, "label": [0] * len(texts)})
    collate = TextCollator(tokenizer, 64)

    def padding(bucket: bool) -> float:
        batches = list(loader(frame, collate, 32, shuffle=True, seed=1, bucket_by_length=bucket))
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        assert sum(b["labels"].numel() for b in batches) == len(texts)  # every text, once
        return 1 - real / sum(b["input_ids"].numel() for b in batches)

    assert padding(True) < padding(False) / 4
    bucketed = loader(frame, collate, 32, shuffle=True, bucket_by_length=True)
    assert isinstance(bucketed.batch_sampler, LengthBucketSampler)


def test_a_split_is_stored_as_one_array_of_its_token_ids():
    tokenizer = minilm_tokenizer()
    texts = _texts(30, seed=6)
    encoded = TextCollator(tokenizer, 32).encode(pd.DataFrame({"text": texts, "label": [1] * len(texts)}), chunk=7)
    expected = tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    assert [ids.tolist() for ids, _ in encoded] == expected  # across chunks of 7 texts
    assert encoded.flat.dtype == np.int32 and len(encoded.flat) == sum(map(len, expected))
    assert encoded.lengths.tolist() == [len(ids) for ids in expected]
    with pytest.raises(IndexError):
        encoded[len(texts)]
    assert len(TextCollator(tokenizer, 32).encode(pd.DataFrame({"text": [], "label": []}))) == 0
    with pytest.raises(ValueError, match="2 labels for 1 texts"):
        EncodedTexts([[[101, 102]]], [0, 1])


def test_worker_processes_yield_the_same_batches():
    texts = _texts(100, seed=7)
    frame = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    collate = TextCollator(minilm_tokenizer(), 64, 8)

    def batches(workers: int) -> list[dict]:
        return list(loader(frame, collate, 16, shuffle=True, seed=2, num_workers=workers, bucket_by_length=True))

    alone, forked = batches(0), batches(2)
    assert len(alone) == len(forked) == 7
    for a, b in zip(alone, forked, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_image_loaders_batches_survive_spawned_workers():
    # trainer=gpu reads images with 4 loader workers; where workers are spawned rather than
    # forked (macOS, Windows, CUDA setups that ask for it) the collate function is pickled.
    import pickle

    from glasswork.data.image_batches import ImageDataModule, Normalize
    from glasswork.data.images import png_bytes

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image": [png_bytes(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(6)],
                          "label": [0, 1] * 3})  # fmt: skip
    module = ImageDataModule(frame, frame, Normalize([0.5], [0.25]), 4, 4, seed=0, num_workers=0)
    collate = pickle.loads(pickle.dumps(module.train_dataloader().collate_fn))
    batch = collate([0, 1, 2])
    assert batch["pixel_values"].shape == (3, 1, 8, 8) and batch["labels"].tolist() == [0, 1, 0]
    expected = (module.train.pixels[:3].float() / 255 - 0.5) / 0.25
    assert torch.allclose(batch["pixel_values"], expected)


def test_prompt_response_pairs_are_one_sequence_for_a_decoder_and_apart_for_an_encoder_decoder():
    from glasswork.data.prompt_batches import PadPairs

    items = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, -100, 8, 9]},  # prompt 5 6 7, response 8 9
        {"input_ids": [5, 6, 3], "labels": [-100, -100, 3]},
    ]
    joined = PadPairs(0)(items)
    assert joined["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 6, 3, 0, 0]]
    assert joined["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, -100, 3, -100, -100]]
    assert joined["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    apart = PadPairs(0, seq2seq=True)(items)
    assert apart["input_ids"].tolist() == [[5, 6, 7], [5, 6, 0]]
    assert apart["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert apart["labels"].tolist() == [[8, 9], [3, -100]]  # the model shifts them behind its start token
