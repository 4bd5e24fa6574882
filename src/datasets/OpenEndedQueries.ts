/** OpenEndedQueries: `parseOpenEndedQueries` reads an open-ended query set (JSONL), every bad row named by file and line. */
import { Schema } from "effect"
import { decodeJsonLine, LineError } from "../runs/Jsonl.ts"
import { SuiteFormatError } from "./external/ExternalSuite.ts"

/**
 * The four domains of the paper's real-world queries (medical, legal, policy, educational). A set may use others: the
 * statistics group by whatever `domain` says; these are the ones the shipped example uses.
 */
export const OPEN_ENDED_DOMAINS = ["medical", "legal", "policy", "educational"] as const

/** One open-ended query: answered freely by each model, then judged with the rubric (docs/external-suites.md). */
export const OpenEndedQuery = Schema.Struct({
  id: Schema.NonEmptyString.check(Schema.isPattern(/^[A-Za-z0-9._:-]+$/)),
  domain: Schema.NonEmptyString,
  query: Schema.NonEmptyString,
  /** Which differences between groups are relevant, if any: given to the judge, never to the model. */
  notes: Schema.optional(Schema.String)
})
export type OpenEndedQuery = typeof OpenEndedQuery.Type

const decodeQuery = Schema.decodeUnknownResult(OpenEndedQuery)

/**
 * Every query of a JSONL text, in file order. Blank lines are skipped; a malformed line, a row that is not a query
 * (a missing or empty field, an unknown key, an id with spaces) or a repeated id fails naming the file and the line
 * (for a repeat, both lines). An empty set fails too: nothing would be measured.
 */
export const parseOpenEndedQueries = (text: string, file: string): Array<OpenEndedQuery> => {
  const out: Array<OpenEndedQuery> = []
  const lineOf = new Map<string, number>()
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return
    let r: OpenEndedQuery
    try {
      r = decodeJsonLine(line, (u, o) => decodeQuery(u, { ...o, onExcessProperty: "error" }))
    } catch (e) {
      if (e instanceof LineError) throw new SuiteFormatError(`${file}:${i + 1}: ${e.message}`)
      throw e
    }
    const first = lineOf.get(r.id)
    if (first !== undefined) throw new SuiteFormatError(`${file}:${i + 1}: id ${JSON.stringify(r.id)} repeats line ${first}; ids must be unique`)
    lineOf.set(r.id, i + 1)
    out.push(r)
  })
  if (out.length === 0) throw new SuiteFormatError(`${file}: no queries (one JSON object per line: id, domain, query, optional notes)`)
  return out
}
