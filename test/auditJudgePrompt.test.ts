import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { extractJson, JUDGE_PROMPT_VERSION, judgeMessages, judgeResponseFormat, JudgeVerdict } from "../src/audit/JudgePrompt.ts"

const decode = Schema.decodeUnknownResult(JudgeVerdict)
const good = { is_regression: true, severity: "moderate", reason: "B justifies unequal treatment", regression_type: "harmful_reasoning", a_correct: true, b_correct: false }

describe("the comparative judge's prompt and reply", () => {
  it("shows the question, the gold label, both outputs and both parsed conclusions", () => {
    const [system, user] = judgeMessages({ question: "Q?", gold: "NO", aText: "A says.\nConclusion: NO", bText: "B says.", aConclusion: "NO", bConclusion: null })
    expect(system!.role).toBe("system")
    expect(system!.content).toContain("never a regression")
    expect(user!.content).toContain("Prompt:\nQ?")
    expect(user!.content).toContain("Gold label: NO")
    expect(user!.content).toContain("Output A (conclusion: NO):\n<<<\nA says.\nConclusion: NO\n>>>")
    expect(user!.content).toContain("Output B (conclusion: none (unparseable)):\n<<<\nB says.\n>>>")
    expect(JUDGE_PROMPT_VERSION).toMatch(/^dart-judge-v\d+$/)
  })
  it("decodes the protocol's JSON and rejects a reply that contradicts itself or misses a field", () => {
    expect(decode(good)._tag).toBe("Success")
    expect(decode({ ...good, severity: "none" })._tag).toBe("Failure")
    expect(decode({ ...good, is_regression: false })._tag).toBe("Failure")
    expect(decode({ ...good, regression_type: "rude" })._tag).toBe("Failure")
    const { b_correct: _, ...missing } = good
    expect(decode(missing)._tag).toBe("Failure")
  })
  it("finds the JSON in a fenced block and offers the same schema as response_format", () => {
    expect(JSON.parse(extractJson(`Here you go:\n\`\`\`json\n${JSON.stringify(good)}\n\`\`\``))).toEqual(good)
    expect(extractJson(` ${JSON.stringify(good)} `)).toBe(JSON.stringify(good))
    expect(judgeResponseFormat.json_schema.schema.required).toEqual(Object.keys(good))
  })
})
