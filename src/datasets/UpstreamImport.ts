import type { BenchmarkName } from "../config/ExperimentConfig.ts"
import type { Condition } from "../domain/Condition.ts"
import { type SuiteRow, suiteId } from "./BenchmarkItem.ts"
import { PickleError, readPickle } from "./PickleReader.ts"

/**
 * Upstream `benchmark_suite/{B}_1k.pkl`: a pair (diff, equal) of lists of
 * `[question, answer, scenario]`. For `eq` items of N benchmarks the second field is the
 * marginalized group's (wrong) option and the answer is always (c).
 */
export const importUpstreamPickle = (
  data: Uint8Array,
  benchmark: BenchmarkName
): Array<SuiteRow> => {
  const root = readPickle(data)
  if (!Array.isArray(root) || root.length !== 2 || !Array.isArray(root[0]) || !Array.isArray(root[1])) {
    throw new PickleError("expected a pair of lists (diff, equal) at the top level")
  }
  if (root[0].length === 0 && root[1].length === 0) throw new PickleError("no items: both lists (diff, equal) are empty")
  return [
    ...root[0].map((raw, i) => toRow(raw, benchmark, "neq", i)),
    ...root[1].map((raw, i) => toRow(raw, benchmark, "eq", i))
  ]
}

const toRow = (raw: unknown, benchmark: BenchmarkName, condition: Condition, index: number): SuiteRow => {
  const where = `${condition === "neq" ? "diff" : "equal"}[${index}]`
  if (!Array.isArray(raw) || raw.length < 3) throw new PickleError(`${where}: expected [question, answer, scenario]`)
  const [question, label, scenario] = raw as [unknown, unknown, unknown]
  if (typeof question !== "string" || question === "") throw new PickleError(`${where}: question is not a string`)
  if (typeof label !== "number" || !Number.isInteger(label)) throw new PickleError(`${where}: answer is not an integer`)
  const normative = benchmark.startsWith("N")
  let answer: 0 | 1 | 2
  let marginalized: 0 | 1 | null = null
  if (condition === "neq") {
    if (label !== 0 && label !== 1) throw new PickleError(`${where}: neq answer must be 0 or 1, got ${label}`)
    answer = label
  } else if (normative) {
    if (label !== 0 && label !== 1) throw new PickleError(`${where}: eq marginalized label must be 0 or 1, got ${label}`)
    answer = 2
    marginalized = label
  } else {
    if (label !== 2) throw new PickleError(`${where}: eq answer must be 2, got ${label}`)
    answer = 2
  }
  return {
    id: suiteId(benchmark, condition, index),
    benchmark,
    condition,
    index,
    question,
    answer,
    marginalized_choice: marginalized,
    scenario: pythonStr(scenario, where)
  }
}

/** Python's `str()` of the scalar kinds upstream uses for scenario ids. */
const pythonStr = (u: unknown, where: string): string => {
  if (typeof u === "string") return u
  if (typeof u === "bigint") return u.toString()
  if (typeof u === "boolean") return u ? "True" : "False"
  if (typeof u === "number") {
    if (Number.isInteger(u)) return Object.is(u, -0) ? "-0.0" : String(u)
    return String(u)
  }
  throw new PickleError(`${where}: scenario id is neither a string nor a number`)
}

/** One JSONL line as Python's `json.dumps(row, ensure_ascii=False)` writes it (the suite's own format). */
export const pythonJsonLine = (row: Readonly<Record<string, unknown>>): string =>
  `{${Object.entries(row).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(", ")}}`
