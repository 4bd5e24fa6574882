"""Test vector for the `upstream` split strategy, made by CPython itself.

Follows the original's item-level split (zihanliang/DART model/datasets.py,
stratified_split_primary): one random.Random(seed) shuffles each (benchmark, condition)
group in load order (D1 neq, D1 eq, D2 neq, ...), cuts it at int(n*0.8) and int(n*0.1),
then shuffles train, val and test in that order.

Run from the repository root:  python3 test/vectors/make_upstream_split.py
"""
import json
import os
import random

SEED = 42
RATIOS = (0.8, 0.1, 0.1)
ORDER = ["D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4"]


def main() -> None:
    rows = []
    for b in ORDER:
        path = os.path.join("benchmark_suite", f"{b}.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    groups = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["condition"]), []).append(r["id"])
    rng = random.Random(SEED)
    out = {"train": [], "val": [], "test": []}
    for g in groups.values():
        rng.shuffle(g)
        n_train = int(len(g) * RATIOS[0])
        n_val = int(len(g) * RATIOS[1])
        out["train"].extend(g[:n_train])
        out["val"].extend(g[n_train:n_train + n_val])
        out["test"].extend(g[n_train + n_val:])
    for split in ("train", "val", "test"):
        rng.shuffle(out[split])
    vector = {"seed": SEED, "ratios": list(RATIOS), "benchmarks": [b for b in ORDER if any(k[0] == b for k in groups)], **out}
    with open(os.path.join("test", "vectors", "upstream_split.json"), "w", encoding="utf-8") as f:
        json.dump(vector, f)
        f.write("\n")


if __name__ == "__main__":
    main()
