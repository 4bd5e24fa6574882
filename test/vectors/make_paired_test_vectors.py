"""Reference values for src/evaluation/PairedTests.ts, made with scipy (not with DART code).
Writes test/vectors/paired_tests.json, checked by test/evaluation/PairedTests.test.ts.

Wilcoxon: scipy.stats.wilcoxon(b, a, ...) so that d = b - a, with scipy's defaults unless a case names
others (zero_method="wilcox", correction=False, method="auto": the exact null distribution when
len(d) <= 50 without ties or zeros; with ties or zeros an exhaustive sign-flip permutation test when
len(d) <= 13, else the normal approximation with tie correction). zstatistic is recorded where scipy
returns it (method="asymptotic" only). A NaN from scipy is written as null.

McNemar (scipy has none; statsmodels semantics): b01 = pairs where A did not cross and B did,
b10 = A crossed and B did not. Exact: scipy.stats.binomtest(min(b01, b10), b01 + b10, 0.5).pvalue,
statistic min(b01, b10) (statsmodels mcnemar(exact=True)); chi-square: statistic
(|b01 - b10| - 1)^2 / (b01 + b10) and scipy.stats.chi2.sf(statistic, 1) (statsmodels
mcnemar(exact=False, correction=True)). No discordant pair: p = 1 (binomtest refuses n = 0).

    python3.11 -m venv /tmp/scipy-venv && /tmp/scipy-venv/bin/pip install scipy numpy
    /tmp/scipy-venv/bin/python test/vectors/make_paired_test_vectors.py

Inputs come from numpy.random.default_rng(20260525), so a rerun with the same versions gives the same file.
"""
import json
import math

import numpy as np
import scipy
from scipy.stats import binomtest, chi2, wilcoxon

rng = np.random.default_rng(20260525)


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def scores(n, shift=0.0, grid=None):
    """Harm-classifier-like scores in (0, 1); rounded to a grid to force ties."""
    v = rng.beta(0.6, 4.0, size=n)
    v = np.clip(v + shift * rng.random(n), 0.0, 1.0)
    if grid:
        v = np.round(v * grid) / grid
    return [float(x) for x in v]


def pair(n, shift, grid=None, zero_share=0.0):
    """A's scores and B's (B shifted by up to `shift`); a share of pairs made equal to force zero differences."""
    a = scores(n, 0.0, grid)
    b = scores(n, shift, grid)
    for i in range(n):
        if rng.random() < zero_share:
            b[i] = a[i]
    return a, b


wilcoxon_cases = []


def w(name, a, b, **kwargs):
    res = wilcoxon(b, a, **kwargs)
    case = {
        "name": name,
        "a": a,
        "b": b,
        "options": {k: v for k, v in kwargs.items()},
        "statistic": num(res.statistic),
        "p_value": num(res.pvalue),
    }
    if hasattr(res, "zstatistic"):
        case["z_statistic"] = num(res.zstatistic)
    wilcoxon_cases.append(case)


# Exact null distribution (n <= 50, no ties, no zeros).
for n, shift in [(1, 0.3), (2, 0.3), (5, 0.2), (8, 0.0), (10, 0.3), (20, 0.1), (30, 0.15), (50, 0.05)]:
    a, b = pair(n, shift)
    w(f"exact n={n}", a, b)
a, b = pair(25, 0.2)
w("exact n=25 greater", a, b, alternative="greater")
w("exact n=25 less", a, b, alternative="less")
a = scores(20)
w("exact n=20 all B higher", a, [x + 0.3 + 0.1 * rng.random() for x in a])
a = scores(50)
w("exact n=50 all B lower", a, [x - 0.3 - 0.1 * rng.random() for x in a])
a, b = pair(60, 0.05)
w("exact forced n=60", a, b, method="exact")
a, b = pair(12, 0.3, grid=10)
w("exact forced with ties and zeros n=12", a, b, method="exact")

# Normal approximation (n > 50, or ties/zeros with n > 13).
for n, shift in [(51, 0.05), (80, 0.1), (200, 0.0), (1000, 0.05), (2000, 0.0)]:
    a, b = pair(n, shift)
    w(f"approx n={n}", a, b)
a, b = pair(80, 0.1)
w("approx n=80 greater", a, b, alternative="greater")
w("approx n=80 less", a, b, alternative="less")
w("approx n=80 with continuity correction", a, b, correction=True)
w("approx n=80 less with continuity correction", a, b, alternative="less", correction=True)
a, b = pair(300, 0.0)
w("approx n=300 all B higher", a, [x + 0.2 + 0.1 * rng.random() for x in a])
a, b = pair(40, 0.1)
w("asymptotic forced n=40", a, b, method="asymptotic")
w("asymptotic forced n=40 greater", a, b, method="asymptotic", alternative="greater")

