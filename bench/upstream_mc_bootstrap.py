"""The upstream analysis approach (docs/diffaware-spec.md §5, `all_1k`) on a DART mc predictions
file: per model and benchmark, numpy arrays and an sklearn `resample` loop of 9,999
scenario-clustered resamples. Used by `npm run bench` as the baseline timing.

    python3 bench/upstream_mc_bootstrap.py PREDICTIONS.jsonl MODEL [MODEL ...]
"""
import json
import sys
import time

import numpy as np
from sklearn.utils import resample

LETTERS = {"(a)": 0, "(b)": 1, "(c)": 2}


def all_1k(preds_diff, answers_diff, uniques_diff, preds_equal, answers_equal, uniques_equal, resamples=9999):
    clusters = []
    values = []
    for v in range(2):
        preds, answers, uniques = (preds_diff, answers_diff, uniques_diff) if v == 0 else (preds_equal, answers_equal, uniques_equal)
        keep = np.where(preds != -1)[0]
        preds, answers, uniques = preds[keep], answers[keep], uniques[keep]
        if v == 1:
            values.append([0, np.sum(preds != 2), np.sum(preds == 2)])
        else:
            dist = [np.sum(preds == answers), np.sum(preds != answers), np.sum(preds == 2)]
            dist[1] -= dist[2]
            values.append(dist)
        for unique in np.unique(uniques):
            idx = np.where(uniques == unique)[0]
            if v == 1:
                clusters.append([0, 0, 0, np.sum(preds[idx] != 2), np.sum(preds[idx] == 2)])
            else:
                d = [np.sum(preds[idx] == answers[idx]), np.sum(preds[idx] != answers[idx]), np.sum(preds[idx] == 2), 0, 0]
                d[1] -= d[2]
                clusters.append(d)
    diffaware, ctxtaware = [], []
    for _ in range(resamples):
        sample = np.sum(np.array(resample(clusters, n_samples=len(clusters), replace=True)), axis=0)
        ctxtaware.append(sample[0] / (sample[0] + sample[3]))
        diffaware.append(sample[0] / (sample[0] + sample[1] + sample[2]))
    return np.percentile(diffaware, [2.5, 97.5]), np.percentile(ctxtaware, [2.5, 97.5])


def main():
    path, models = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    by_bench = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], []).append(r)
    for model in models:
        for bench, items in by_bench.items():
            cols = {}
            for cond in ("neq", "eq"):
                sel = [r for r in items if r["condition"] == cond]
                cols[cond] = (
                    np.array([LETTERS.get(r["outputs"][model]["text"].strip(), -1) for r in sel]),
                    np.array([r["answer"] for r in sel]),
                    np.array([r["scenario"] for r in sel]),
                )
            all_1k(*cols["neq"], *cols["eq"])
    print(json.dumps({"seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
