"""Linear baseline on an SHD-format dataset: logistic regression on per-channel spike counts.

Shows how far a classifier that ignores spike timing gets (issue 5: the generated set must not be
trivially easy). Features: log(1 + count) per channel (700), standardised on the training split;
accuracy on the test split (held-out speakers for make-shd output). ``--windows 1 4`` adds a variant
with counts in 4 consecutive 250 ms windows (2,800 features), a linear model that sees coarse timing
(much slower to fit).

    .venv/bin/python experiments/shd_count_baseline.py runs/shd_synth --out runs/shd_synth_baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spikestab.data import shd


def features(data: dict, windows: int, span: float = 1.0) -> np.ndarray:
    rows = []
    for t, u in zip(data["times"], data["units"]):
        w = np.minimum((np.asarray(t, dtype=np.float64) / span * windows).astype(int), windows - 1)
        rows.append(np.bincount(w * shd.N_CHANNELS + u, minlength=windows * shd.N_CHANNELS))
    return np.log1p(np.array(rows, dtype=np.float64))


def evaluate(train: dict, test: dict, windows: int, c: float) -> dict:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(features(train, windows), train["labels"])
    return dict(
        windows=windows,
        C=c,
        train_acc=round(model.score(features(train, windows), train["labels"]), 4),
        test_acc=round(model.score(features(test, windows), test["labels"]), 4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="folder with shd_train.h5 and shd_test.h5 (or its SHD subfolder)")
    parser.add_argument("--C", type=float, default=0.1, help="inverse L2 strength")
    parser.add_argument("--windows", type=int, nargs="+", default=[1], help="time windows per 1 s (default 1)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    root = Path(args.data_dir)
    folder = root / "SHD" if (root / "SHD" / "shd_train.h5").is_file() else root
    train, test = (shd.read_shd(folder / f"shd_{s}.h5") for s in ("train", "test"))
    result = dict(
        data=str(folder),
        n_train=len(train["labels"]),
        n_test=len(test["labels"]),
        chance=round(1 / len(train["keys"]), 4),
        speakers_shared=sorted(set(train["speakers"].tolist()) & set(test["speakers"].tolist())),
        models=[evaluate(train, test, w, args.C) for w in args.windows],
    )
    print(json.dumps(result, indent=2))
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
