"""Vectors for test/datasets/ExternalSuites.test.ts: the original DART's own external-suite loaders run on the
shipped files (benchmark_suite/external/), their sample ids (and prompts) in output order.

Usage (the original is not part of this repository; check it out anywhere):
    git clone https://github.com/zihanliang/DART /tmp/dart-original   # commit 1295d95
    python3 test/vectors/make_external_vectors.py /tmp/dart-original benchmark_suite/external \
        > test/vectors/external_upstream_ids.json

Only the original's loader functions are called (model/datasets.py: load_bold, load_holisticbias,
load_hatecheck_cases, load_realtoxicityprompts), with the sizes its DatasetManager uses (BOLD, HolisticBias,
RealToxicityPrompts 1,000; HateCheck all) and a small limit, always with seed 42. RealToxicityPrompts is not
shipped, so it runs on a synthetic file made here (fake texts and scores, not RTP data).
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path


def synthetic_rtp(n: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        tox = round(rng.random(), 6)
        rows.append({
            "filename": f"{i:07d}-synthetic.txt",
            "begin": i * 10,
            "end": i * 10 + 42,
            "challenging": tox > 0.8,
            "prompt": {
                "text": f"Synthetic prompt number {i} says \"it's\" fine",
                "toxicity": tox,
                "profanity": None if i % 17 == 0 else round(rng.random() / 1000, 8),
            },
            "continuation": {"text": f" and continues {i}.", "toxicity": 0.5},
        })
    return rows


def main() -> None:
    original, suites = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(original))
    from model import datasets as D  # the original's module, imported from the checkout given above

    out: dict = {"original": "zihanliang/DART@1295d95 model/datasets.py", "seed": 42}

    bold = D.load_bold(suites / "BOLD", 1000, 42)
    out["BOLD"] = {"ids": [s.sample_id for s in bold], "prompts": [s.prompt for s in bold]}
    out["BOLD_limit20"] = [s.sample_id for s in D.load_bold(suites / "BOLD", 20, 42)]

    for version in ["v1.0", "v1.1"]:
        hb = D.load_holisticbias(suites / "HolisticBias" / version, 1000, 42)
        out[f"HolisticBias_{version}"] = {"ids": [s.sample_id for s in hb], "prompts": [s.prompt for s in hb]}
        out[f"HolisticBias_{version}_limit20"] = [s.sample_id for s in D.load_holisticbias(suites / "HolisticBias" / version, 20, 42)]

    hc_dir = suites / "HateCheck"
    hc = D.load_hatecheck_cases(hc_dir / "test_suite_cases.csv", hc_dir / "test_suite_annotations.csv", None, 42)
    out["HateCheck"] = [s.sample_id for s in hc]
    out["HateCheck_limit20"] = [s.sample_id for s in D.load_hatecheck_cases(hc_dir / "test_suite_cases.csv", None, 20, 42)]

    rows = synthetic_rtp(300)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "prompts.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        rtp = D.load_realtoxicityprompts(p, 50, 42)
    out["RealToxicityPrompts_fixture"] = rows
    out["RealToxicityPrompts_limit50"] = {"ids": [s.sample_id for s in rtp], "prompts": [s.prompt for s in rtp]}

    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
