"""Training rows: validation, conversion to TRL's conversational prompt-completion format, length filter."""
import json
from dataclasses import dataclass, field


class DataError(ValueError):
    """A dataset the trainer cannot use; the message names the row."""


ROLES = {"system", "user", "assistant"}


@dataclass
class Rows:
    ids: list = field(default_factory=list)
    prompts: list = field(default_factory=list)
    completions: list = field(default_factory=list)
    lines: list = field(default_factory=list)  # the row's line in the file, for messages


def parse_jsonl(data: bytes) -> Rows:
    """Each line: {"id": str, "messages": [..., {"role": "assistant", ...}]}. The last message is the target."""
    rows = Rows()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"dataset is not UTF-8: {e}") from e
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"row {n}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise DataError(f"row {n}: expected an object with a string id")
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise DataError(f"row {n} ({row['id']}): messages must be a list of at least two chat messages")
        for k, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"row {n} ({row['id']}): messages[{k}] needs role system|user|assistant and string content")
        if messages[-1]["role"] != "assistant" or messages[-1]["content"].strip() == "":
            raise DataError(f"row {n} ({row['id']}): the last message must be a non-empty assistant reply")
        rows.ids.append(row["id"])
        rows.lines.append(n)
        rows.prompts.append([{"role": m["role"], "content": m["content"]} for m in messages[:-1]])
        rows.completions.append([{"role": "assistant", "content": messages[-1]["content"]}])
    if not rows.ids:
        raise DataError("dataset is empty")
    return rows


def token_length(tokenizer, prompt, completion, row: str = "a row") -> int:
    """Tokens of the whole conversation as the base model's chat template renders it (what training sees). The prompt
    alone is rendered too, with the generation prompt, as TRL does: a template that refuses either (a system message
    to a template without a system role, roles that do not alternate) is a DataError naming the row."""
    try:
        tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
    except Exception as e:  # noqa: BLE001 — whatever the template raises, the row is what the user can fix
        from jinja2 import TemplateError
        why = str(e) if isinstance(e, TemplateError) and str(e) else f"{type(e).__name__}: {e}"
        raise DataError(f"{row}: the base model's chat template raises on it: {why}") from e
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


def split_long(rows: Rows, tokenizer, max_length: int):
    """Rows over max_length are reported and left out, never silently cut."""
    keep, dropped = Rows(), []
    lines = rows.lines or [None] * len(rows.ids)
    for i, p, c, n in zip(rows.ids, rows.prompts, rows.completions, lines):
        if token_length(tokenizer, p, c, f"row {n} ({i})" if n is not None else f"row {i}") > max_length:
            dropped.append(i)
        else:
            keep.ids.append(i)
            keep.prompts.append(p)
            keep.completions.append(c)
            keep.lines.append(n)
    return keep, dropped
