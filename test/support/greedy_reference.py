"""Greedy answers from transformers (+ PEFT for an adapter): an independent reference for vLLM's outputs.

Usage: python greedy_reference.py MODEL_DIR ADAPTER_DIR|- MAX_NEW_TOKENS < conversations.json > texts.json
"""
import json
import sys


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, adapter, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter != "-":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    out = []
    for messages in json.load(sys.stdin):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=max_new, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
