"""Independent reference values for `dart evaluate --task dart` on the synthetic predictions of
test/pipeline/evaluate.test.ts (M0 vs DART_H), computed with numpy, scipy and statsmodels, not with DART code.

The predictions are regenerated exactly as the test makes them: every 5th item of
benchmark_suite/{D1,D2,D3,D4,N2,N3,N4}.jsonl (in that order), and CPython's random.Random(7)
drawing, per item, M0's output and then DART_H's (the test uses DART's PyRandom, which is proven
equal to CPython's generator in test/vectors/upstream_split.json and test/datasets/PyRandom.test.ts).

Per benchmark, D/N group and overall: accuracies, discordant counts, exact two-sided McNemar p
(scipy binomtest), Holm across the seven benchmarks (statsmodels multipletests), and the paired
item-level bootstrap percentile CI of the accuracy difference (numpy: 1,000,000 resamples as the
reference, plus the spread of the CI ends over 1,000 repeats of a 2,000-resample bootstrap, which is
the Monte Carlo error DART's 2,000-resample CI has). Writes test/vectors/eval_vectors.json.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy statsmodels
    /tmp/v/bin/python test/vectors/make_eval_vectors.py
"""
import json
import random
import re
from pathlib import Path

import numpy as np
import scipy
import statsmodels
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ["D1", "D2", "D3", "D4", "N2", "N3", "N4"]
ALPHA = 0.05

items = []
for b in BENCHMARKS:
    for line in (ROOT / "benchmark_suite" / f"{b}.jsonl").read_text().splitlines():
        if line.strip():
            items.append(json.loads(line))
items = [it for i, it in enumerate(items) if i % 5 == 0]

rng = random.Random(7)


def say(gold, skill, abstain):
    if rng.random() < abstain:
        return "I cannot determine this.\n**Conclusion:** unclear"
    label = gold if rng.random() < skill else ("NO" if gold == "YES" else "YES")
    return f"The groups are compared on the facts given. Context matters here.\nConclusion: {label}"


CONCLUSION = re.compile(r"conclusion:\s*(yes|no)\b", re.IGNORECASE)
rows = []
for it in items:
    gold = "YES" if it["condition"] == "neq" else "NO"
    a = say(gold, 0.85 if gold == "YES" else 0.15, 0.25)
    b = say(gold, 0.72, 0.03)
    correct = []
    for text in (a, b):
        m = CONCLUSION.search(text)
        correct.append(m is not None and m.group(1).upper() == gold)
    rows.append((it["benchmark"], correct[0], correct[1]))

np_rng = np.random.default_rng(20261126)


def block(sel):
    ca = np.array([r[1] for r in sel], dtype=np.int64)
    cb = np.array([r[2] for r in sel], dtype=np.int64)
    n = len(sel)
    b01 = int(((ca == 0) & (cb == 1)).sum())
    b10 = int(((ca == 1) & (cb == 0)).sum())
    p = binomtest(min(b01, b10), b01 + b10, 0.5).pvalue if b01 + b10 > 0 else 1.0
    # Item-level paired bootstrap. Items with the same (a, b) outcome are interchangeable, so a resample
    # is a multinomial draw over the four kinds: the same distribution as drawing n indices.
    d = cb - ca
    kinds = np.array([-1, 0, 1])
    weights = np.array([(d == k).sum() for k in kinds]) / n

    def ci(resamples, repeats):
        counts = np_rng.multinomial(n, weights, size=(repeats, resamples))
        diffs = (counts * kinds).sum(axis=2) / n
        lo = np.percentile(diffs, 100 * ALPHA / 2, axis=1)
        hi = np.percentile(diffs, 100 - 100 * ALPHA / 2, axis=1)
        return lo, hi

    ref_lo, ref_hi = ci(1_000_000, 1)
    lo, hi = ci(2_000, 1_000)
    return {
        "n": n, "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()), "accuracy_diff": float(d.mean()),
        "b01": b01, "b10": b10, "p_value": float(p),
        "ci_low": float(ref_lo[0]), "ci_high": float(ref_hi[0]),
        "ci_low_sd_2000": float(lo.std()), "ci_high_sd_2000": float(hi.std()),
    }


out = {"benchmarks": {}, "groups": {}}
for b in BENCHMARKS:
    out["benchmarks"][b] = block([r for r in rows if r[0] == b])
holm = multipletests([out["benchmarks"][b]["p_value"] for b in BENCHMARKS], method="holm")[1]
for b, p in zip(BENCHMARKS, holm):
    out["benchmarks"][b]["p_holm"] = float(p)
for g in ("D", "N"):
    out["groups"][g] = block([r for r in rows if r[0].startswith(g)])
out["overall"] = block(rows)
out["versions"] = {"numpy": np.__version__, "scipy": scipy.__version__, "statsmodels": statsmodels.__version__}
(ROOT / "test" / "vectors" / "eval_vectors.json").write_text(json.dumps(out, indent=1) + "\n")
