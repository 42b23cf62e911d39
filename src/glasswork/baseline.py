"""The baseline beside every run: logistic regression (scikit-learn) on TF-IDF word features for
texts, on the pixels for images, fitted on the same training split and scored on the same test
split as the network.

A network that does not beat it is not worth its cost, or has not been trained enough; a figure
with no baseline beside it cannot say which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
    """Test accuracy and macro-F1 of word uni- and bigram TF-IDF + logistic regression."""
    # Words seen in at least two texts, unless the table is too small to afford it.
    min_df = 2 if len(train) >= 200 else 1
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True, max_features=200_000),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    model.fit(train["text"].astype(str), train["label"])
    predicted = model.predict(test["text"].astype(str))
    return {
        "accuracy": float(accuracy_score(test["label"], predicted)),
        "macro_f1": float(f1_score(test["label"], predicted, average="macro")),
    }


# Logistic regression on 56,000 x 784 pixels takes minutes on 2 cores; this many training images
# (stratified, seeded) give its accuracy within a point (Fashion-MNIST: 0.84 on all of them).
PIXEL_BASELINE_MAX_TRAIN = 10_000


def pixel_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
    """Test accuracy and macro-F1 of logistic regression on the scaled pixels of the images,
    fitted on at most ``PIXEL_BASELINE_MAX_TRAIN`` training images."""
    from sklearn.model_selection import train_test_split

    from glasswork.data.image_batches import decode_all

    if len(train) > PIXEL_BASELINE_MAX_TRAIN:
        train, _ = train_test_split(
            train, train_size=PIXEL_BASELINE_MAX_TRAIN, stratify=train["label"], random_state=seed
        )

    def pixels(frame: pd.DataFrame) -> np.ndarray:
        return decode_all(frame["image"].tolist()).flatten(1).numpy().astype(np.float32) / 255

    model = LogisticRegression(max_iter=300, random_state=seed)
    model.fit(pixels(train), train["label"])
    predicted = model.predict(pixels(test))
    return {
        "accuracy": float(accuracy_score(test["label"], predicted)),
        "macro_f1": float(f1_score(test["label"], predicted, average="macro")),
    }


def table_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int, pre) -> dict[str, float]:
    """Test accuracy and macro-F1 of logistic regression on the table's preprocessed columns
    (``pre``: :class:`glasswork.data.tabular.Preprocessor`, fitted on ``train``)."""
    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(pre.transform(train, "the training split")[0], train["label"])
    predicted = model.predict(pre.transform(test, "the test split")[0])
    return {
        "accuracy": float(accuracy_score(test["label"], predicted)),
        "macro_f1": float(f1_score(test["label"], predicted, average="macro")),
    }
