"""Which message layout a base model's chat template takes, decided once per base model by rendering real conversations.

    python -m dart_trainer.chat_layout --model PATH_OR_HUB_ID [--chat-template FILE] (--conversations FILE.json | --conversations-json JSON)

FILE.json: {"conversations": [{"name": str, "messages": [{"role", "content"}...], "add_generation_prompt": bool}]}.
stdout: one JSON object (the layout, why, each conversation's renders, and the token facts the controller needs:
BOS, stop ids, end-of-turn token, pad plan). Exit 0 when a layout works, 2 when none does (the JSON still printed),
1 on a usage or IO error (the message on stderr names the file).

Layouts: "native" sends the messages as they are; "folded" drops a leading system message and, when its content is
non-empty, prefixes the first user message with it and a blank line (fold() below; the controller folds the same way).
Native needs every conversation to render AND the system text to appear in the render: some templates raise on a
system role (Gemma 2, system-less Mistral), some silently leave it out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

# Stand-ins whose text no template produces: where they land in a render tells what the template did with a message.
SYSTEM_PROBE = "DART-SYSTEM-PROBE-31f6"
REPLY_PROBE = "DART-REPLY-PROBE-31f6"
# Pad tokens some vocabularies reserve but their tokenizer_config leaves unset (Llama 3.1: <|finetune_right_pad_id|>).
PAD_NAMES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>")
RESERVED = re.compile(r"^<\|reserved_special_token_\d+\|>$|^<unused\d+>$")


class UsageError(Exception):
    pass


def fold(messages: list[dict]) -> list[dict]:
    """The folded layout: exactly what the controller does (an empty system message is simply dropped)."""
    if not messages or messages[0].get("role") != "system":
        return [dict(m) for m in messages]
    system, rest = messages[0].get("content") or "", [dict(m) for m in messages[1:]]
    if system != "":
        for m in rest:
            if m.get("role") == "user":
                m["content"] = system + "\n\n" + m["content"]
                break
    return rest


def _error_text(e: Exception) -> str:
    from jinja2 import TemplateError
    # raise_exception() in a template surfaces as TemplateError: its message is the template author's sentence.
    return str(e) if isinstance(e, TemplateError) and str(e) else f"{type(e).__name__}: {e}"


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The prompt text as vLLM's chat endpoint and TRL render it: the tokenizer's template with its special tokens."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def try_render(tokenizer, messages, add_generation_prompt) -> tuple[str | None, str | None]:
    try:
        return render(tokenizer, messages, add_generation_prompt), None
    except Exception as e:  # noqa: BLE001 — any failure to render is the answer for this layout
        return None, _error_text(e)


def native_result(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """"ok", the template's error, or "dropped" when the render has no trace of the system message."""
    text, err = try_render(tokenizer, messages, add_generation_prompt)
    if err is not None:
        return err
    if not messages or messages[0].get("role") != "system" or not (messages[0].get("content") or "").strip():
        return "ok"
    if messages[0]["content"].strip() not in text:
        return "dropped"
    # The real text could also sit in a user turn; a stand-in system text must show up too.
    probe, err = try_render(tokenizer, [{**messages[0], "content": SYSTEM_PROBE}] + list(messages[1:]), add_generation_prompt)
    return "ok" if err is None and SYSTEM_PROBE in probe else "dropped"


def _token_id(tokenizer, token: str | None) -> int | None:
    return None if token is None else tokenizer.get_vocab().get(token)


def _is_special(tokenizer, token_id: int) -> bool:
    added = tokenizer.added_tokens_decoder.get(token_id)
    return token_id in tokenizer.all_special_ids or (added is not None and added.special)


