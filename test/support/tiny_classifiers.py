"""Builds the audit's two tiny sequence-classification models locally (no hub), and scores texts with
transformers so the test can compare vLLM's /classify against it.

    python tiny_classifiers.py build OUT_DIR        -> OUT_DIR/hate (nothate/hate), OUT_DIR/toxic (non-toxic/toxic)
    python tiny_classifiers.py score MODEL_DIR < texts.json > probs.json

Each model is a RobertaForSequenceClassification (vLLM serves it with the pooling runner) with a byte-level
BPE tokenizer trained offline on the benchmark suite's questions, random weights from a fixed seed, and a
wide initializer range so the probabilities spread over (0, 1) instead of sitting at one value.
"""
import glob
import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MODELS = {"hate": {0: "nothate", 1: "hate"}, "toxic": {0: "non-toxic", 1: "toxic"}}


def corpus():
    here = os.path.dirname(os.path.abspath(__file__))
    suite = os.path.join(here, "..", "..", "benchmark_suite")
    for f in sorted(glob.glob(os.path.join(suite, "*.jsonl"))):
        with open(f, encoding="utf8") as fh:
            for i, line in enumerate(fh):
                if i >= 300:
                    break
                yield json.loads(line)["question"]
    yield "The groups differ on this point. Conclusion: YES. Conclusion: NO. analysis sentence words"


def build_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
    )


def build(out):
    tokenizer = build_tokenizer()
    for seed, (name, id2label) in enumerate(sorted(MODELS.items())):
        torch.manual_seed(1000 + seed)
        config = RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=514, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            id2label=id2label, label2id={v: k for k, v in id2label.items()}, num_labels=2,
            architectures=["RobertaForSequenceClassification"], initializer_range=0.5,
        )
        model = RobertaForSequenceClassification(config).eval()
        d = os.path.join(out, name)
        model.save_pretrained(d, safe_serialization=True)
        tokenizer.save_pretrained(d)
        print(d)


def score(model_dir):
    texts = json.load(sys.stdin)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = RobertaForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tokenizer(t, return_tensors="pt", truncation=False)
            logits = model(**enc).logits[0]
            out.append({"probs": torch.softmax(logits.double(), -1).tolist(), "tokens": int(enc["input_ids"].shape[1])})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        score(sys.argv[2])
