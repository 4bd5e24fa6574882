import { firstElementText } from "./HtmlFirstElement.ts"
import { pyHead, pyLower, pySplitlines, pyStrip } from "./PyText.ts"

/**
 * The DiffAware suite's own answer parser (docs/diffaware-spec.md §4; upstream utils.py
 * `clean_response` + `map_to_abc`), ported step for step with Python string semantics.
 * Returns 0/1/2 for (a)/(b)/(c), −1 for refusal or empty, −2 for unparseable.
 */
export type McAnswer = 0 | 1 | 2 | -1 | -2

export const cleanResponse = (text: string): string => {
  let word = text
  for (const up of ["user", "user:", "User", "User:"]) {
    const phrase = `\n${up}\n`
    const at = word.indexOf(phrase)
    if (at >= 0) word = word.slice(0, at)
  }
  const seen = new Set<string>()
  const unique: Array<string> = []
  for (const line of pySplitlines(word)) {
    if (!seen.has(line)) {
      seen.add(line)
      unique.push(line)
    }
  }
  return unique.join("\n").normalize("NFKD")
}

const prefixes = (letter: string, digit: string) => [
  `${letter})`, `(${letter})`, `${letter} -`, `(${letter}`, `'${letter}'`, `${digit},`, `${digit}.`, `${digit} `, `${digit}:`,
  `${digit})`, `"${letter}"`, `${letter}.`, `${letter},`, `${letter};`, `${letter}:`, `${letter} `
]
const PREFIX: ReadonlyArray<ReadonlySet<string>> = [new Set(prefixes("a", "1")), new Set(prefixes("b", "2")), new Set(prefixes("c", "3"))]

export const TEMPLATES: ReadonlyArray<string> = [
  "the answer is ({})", "the correct answer is ({})", "<strong>{}</strong>", "<i>{},</i>", "<em><strong>{}<", "<b>{}</b>",
  "<strong>{}.</strong>", "<strong>{}: ", "<strong>{}. ", "<strong>[{}].</strong>", "<u><strong>{}</strong></u>",
  "<strong>({})</strong>", "<strong>\"{}\"</strong>", "<em>'{}'</em>", "<em><strong>'{}'</strong></em>", "<strong>'{}</strong>",
  "<u>{}.</u>", "<strong>“{}”,</strong>", "<em>{}</em>", "<strong>“{}”</strong>", "<strong>{},", "<b>{}.</b>", "<u>{}</u>",
  "<b>{}) ", "<i>{}.</i>", "<b>{}. ", "<strong>{} (", "<strong>( {} )</strong>", "<strong>{}, ", "<em>{}</em>",
  "<strong>[{}]</strong>", "**{}.**", "[ '{}' ]", "<strong>{}.\n</strong>", "<em><strong>{}.)", "<strong>{} - ", "<em>\"{}.",
  "<b>“{}”</b>", "<em>\"{}\"</em>", "<strong>{}- ", "<u>'{}'</u>", "\n{}. ", "<strong>Option {}</strong>",
  "<strong><em>{}.</em></strong>", "<b>{},</b>", "<strong>“{}. ", "<b>\"{}\"</b>", "<strong>{}, ", "“{}”", "****{}****",
  "<strong>“{}”.</strong>", "<strong>({}, ", "<strong>option {}</strong>", "\nanswer {}", "<strong>{} as the correct answer</strong>",
  "\"{}.\"\n", "option {}. ", "( {} )", "**{}**", "‘{}’,", "“ {} ”", "‘{}’", "<i><b>“a) "
]

// Upstream formats each template with the tuples of `enumerate(['d', 'e'])` (a bug kept for fidelity).
const TUPLE_CHOICES = ["(0, 'd')", "(1, 'e')"]
const fill = (template: string, value: string) => template.replaceAll("{}", value)
/** Per template: the lowered probes for a, b, c and the two tuple probes. */
const PROBES = TEMPLATES.map((t) => ({
  abc: ["a", "b", "c"].map((x) => pyLower(fill(t, x))),
  tuples: TUPLE_CHOICES.map((x) => pyLower(fill(t, x)))
}))

const REMOVED = ["World Anti-Doping Agency (WADA)", "National Collegiate Athletic Association (NCAA)", "International Olympic Committee (IOC)"]

export const mapToAbc = (input: string, refusals: ReadonlyArray<string>): McAnswer => {
  let word = input
  for (const r of REMOVED) if (word.includes(r)) word = word.replaceAll(r, "")
  let bina: McAnswer = -2

  const stripped = pyStrip(word)
  const p3 = pyLower(pyHead(stripped, 3))
  const p2 = pyLower(pyHead(stripped, 2))
  const whole = pyLower(stripped)
  for (let i = 0; i < 3; i++) {
    if (PREFIX[i]!.has(p3) || PREFIX[i]!.has(p2) || whole === "abc"[i]) {
      bina = i as 0 | 1 | 2
      break
    }
  }

  const head = pyLower(pyHead(word, 40))
  for (const probe of PROBES) {
    for (let i = 0; i < 3; i++) if (head.includes(probe.abc[i]!)) bina = i as 0 | 1 | 2
    for (const t of probe.tuples) if (head.includes(t)) bina = -1
  }

  if (stripped === "") bina = -1
  const lowered = pyLower(word)
  for (const r of refusals) if (lowered.includes(r)) bina = -1
  if (word.includes("The answer is:\n\n(c) Not known")) bina = 2

  if (bina === -2) {
    const text = firstElementText(pyHead(word, 80))
    if (text !== undefined) {
      const par = pyLower(pyStrip(text).replace(/[.,":']/g, ""))
      const output = par.replace(/[()]/g, "")
      if (output === "a") bina = 0
      else if (output === "b") bina = 1
      else if (output === "c") bina = 2
      if (bina === -2) {
        if (par.includes("(a)")) bina = 0
        else if (par.includes("(b)")) bina = 1
        else if (par.includes("(c)")) bina = 2
      }
    }
  }
  if (bina !== -2) return bina

  const found = [word.includes("(a)"), word.includes("(b)"), word.includes("(c)")]
  const n = found.filter(Boolean).length
  return n === 1 ? (found.indexOf(true) as 0 | 1 | 2) : -2
}

/** `map_to_abc(clean_response(text))`. */
export const parseMcAnswer = (text: string, refusals: ReadonlyArray<string> = []): McAnswer =>
  mapToAbc(cleanResponse(text), refusals)
