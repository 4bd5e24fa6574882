import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { TeacherOutput, TeacherOutputKey, TeacherTrainingRow } from "../../src/contracts/TeacherOutput.ts"
import { studentMessages } from "../../src/teacher/Prompts.ts"

const messages = [...studentMessages("Which group is larger?"), { role: "assistant", content: "The facts differ. Careful reading supports it.\nConclusion: YES" }]
// A row as `dart teacher` appends it: the key, the item it worked on, then the outcome.
const written = (carry: Record<string, unknown>) =>
  JSON.parse(JSON.stringify({
    key: "D1-neq-0007",
    ...carry,
    messages,
    conclusion: "YES",
    accepted: true,
    violations: [],
    rounds: 1,
    usage: { prompt_tokens: 120, completion_tokens: 30 },
    cost_usd: 0.0001,
    provider: "deepseek",
    model: "deepseek-chat",
    prompt_version: "dart-v1",
    request_hashes: ["ab12"]
  }))

describe("a teacher output row (contracts/TeacherOutput)", () => {
  it("decodes the rows of both tasks; the item's fields stay provenance", () => {
    const distill = written({ id: "D1-neq-0007", benchmark: "D1", condition: "neq", scenario: "s", question: "Q", answer: 0, gold_label: "YES", split: "train" })
    expect(Schema.decodeUnknownSync(TeacherOutput)(distill)).toMatchObject({ key: "D1-neq-0007", gold_label: "YES", accepted: true, rounds: 1 })
    const repair = written({ id: "D1-neq-0007", sample: 1, benchmark: "D1", a_name: "M0", b_name: "DART", severity: "severe", question: "Q", gold_label: "YES", pool_file: "p" })
    expect(Schema.decodeUnknownSync(TeacherOutput)(repair).severity).toBe("severe")
    expect(() => Schema.decodeUnknownSync(TeacherOutput)({ ...repair, severity: "huge" })).toThrow()
    expect(() => Schema.decodeUnknownSync(TeacherOutput)({ ...repair, usage: { prompt_tokens: 1, completion_tokens: 1, estimated: true } })).not.toThrow()
  })

  it("is read through its projections: the done keys, and what training needs", () => {
    const row = written({ severity: "mild" })
    expect(Schema.decodeUnknownSync(TeacherOutputKey)(row)).toEqual({ key: "D1-neq-0007" })
    expect(Schema.decodeUnknownSync(TeacherTrainingRow)(row)).toEqual({ key: "D1-neq-0007", accepted: true, messages, severity: "mild" })
    // Hand-made rows with only these fields (as the training tests write them) are enough.
    expect(Schema.decodeUnknownSync(TeacherTrainingRow)({ key: "k", accepted: false, messages })).toEqual({ key: "k", accepted: false, messages })
  })
})