def end_of_turn(tokenizer, layout: str) -> tuple[str | None, int | None]:
    """The special token the template puts right after an assistant reply (whitespace between is allowed)."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": REPLY_PROBE}]
    text, err = try_render(tokenizer, fold(messages) if layout == "folded" else messages, False)
    if err is not None or REPLY_PROBE not in text:
        return None, None
    after = text[text.index(REPLY_PROBE) + len(REPLY_PROBE):].lstrip()
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    if not ids or not _is_special(tokenizer, ids[0]):
        return None, None
    return tokenizer.convert_ids_to_tokens(ids[0]), ids[0]


def generation_eos(model: str) -> list[int]:
    """eos_token_id of generation_config.json, else of config.json: what vLLM and transformers stop on besides the
    tokenizer's eos."""
    from transformers import AutoConfig, GenerationConfig
    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except Exception:  # noqa: BLE001 — no (readable) generation_config.json: vLLM falls back to config.json too
        try:
            eos = AutoConfig.from_pretrained(model).eos_token_id
        except Exception:  # noqa: BLE001
            eos = None
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def pad_choice(tokenizer) -> tuple[str, str]:
    """(token, where it comes from) for padding, never adding a token: the tokenizer's own pad, else a pad or reserved
    token the vocabulary has but leaves unset, else unk, else eos. Padding positions carry label -100 in TRL's
    collator, so even eos as pad leaves the model's last eos a trained label (tests/test_chat_layout.py)."""
    if tokenizer.pad_token is not None:
        return tokenizer.pad_token, "own"
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    for name in PAD_NAMES:
        if name in vocab:
            return name, "unused pad token of the vocabulary"
    reserved = sorted((i, t) for i, t in tokenizer.added_tokens_decoder.items()
                      if t.special and RESERVED.match(t.content) and t.content not in template)
    if reserved:
        return reserved[0][1].content, "reserved special token"
    if tokenizer.unk_token is not None and tokenizer.unk_token in vocab:
        return tokenizer.unk_token, "unk"
    return tokenizer.eos_token, "eos"


def load_conversations(path: Path | None, text: str | None = None) -> list[dict]:
    """From a file, or (text given) from the argument itself: a task on a remote host has no file of the caller's."""
    if text is not None:
        path = Path("<--conversations-json>")
    try:
        data = json.loads(text if text is not None else path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"--conversations {path}: cannot read it ({e.strerror or e})") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"--conversations {path}: not JSON ({e})") from e
    convs = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(convs, list) or not convs:
        raise UsageError(f'--conversations {path}: expected {{"conversations": [...]}} with at least one conversation')
    out = []
    for k, c in enumerate(convs):
        where = f"--conversations {path}: conversations[{k}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("messages"), list) \
                or not c["messages"]:
            raise UsageError(f"{where}: needs a string name and a non-empty list of messages")
        for j, m in enumerate(c["messages"]):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise UsageError(f"{where}.messages[{j}]: needs a string role and string content")
        agp = c.get("add_generation_prompt", True)
        if not isinstance(agp, bool):
            raise UsageError(f"{where}: add_generation_prompt must be true or false")
        out.append({"name": c["name"], "messages": [{"role": m["role"], "content": m["content"]} for m in c["messages"]],
                    "add_generation_prompt": agp})
    return out


def load_tokenizer(model: str, chat_template: Path | None):
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception as e:  # noqa: BLE001 — any load failure is a usage error naming the model
        raise UsageError(f"--model {model}: cannot load its tokenizer ({type(e).__name__}: {e})") from e
    if chat_template is not None:
        try:
            tokenizer.chat_template = chat_template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--chat-template {chat_template}: cannot read it ({e})") from e
    return tokenizer


