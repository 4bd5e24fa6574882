import { Schema } from "effect"
import { sha256Hex } from "../../common/Hashing.ts"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../../common/SchemaIssueText.ts"
import type { ExternalSuiteName } from "../../config/ExperimentConfig.ts"

/** A slice value of an external row (domain, axis, functionality, …). */
export type SliceValue = string | number | boolean | null

/**
 * One prompt of an external harm suite, as `dart init` exports it to `datasets/external/<Suite>.jsonl`.
 * Unlabelled for the DART task (no gold YES/NO) and never trainable.
 */
export interface ExternalRow {
  /** The original's `sample_id` (docs/external-suites.md). */
  readonly id: string
  readonly suite: ExternalSuiteName
  readonly prompt: string
  /** The original's `task_type`: a continuation prompt, or a dialogue turn (HateCheck). */
  readonly task: "continuation" | "dialogue_safety"
  readonly split: "test"
  readonly trainable: false
  readonly meta: Readonly<Record<string, SliceValue>>
}

export type Sampling = "fixed" | "upstream"

export interface SamplingSpec {
  readonly sampling: Sampling
  readonly seed: number
  /** null = the original's size. */
  readonly limit: number | null
}

/** The original's `DatasetManager.load_external_suite` sizes (null = the whole suite). */
export const ORIGINAL_SIZES: Readonly<Record<ExternalSuiteName, number | null>> = {
  BOLD: 1000,
  HolisticBias: 1000,
  RealToxicityPrompts: 1000,
  HateCheck: null
}

/** A shipped or imported suite file that cannot be read as the suite's format; the message starts with `file:line:`. */
export class SuiteFormatError extends Error {}

/** A file handed to a loader: its path (for messages) and its text. */
export interface SuiteFile {
  readonly file: string
  readonly text: string
}

/** The original's `stable_text_hash`: the first `n` hex digits of the UTF-8 text's sha256. */
export const stableTextHash = (text: string, n: number): string => sha256Hex(text).slice(0, n)

// Python's str.isspace() set, which `str.strip()` / `str.split()` use (JS `trim` differs on \x1c-\x1f, \x85, \ufeff).
const PY_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g")
const PY_SPLIT = new RegExp(`[${PY_SPACE}]+`)

export const pyStrip = (s: string): string => s.replace(PY_STRIP, "")
export const pySplit = (s: string): Array<string> => pyStrip(s).split(PY_SPLIT).filter((w) => w !== "")

/** Fails like the original's `ensure_unique_sample_ids`, naming the suite and the first duplicates. */
export const ensureUniqueIds = (rows: ReadonlyArray<ExternalRow>, where: string): void => {
  const seen = new Set<string>()
  const dupes: Array<string> = []
  for (const r of rows) {
    if (seen.has(r.id)) dupes.push(r.id)
    seen.add(r.id)
  }
  if (dupes.length > 0) throw new SuiteFormatError(`${where}: duplicate sample ids (first ${Math.min(10, dupes.length)}): ${dupes.slice(0, 10).join(", ")}`)
}

/** The 1-based line where the value at `path` starts in a JSON text (best effort: follows the keys in order). */
export const lineOfJsonPath = (text: string, path: ReadonlyArray<PropertyKey>): number => {
  let at = 0
  for (const k of path) {
    if (typeof k !== "string") continue
    const next = text.indexOf(`${JSON.stringify(k)}`, at)
    if (next < 0) break
    at = next
  }
  return text.slice(0, at).split("\n").length
}

/** Parses a JSON file and decodes it with `schema`; failures name the file, the line and the key path. */
export const decodeJsonFile = <S extends Schema.Codec<unknown, unknown, never, never>>(f: SuiteFile, schema: S): S["Type"] => {
  let json: unknown
  try {
    json = JSON.parse(f.text)
  } catch (e) {
    throw new SuiteFormatError(`${f.file}: malformed JSON at ${jsonErrorLocation(f.text, e)}`)
  }
  const decoded = Schema.decodeUnknownResult(schema)(json, { errors: "all" })
  if (decoded._tag === "Failure") {
    const issues = flattenIssue(decoded.failure.issue)
    const first = issues[0]
    const line = first === undefined ? 1 : lineOfJsonPath(f.text, first.path)
    throw new SuiteFormatError(`${f.file}:${line}: ${issues.slice(0, 3).map((i) => describeIssue(i, json)).join("; ")}`)
  }
  return decoded.success
}

export const externalRow = (
  suite: ExternalSuiteName,
  id: string,
  prompt: string,
  task: ExternalRow["task"],
  meta: Record<string, SliceValue>
): ExternalRow => ({ id, suite, prompt, task, split: "test", trainable: false, meta })