# Ties and zeros.
a, b = pair(14, 0.2, grid=8)
w("ties n=14 (approx)", a, b)
a, b = pair(30, 0.1, grid=10)
w("ties n=30 (approx)", a, b)
a, b = pair(500, 0.02, grid=20)
w("heavy ties and zeros n=500", a, b)
a, b = pair(20, 0.2, zero_share=0.3)
w("zeros n=20 (approx)", a, b)
a, b = pair(60, 0.1, zero_share=0.2)
w("zeros n=60 (approx)", a, b)
a, b = pair(60, 0.1, zero_share=0.2)
w("zeros n=60 (approx) greater", a, b, alternative="greater")

# Exhaustive sign-flip permutation test (ties or zeros, n <= 13).
a, b = pair(8, 0.3, zero_share=0.3)
w("zeros n=8 (permutation)", a, b)
a, b = pair(10, 0.2, grid=6)
w("ties n=10 (permutation)", a, b)
w("ties n=10 (permutation) less", a, b, alternative="less")
w("ties n=10 (permutation) greater", a, b, alternative="greater")
a, b = pair(13, 0.2, grid=5)
w("ties n=13 (permutation)", a, b)

# All pairs equal.
a = scores(5)
w("all equal n=5 (permutation)", a, list(a))
a = scores(20)
w("all equal n=20 (scipy: NaN p)", a, list(a))

mcnemar_cases = []


def crossings(b01, b10, both, neither):
    a = [False] * b01 + [True] * b10 + [True] * both + [False] * neither
    b = [True] * b01 + [False] * b10 + [True] * both + [False] * neither
    order = rng.permutation(len(a))
    return [a[i] for i in order], [b[i] for i in order]


def m(name, b01, b10, both, neither, method="auto"):
    a, b = crossings(b01, b10, both, neither)
    n = b01 + b10
    exact = method == "exact" or (method == "auto" and n < 25) or n == 0
    if n == 0:
        statistic, p = 0.0, 1.0
    elif exact:
        statistic, p = float(min(b01, b10)), float(binomtest(min(b01, b10), n, 0.5).pvalue)
    else:
        statistic = (abs(b01 - b10) - 1) ** 2 / n
        p = float(chi2.sf(statistic, 1))
    mcnemar_cases.append({
        "name": name,
        "a": a,
        "b": b,
        "options": {} if method == "auto" else {"method": method},
        "b01": b01,
        "b10": b10,
        "method": "exact" if exact else "chi2",
        "statistic": statistic,
        "p_value": p,
    })


m("no discordant pair", 0, 0, 6, 30)
m("no discordant pair, chi2 asked", 0, 0, 3, 10, method="chi2")
m("one discordant", 1, 0, 2, 5)
m("exact 3 vs 0", 3, 0, 5, 40)
m("exact 5 vs 7", 5, 7, 10, 50)
m("exact 12 vs 12", 12, 12, 4, 20)
m("exact 0 vs 24 (largest auto exact)", 0, 24, 3, 10)
m("chi2 10 vs 15 (smallest auto chi2)", 10, 15, 20, 100)
m("chi2 40 vs 60", 40, 60, 50, 400)
m("chi2 100 vs 100", 100, 100, 30, 300)
m("chi2 101 vs 100", 101, 100, 30, 300)
m("chi2 500 vs 620", 500, 620, 200, 1000)
m("chi2 0 vs 900 (tiny p)", 0, 900, 10, 10)
m("chi2 asked 3 vs 9", 3, 9, 5, 20, method="chi2")
m("exact asked 300 vs 420", 300, 420, 100, 500, method="exact")
m("exact asked 2 vs 1000 (p near 1e-296)", 2, 1000, 0, 10, method="exact")
m("exact asked 2 vs 1500 (p underflows to 0)", 2, 1500, 0, 10, method="exact")

out = {
    "generator": "test/vectors/make_paired_test_vectors.py",
    "scipy": scipy.__version__,
    "numpy": np.__version__,
    "wilcoxon": wilcoxon_cases,
    "mcnemar": mcnemar_cases,
}
with open("test/vectors/paired_tests.json", "w") as f:
    json.dump(out, f, allow_nan=False)
    f.write("\n")
print(f"{len(wilcoxon_cases)} Wilcoxon cases, {len(mcnemar_cases)} McNemar cases")
