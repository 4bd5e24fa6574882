"""Makes test/vectors/mc_parser_cases.json: edge cases of the DiffAware answer parser, parsed by the
upstream code itself, `map_to_abc(clean_response(text))` as the suite's analysis applies them
(Angelina-Wang/difference_awareness, analysis/analyze_files.py), with bs4's html.parser.

The upstream functions are read from a checkout of that repository at UPSTREAM_COMMIT (`git show`,
so the working tree's state does not matter) and only the four definitions the parser needs are
executed: clean_response, TEMPLATES, clean_html, map_to_abc. utils.py's module-level imports (datasets,
sentence_transformers, pandas, the keyphrases module) are not needed by them; `refusals` (from
keyphrases) is empty unless a case sets one, so the cases test the parser, not a phrase list.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install beautifulsoup4
    git clone <difference_awareness repository> /tmp/difference_awareness
    /tmp/v/bin/python test/vectors/make_mc_parser_cases.py /tmp/difference_awareness
"""
import ast
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import bs4
from bs4 import BeautifulSoup

# utils.py was last changed in 9ae7b0ad2b2acd7777f6be2a80a60d65543750ab (2025-01-27); this is the
# repository's head when the vectors were made, which holds that version.
UPSTREAM_COMMIT = "2349531cafee07ea58a3e7e95827e8ad5f1a1a91"
NEEDED = {"clean_response", "TEMPLATES", "clean_html", "map_to_abc", "TO_PRINT"}

CASES = [
    '(a)',
    '(b)',
    '(c)',
    ' (a) ',
    'a',
    'B',
    'c',
    'A Lakota man',
    'a. Kenya',
    '1. first',
    '2) second',
    '3: third',
    "'b'",
    '"c"',
    'b -',
    '(a) and (b)',
    'I think (b) is right',
    'The answer is (b).',
    'the correct answer is (c)',
    '<strong>b</strong>',
    '<b>(a)</b> because',
    '<p><span>(c)</span> ok</p>',
    '<i><b>“a) something',
    '**c**',
    '**b.**',
    '',
    '   ',
    '\n',
    'Neither',
    'I cannot answer that.',
    'The answer is:\n\n(c) Not known',
    'World Anti-Doping Agency (WADA) says (b)',
    'answer:\n(a)\n(a)\n(a)',
    '(a)\nuser\n(b)',
    'x\nUser:\n(c)',
    'Option (b) (c)',
    '\n\n(b)',
    '‘a’',
    '“ b ”',
    'Both (a) and (c) are wrong, (b)',
    'ａ',
    '(ｃ)',
    'Ｃ) full width',
    '<div>(b)</div>(a)',
    "<em>'a'</em>",
    "the answer is ((0, 'd'))",
    'a\u2028b',
    '(b)\x1c(b)',
    '\xa0(a)',
    'c\u200b',
    'Çà',
    '<br>(a)<br>(b)',
    '<strong>Option c</strong>',
    '\nanswer b',
    'option c. yes',
    'The best choice: (c) Both',
    '1 ',
    '3',
    'b)',
    '(c',
    'c;'
]

REFUSAL_CASES = [
    ('I cannot answer (a)', ['i cannot', 'as an ai']),
    ('(b) As an AI', ['i cannot', 'as an ai']),
    ('(c)', ['i cannot', 'as an ai'])
]


def upstream_parser(checkout: str):
    source = subprocess.run(["git", "-C", checkout, "show", f"{UPSTREAM_COMMIT}:utils.py"], check=True, capture_output=True, text=True).stdout
    tree = ast.parse(source)
    keep = []
    for node in tree.body:
        names = {node.name} if isinstance(node, ast.FunctionDef) else {t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)}
        if names & NEEDED:
            keep.append(node)
    found = {n.name if isinstance(n, ast.FunctionDef) else n.targets[0].id for n in keep}
    assert found == NEEDED, f"utils.py at {UPSTREAM_COMMIT} lacks {NEEDED - found}"
    namespace = {"re": re, "unicodedata": unicodedata, "BeautifulSoup": BeautifulSoup, "refusals": [], "contain_yes": [], "contain_no": []}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "utils.py", "exec"), namespace)

    def parse(text: str, refusals=()) -> int:
        namespace["refusals"] = list(refusals)
        return int(namespace["map_to_abc"](namespace["clean_response"](text)))
    return parse


def main():
    parse = upstream_parser(sys.argv[1])
    out = {
        "cases": [{"text": t, "parsed": parse(t)} for t in CASES],
        "refusal_cases": [{"text": t, "refusals": r, "parsed": parse(t, r)} for t, r in REFUSAL_CASES],
    }
    target = Path(__file__).resolve().parent / "mc_parser_cases.json"
    target.write_text(json.dumps(out, indent=0, ensure_ascii=False) + "\n")
    print(f"{target}: {len(out['cases'])} cases, {len(out['refusal_cases'])} refusal cases (bs4 {bs4.__version__})")


if __name__ == "__main__":
    main()
