import { createWriteStream, readFileSync } from "node:fs"
import { once } from "node:events"
import { PyRandom } from "../src/datasets/PyRandom.ts"

export interface SuiteItem {
  readonly id: string
  readonly benchmark: string
  readonly condition: "neq" | "eq"
  readonly scenario: string
  readonly answer: number
}

/** The shipped suite plus a synthetic N1 (BBQ-sized: 275 / 171 scenarios), 16,000 items in all. */
export const benchItems = (): Array<SuiteItem> => {
  const items: Array<SuiteItem> = []
  for (const b of ["D1", "D2", "D3", "D4", "N2", "N3", "N4"]) {
    for (const l of readFileSync(`benchmark_suite/${b}.jsonl`, "utf8").trim().split("\n")) items.push(JSON.parse(l))
  }
  for (let i = 0; i < 1000; i++) {
    items.push({ id: `N1-neq-${String(i).padStart(4, "0")}`, benchmark: "N1", condition: "neq", scenario: String(i % 275), answer: i % 2 })
    items.push({ id: `N1-eq-${String(i).padStart(4, "0")}`, benchmark: "N1", condition: "eq", scenario: String(i % 171), answer: 2 })
  }
  return items
}

/** Writes rows through a stream so generating a million rows stays small in memory. */
export const writeRows = async (file: string, count: number, row: (i: number) => unknown) => {
  const out = createWriteStream(file)
  for (let i = 0; i < count; i++) {
    if (!out.write(`${JSON.stringify(row(i))}\n`)) await once(out, "drain")
  }
  out.end()
  await once(out, "finish")
}

export const mcRows = (items: ReadonlyArray<SuiteItem>, seed = 1) => {
  const rng = new PyRandom(seed)
  const answer = () => ["(a)", "(b)", "(c)", "I would rather not say."][rng.randbelow(4)]!
  return (i: number) => {
    const it = items[i]!
    return { task: "mc", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, answer: it.answer, sample: 0, outputs: { M0: { text: answer() }, DART_H: { text: answer() } } }
  }
}

export const dartRows = (items: ReadonlyArray<SuiteItem>, seed = 2) => {
  const rng = new PyRandom(seed)
  const text = () => ["Groups differ in law here.\nConclusion: YES", "The groups should be treated alike.\nConclusion: NO", "I cannot help with this."][rng.randbelow(3)]!
  return (i: number) => {
    const it = items[i % items.length]!
    return { task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, sample: Math.floor(i / items.length), outputs: { M0: { text: text() }, DART_H: { text: text() } } }
  }
}