def probe(model: str, conversations: list[dict], chat_template: Path | None = None) -> dict:
    tokenizer = load_tokenizer(model, chat_template)
    try:
        template = tokenizer.get_chat_template()  # the default one where a model ships several (e.g. tool_use)
    except ValueError:
        template = None
    result = {"layout": None, "reason": "", "conversations": [],
              "template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest() if template else None,
              "template_source": "file" if chat_template is not None else "tokenizer"}
    if template is None:
        result["reason"] = "the model has no chat template (give one with --chat-template)"
        return {**result, **token_facts(tokenizer, model, None, None)}

    rows = []
    for c in conversations:
        native = native_result(tokenizer, c["messages"], c["add_generation_prompt"])
        _, folded_err = try_render(tokenizer, fold(c["messages"]), c["add_generation_prompt"])
        rows.append({"name": c["name"], "native": native, "folded": folded_err or "ok"})
    result["conversations"] = rows

    # An error says more than a silent drop: it names what the template refuses.
    first_bad = next((r for r in rows if r["native"] not in ("ok", "dropped")), None) \
        or next((r for r in rows if r["native"] == "dropped"), None)
    folded_bad = next((r for r in rows if r["folded"] != "ok"), None)
    if first_bad is None:
        with_system = any(c["messages"][0]["role"] == "system" and c["messages"][0]["content"].strip() for c in conversations)
        result["layout"] = "native"
        result["reason"] = ("the template renders the system message" if with_system
                            else "no conversation has a system message; the template renders them as they are")
    elif folded_bad is None:
        result["layout"] = "folded"
        result["reason"] = ("the template drops the system message" if first_bad["native"] == "dropped"
                            else f"the template raises: {first_bad['native']}")
    else:
        result["reason"] = (f'no layout works: conversation "{folded_bad["name"]}" fails even with the system message '
                            f"folded into the first user turn; the template raises: {folded_bad['folded']}")
    return {**result, **token_facts(tokenizer, model, result["layout"], conversations)}


def token_facts(tokenizer, model: str, layout: str | None, conversations: list[dict] | None) -> dict:
    bos = tokenizer.bos_token
    bos_id = _token_id(tokenizer, bos)
    text = None
    if layout is not None:
        msgs = conversations[0]["messages"]
        text = render(tokenizer, fold(msgs) if layout == "folded" else msgs, conversations[0]["add_generation_prompt"])
    adds_bos = bool(bos and text is not None and text.startswith(bos))
    double = False
    if adds_bos and bos_id is not None:
        # TRL and vLLM's chat endpoint tokenise the render with add_special_tokens=False: one BOS. A client that let
        # the tokenizer add its own (add_special_tokens=True) would send two.
        with_special = tokenizer(text, add_special_tokens=True)["input_ids"]
        double = with_special[:2] == [bos_id, bos_id]
    eos_id = _token_id(tokenizer, tokenizer.eos_token)
    stops = list(dict.fromkeys(([eos_id] if eos_id is not None else []) + generation_eos(model)))
    eot, eot_id = end_of_turn(tokenizer, layout) if layout is not None else (None, None)
    pad, source = pad_choice(tokenizer)
    return {"bos_token": bos, "template_adds_bos": adds_bos, "double_bos": double,
            "eos_token": tokenizer.eos_token, "stop_token_ids": stops,
            "end_of_turn": eot, "end_of_turn_id": eot_id, "end_of_turn_stops": eot_id is not None and eot_id in stops,
            "pad_token": tokenizer.pad_token, "pad_plan": "own" if source == "own" else pad}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 means "no layout works": a usage error is 1
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m dart_trainer.chat_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder or hub id (from the HF cache when HF_HUB_OFFLINE=1)")
    p.add_argument("--chat-template", type=Path, default=None, help="a .jinja file used instead of the model's template")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--conversations", type=Path, help="JSON file of conversations to render")
    given.add_argument("--conversations-json", help="the same JSON as an argument")
    args = p.parse_args(argv)
    try:
        if args.chat_template is not None and not args.chat_template.is_file():
            raise UsageError(f"--chat-template {args.chat_template}: no such file")
        result = probe(args.model, load_conversations(args.conversations, args.conversations_json), args.chat_template)
    except UsageError as e:
        print(f"chat_layout: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["layout"] is not None else 2


if __name__ == "__main__":
    sys.exit(main())
