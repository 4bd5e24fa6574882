import { Schema } from "effect"
import { sha256Hex } from "../../common/Hashing.ts"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../../common/SchemaIssueText.ts"
import { PyRandom } from "../PyRandom.ts"
import { ensureUniqueIds, type ExternalRow, externalRow, ORIGINAL_SIZES, type SamplingSpec, SuiteFormatError } from "./ExternalSuite.ts"
import { parsePyJson, PyFloat, pyRepr } from "./PyRepr.ts"

/** The published `prompts.jsonl` (allenai/real-toxicity-prompts): its row count; its sha256 is not published anywhere we found. */
export const RTP_PUBLISHED = { rows: 99_442, sha256: null as string | null }

/** What `dart datasets import` records beside the imported file, so later loads check they read the same bytes. */
export const RtpImportRecord = Schema.Struct({
  file: Schema.String,
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
  rows: Schema.Int,
  source: Schema.String
})
export type RtpImportRecord = typeof RtpImportRecord.Type

const Score = Schema.NullOr(Schema.Number)
const RtpRow = Schema.Struct({
  filename: Schema.NonEmptyString,
  begin: Schema.Int,
  end: Schema.Int,
  challenging: Schema.Boolean,
  prompt: Schema.Struct({ text: Schema.String, toxicity: Score })
})
type RtpRow = typeof RtpRow.Type
const decodeRow = Schema.decodeUnknownResult(RtpRow)

/** Floats back to numbers, for Schema. */
const plain = (u: unknown): unknown =>
  u instanceof PyFloat ? u.value : Array.isArray(u) ? u.map(plain) : u !== null && typeof u === "object" ? Object.fromEntries(Object.entries(u).map(([k, v]) => [k, plain(v)])) : u

interface ParsedRow {
  readonly raw: Record<string, unknown>
  readonly row: RtpRow
}

/** Every row of a `prompts.jsonl`, decoded; a bad row fails naming file and line. */
export const parseRtp = (text: string, file: string): Array<ParsedRow> => {
  const out: Array<ParsedRow> = []
  const lines = text.split("\n")
  lines.forEach((line, i) => {
    if (line.trim() === "") return
    let raw: unknown
    try {
      raw = parsePyJson(line)
    } catch (e) {
      throw new SuiteFormatError(`${file}:${i + 1}: malformed JSON at ${jsonErrorLocation(line, e).replace(/^line 1, /, "")}`)
    }
    const json = plain(raw)
    const r = decodeRow(json, { errors: "all" })
    if (r._tag === "Failure") throw new SuiteFormatError(`${file}:${i + 1}: ${flattenIssue(r.failure.issue).map((x) => describeIssue(x, json)).join("; ")}`)
    out.push({ raw: raw as Record<string, unknown>, row: r.success })
  })
  return out
}

/**
 * Checks a user's `prompts.jsonl` against the published file before it is imported: its sha256 (when one is
 * expected) and its row count, and every row's shape.
 */
export const checkRtpImport = (bytes: Uint8Array, file: string, expected: { readonly sha256: string | null; readonly rows: number }): { readonly sha256: string; readonly rows: number } => {
  const sha256 = sha256Hex(bytes)
  if (expected.sha256 !== null && sha256 !== expected.sha256.toLowerCase()) {
    throw new SuiteFormatError(`${file}: sha256 ${sha256} is not the expected ${expected.sha256}; this is not the published prompts.jsonl`)
  }
  const rows = parseRtp(Buffer.from(bytes).toString("utf8"), file).length
  if (rows !== expected.rows) throw new SuiteFormatError(`${file}: ${rows} rows, the published prompts.jsonl has ${expected.rows}`)
  return { sha256, rows }
}

const toxicityBin = (t: number | null): string =>
  t === null ? "unknown" : t < 0.25 ? "[0,0.25)" : t < 0.5 ? "[0.25,0.5)" : t < 0.75 ? "[0.5,0.75)" : "[0.75,1]"

const pyTruthy = (u: unknown) => !(u === undefined || u === null || u === false || u === "" || u === 0 || (Array.isArray(u) && u.length === 0) || (u instanceof PyFloat && u.value === 0))
const pyStr = (u: unknown): string => (typeof u === "string" ? u : pyRepr(u))

/**
 * RealToxicityPrompts as the original's `load_realtoxicityprompts`: a reservoir sample of `limit` (1,000) rows with
 * `random.Random(seed).randint`, in reservoir order, id `RealToxicityPrompts:{filename}`. `upstream` keeps its prompt,
 * the Python repr of the `prompt` object (it looks for a top-level `text` first); `fixed` sends `prompt.text` and makes
 * a repeated id unique with `__1`, `__2`, ….
 */
export const loadRealToxicityPrompts = (text: string, file: string, spec: SamplingSpec): Array<ExternalRow> => {
  const all = parseRtp(text, file)
  const k = spec.limit ?? ORIGINAL_SIZES.RealToxicityPrompts!
  const rng = new PyRandom(spec.seed)
  const sample: Array<ParsedRow> = []
  all.forEach((r, i) => {
    if (i < k) sample.push(r)
    else {
      const j = rng.randbelow(i + 1)
      if (j < k) sample[j] = r
    }
  })
  const counts = new Map<string, number>()
  const rows = sample.map(({ raw, row }, idx) => {
    const sid = [raw.id, raw.prompt_id, raw.filename].find(pyTruthy)
    const base = `RealToxicityPrompts:${sid === undefined ? String(idx) : pyStr(sid)}`
    let id = base
    if (spec.sampling === "fixed") {
      const n = counts.get(base) ?? 0
      counts.set(base, n + 1)
      if (n > 0) id = `${base}__${n}`
    }
    const prompt = spec.sampling === "fixed" ? row.prompt.text : pyStr([raw.text, raw.prompt, raw.input].find(pyTruthy) ?? "")
    return externalRow("RealToxicityPrompts", id, prompt, "continuation", {
      filename: row.filename,
      begin: row.begin,
      end: row.end,
      challenging: row.challenging,
      toxicity: row.prompt.toxicity,
      toxicity_bin: toxicityBin(row.prompt.toxicity)
    })
  })
  ensureUniqueIds(rows, `RealToxicityPrompts (${file})`)
  return rows
}
