"""The drift verdict's error rates with the real MiniLM encoder: over 20 random splits of the
reviews against themselves it says "drift" at most once; reviews against tweets, every time.

The pool is described once (descriptors, embeddings, probabilities from MiniLM with a seeded
head) and each comparison takes its rows from it, so the test measures the verdict, not scoring.
"""

from __future__ import annotations

import numpy as np
import pytest

from glasswork.config import load_config
from glasswork.data.sources import rotten_tomatoes, tweets
from glasswork.drift import compare
from glasswork.models.backbone import build_model, load_tokenizer, pretrained_dir
from glasswork.text_drift import describe

SPLITS = 20
SIDE = 150  # rows per side: modest, as monitoring a small daily batch would be


@pytest.fixture(scope="module")
def pools():
    # Without the t-SNE map (the same test and verdict, a tenth of the time). No prepare step runs
    # here, so no data card chooses model.max_length: the shipped reviews' 128 is stated.
    cfg = load_config(["drift.explain_sample=0", "drift.embeddings_plot=false", "model.max_length=128"])
    model = build_model(cfg.model, num_labels=2, seed=cfg.seed).eval()
    tokenizer = load_tokenizer(pretrained_dir(cfg.model))
    reviews = rotten_tomatoes().sample(n=2 * SIDE * 2, random_state=0)["text"].tolist()
    tweet_texts = tweets().sample(n=SIDE * 2, random_state=0)["text"].tolist()
    return cfg, describe(reviews, model, tokenizer, cfg), describe(tweet_texts, model, tokenizer, cfg)


@pytest.mark.slow
def test_reviews_against_themselves_rarely_drift_and_tweets_always_do(pools):
    cfg, reviews, tweet_pool = pools
    false_alarms, detected = [], []
    for seed in range(SPLITS):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(reviews.frame))
        reference, same = reviews.take(order[:SIDE]), reviews.take(order[SIDE : 2 * SIDE])
        if compare(reference, same, cfg).dataset_drift:
            false_alarms.append(seed)
        current = tweet_pool.take(rng.choice(len(tweet_pool.frame), SIDE, replace=False))
        detected.append(compare(reference, current, cfg).dataset_drift)
    print(f"false alarms: {len(false_alarms)} of {SPLITS} {false_alarms}; tweets detected: {sum(detected)} of {SPLITS}")
    assert len(false_alarms) <= 1, f"reviews vs reviews said drift for seeds {false_alarms}"
    assert all(detected), f"reviews vs tweets missed drift for seeds {[s for s, d in enumerate(detected) if not d]}"
