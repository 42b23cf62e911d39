"""The baseline beside every run: TF-IDF + logistic regression (scikit-learn) fitted on the same
training split and scored on the same test split as the fine-tuned model.

A transformer that does not beat it is not worth its cost, or has not been trained enough; a
figure with no baseline beside it cannot say which.
"""

from __future__ import annotations

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
