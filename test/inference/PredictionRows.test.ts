import { describe, expect, it } from "@effect/vitest"
import type { NormalizedItem } from "../../src/datasets/BenchmarkItem.ts"
import type { AnswerRow } from "../../src/inference/AnswerStore.ts"
import { predictionRows } from "../../src/inference/PredictionRows.ts"
import { dartTask, mcTask } from "../../src/tasks/DiffAwareTasks.ts"

const item = (id: string, over: Partial<NormalizedItem> = {}) =>
  ({
    id, benchmark: "D1", condition: "neq", index: 0, question: `Q ${id}?`, answer: 0, marginalized_choice: null, scenario: "s",
    gold_label: "YES", split: "val", ...over
  }) as NormalizedItem
const items = [item("D1-neq-0000"), item("N2-eq-0001", { benchmark: "N2", condition: "eq", answer: 2, gold_label: "NO", scenario: "t" })]
const arms = ["M0", "DART"]

/** A hand-made answer index: request index → answer (2 items × 2 samples × 2 arms). */
const answers = new Map<number, Pick<AnswerRow, "text" | "finish_reason" | "server">>([
  // item 0, sample 0: both arms; the adapter's text runs on past a triple newline, which is cut.
  [0, { text: "base says yes.\nConclusion: YES", finish_reason: "stop", server: "http://a" }],
  [1, { text: "dart says no.\nConclusion: NO\n\n\nand more", finish_reason: "length", server: "http://a" }],
  // item 0, sample 1: only the base arm, so no row.
  [2, { text: "x", finish_reason: "stop", server: "http://a" }],
  // item 1, sample 0: nothing. Item 1, sample 1: both arms, a null finish reason kept as null.
  [6, { text: "b1", finish_reason: null, server: "http://b" }],
  [7, { text: "d1", finish_reason: "stop", server: "http://b" }]
])

const lines = () => {
  const read: Array<number> = []
  const out = [...predictionRows({
    task: dartTask, policy: "off", items, samples: 2, arms,
    answered: (i) => answers.has(i),
    read: (i) => (read.push(i), answers.get(i)!)
  })]
  return { out, read }
}

describe("PredictionRows", () => {
  it("a hand-made answer index gives exactly the expected JSONL lines; incomplete rows are skipped", () => {
    const { out, read } = lines()
    expect(out).toEqual([
      '{"task":"dart","id":"D1-neq-0000","benchmark":"D1","condition":"neq","scenario":"s","answer":0,"gold_label":"YES","split":"val","policy":"off",' +
      '"sample":0,"outputs":{"M0":{"text":"base says yes.\\nConclusion: YES","finish_reason":"stop","server":"http://a"},' +
      '"DART":{"text":"dart says no.\\nConclusion: NO","finish_reason":"length","server":"http://a"}},"question":"Q D1-neq-0000?"}\n',
      '{"task":"dart","id":"N2-eq-0001","benchmark":"N2","condition":"eq","scenario":"t","answer":2,"gold_label":"NO","split":"val","policy":"off",' +
      '"sample":1,"outputs":{"M0":{"text":"b1","finish_reason":null,"server":"http://b"},"DART":{"text":"d1","finish_reason":"stop","server":"http://b"}},"question":"Q N2-eq-0001?"}\n'
    ])
    // Only answers are read; a row stops reading at its first missing arm.
    expect(read).toEqual([0, 1, 2, 6, 7])
  })

  it("mc rows carry the task and policy given; outputs keep the arms' order", () => {
    const lines = [...predictionRows({
      task: mcTask, policy: "sys1", items: [items[0]!], samples: 1, arms: ["DART", "M0"],
      answered: () => true,
      read: (i) => ({ text: `(${"ab"[i]})`, finish_reason: "stop", server: "s" })
    })]
    const rows = lines.map((l) => JSON.parse(l))
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ task: "mc", policy: "sys1", sample: 0 })
    expect(Object.keys(rows[0]!.outputs)).toEqual(["DART", "M0"])
    expect(rows[0]!.outputs.DART!.text).toBe("(a)")
    // The question travels with the row, last: the audit and the report need no lookup in datasets/.
    expect(lines[0]).toMatch(/,"question":"Q [^"]+\?"\}\n$/)
  })

  it("no answers, no rows", () => {
    expect([...predictionRows({ task: dartTask, policy: "off", items, samples: 2, arms, answered: () => false, read: () => { throw new Error("not answered") } })]).toEqual([])
  })
})
