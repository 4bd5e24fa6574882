"""Independent reference values for the evaluator's metrics and tests.

Generates prediction sets with abstentions and computes, with scikit-learn, scipy,
statsmodels and numpy (not with DART code): F1 (macro), balanced accuracy and the
confusion matrix on parsed items; exact McNemar p and mid-p; Holm-Bonferroni; numpy's
linear-interpolation percentiles. Writes test/vectors/stat_vectors.json.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy scikit-learn statsmodels
    /tmp/v/bin/python test/vectors/make_stat_vectors.py
"""
import json
import random

import numpy as np
import scipy
import sklearn
import statsmodels
from scipy.stats import binom
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

rng = random.Random(20261125)


def prediction_set(n, p_yes, p_abstain, skill):
    gold = [1 if rng.random() < p_yes else 0 for _ in range(n)]
    preds = []
    for g in gold:
        if rng.random() < p_abstain:
            preds.append(-1)
        else:
            preds.append(g if rng.random() < skill else 1 - g)
    return gold, preds


def on_parsed(gold, pred):
    keep = [i for i, p in enumerate(pred) if p >= 0]
    yt = ["YES" if gold[i] == 1 else "NO" for i in keep]
    yp = ["YES" if pred[i] == 1 else "NO" for i in keep]
    return yt, yp


sets = []
for spec in [(300, 0.5, 0.1, 0.8), (257, 0.3, 0.27, 0.6), (120, 0.9, 0.0, 0.5), (80, 0.5, 0.5, 0.95), (64, 1.0, 0.2, 0.7), (50, 0.0, 0.1, 0.4)]:
    gold, pred = prediction_set(*spec)
    yt, yp = on_parsed(gold, pred)
    cm = confusion_matrix(yt, yp, labels=["NO", "YES"])
    sets.append({
        "gold": gold,
        "pred": pred,
        "macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0)) if yt else None,
        "balanced_accuracy": float(balanced_accuracy_score(yt, yp)) if yt else None,
        "confusion": {"tn": int(cm[0][0]), "fp": int(cm[0][1]), "fn": int(cm[1][0]), "tp": int(cm[1][1])},
    })

mcnemar_cases = []
for b01, b10 in [(0, 0), (1, 0), (3, 12), (12, 3), (25, 25), (40, 61), (150, 90), (700, 640), (2, 30), (0, 17)]:
    exact = mcnemar([[10, b10], [b01, 10]], exact=True).pvalue
    n, k = b01 + b10, min(b01, b10)
    mid = 1.0 if n == 0 else min(1.0, 2 * (binom.cdf(k - 1, n, 0.5) + 0.5 * binom.pmf(k, n, 0.5)))
    mcnemar_cases.append({"b01": b01, "b10": b10, "p_value": float(exact), "p_mid": float(mid)})

holm_cases = []
for ps in [[0.01, 0.04, 0.03, 0.005], [0.5, 0.2, 0.2, 0.01, 0.9, 0.04, 0.001], [0.3], [1e-6, 0.049, 0.0125]]:
    holm_cases.append({"p": ps, "adjusted": [float(x) for x in multipletests(ps, method="holm")[1]]})

percentile_cases = []
for n in [1, 2, 7, 100, 2000, 9999]:
    xs = [rng.random() for _ in range(n)]
    percentile_cases.append({"values": xs, "q": [2.5, 50, 97.5], "expected": [float(v) for v in np.percentile(xs, [2.5, 50, 97.5])]})

versions = {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "statsmodels": statsmodels.__version__}
with open("test/vectors/stat_vectors.json", "w") as f:
    json.dump({"versions": versions, "sets": sets, "mcnemar": mcnemar_cases, "holm": holm_cases, "percentile": percentile_cases}, f)
    f.write("\n")
