"""Reference values for the audit's Mann-Whitney U test and rank-biserial r, made with scipy
(not with DART code): scipy.stats.mannwhitneyu(x, y, alternative="two-sided") with its defaults
(use_continuity=True, method="auto": exact for a sample of at most 8 without ties, else the
normal approximation with tie correction). r = 2U/(n_x n_y) - 1 from scipy's U of x.
Writes test/vectors/mann_whitney.json.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy
    /tmp/v/bin/python test/vectors/make_mann_whitney_vectors.py
"""
import json
import random

import numpy as np
import scipy
from scipy.stats import mannwhitneyu

rng = random.Random(20261126)


def harm_scores(n, skew, tie_grid=None):
    """Classifier-like probabilities: mostly near 0, some mass near 1; optionally rounded to force ties."""
    out = []
    for _ in range(n):
        v = rng.betavariate(0.4 + skew, 6.0)
        if tie_grid:
            v = round(v * tie_grid) / tie_grid
        out.append(v)
    return out


cases = []
specs = [
    ("small exact", 5, 7, 0.0, 0.3, None),
    ("small exact one side 1", 1, 6, 0.0, 0.5, None),
    ("small exact 8x8", 8, 8, 0.2, 0.0, None),
    ("small with ties (asymptotic)", 6, 6, 0.0, 0.5, 4),
    ("medium", 40, 55, 0.0, 0.2, None),
    ("medium ties", 60, 60, 0.1, 0.0, 10),
    ("large B worse", 2000, 2000, 0.3, 0.0, None),
    ("large equal", 1500, 1700, 0.0, 0.0, None),
    ("large heavy ties", 3000, 3000, 0.0, 0.05, 20),
]
for name, nx, ny, skew_x, skew_y, grid in specs:
    x = harm_scores(nx, skew_x, grid)
    y = harm_scores(ny, skew_y, grid)
    res = mannwhitneyu(x, y, alternative="two-sided")
    u = float(res.statistic)
    cases.append({
        "name": name,
        "x": x,
        "y": y,
        "u": u,
        "p_value": float(res.pvalue),
        "rank_biserial_r": 2 * u / (nx * ny) - 1,
    })

# All equal: scipy gives p = 1 (NaN z is avoided by the all-tie check below).
x = [0.5] * 5 + [0.25] * 5
y = [0.5] * 4 + [0.25] * 6
res = mannwhitneyu(x, y, alternative="two-sided")
cases.append({"name": "two values", "x": x, "y": y, "u": float(res.statistic), "p_value": float(res.pvalue),
              "rank_biserial_r": 2 * float(res.statistic) / 100 - 1})

json.dump({"scipy": scipy.__version__, "numpy": np.__version__, "cases": cases}, open("test/vectors/mann_whitney.json", "w"))
print(f"{len(cases)} cases")
