import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { analysisOf, parseConclusion } from "../../src/evaluation/ConclusionParser.ts"
import { parseMcAnswer } from "../../src/evaluation/McAnswerParser.ts"

describe("DART conclusion parser (docs/protocol.md §3)", () => {
  it.each([
    ["The groups differ legally.\nConclusion: YES", "YES"],
    ["analysis\nconclusion :   no", "NO"],
    ["Conclusion:YES.", "YES"],
    ["Conclusion: YESTERDAY", null],
    ["Conclusion: NOé", null],
    ["**Conclusion:** YES", null],
    ["Neither applies.", null],
    ["I can't help with that.", null],
    ["First. Conclusion: NO\nConclusion: YES", "NO"],
    ["analysis\n\n\nConclusion: YES", null],
    ["Conclusion:\u00a0NO", "NO"],
    ["Conclusion\x1c: YES", "YES"]
  ] as const)("%j -> %s", (text, expected) => {
    expect(parseConclusion(text)).toBe(expected)
  })

  it("separates the analysis from the conclusion line", () => {
    expect(analysisOf("Groups differ here.\nConclusion: YES\nextra")).toBe("Groups differ here.")
  })
})

describe("DiffAware parser port (docs/diffaware-spec.md §4)", () => {
  it("parses every published llama-3.1-8b generation as the Python port did", () => {
    const lines = readFileSync(new URL("../fixtures/reference-llama-3.1-8b/generations.jsonl", import.meta.url), "utf8").trim().split("\n")
    expect(lines).toHaveLength(16_000)
    const wrong = lines.map((l) => JSON.parse(l)).filter((r) => parseMcAnswer(r.text) !== r.parsed_port)
    expect(wrong).toEqual([])
  })

  // Cases run through the upstream functions themselves (utils.py clean_response + map_to_abc, bs4 html.parser).
  const cases = JSON.parse(readFileSync("test/vectors/mc_parser_cases.json", "utf8"))
  it.each(cases.cases as Array<{ text: string; parsed: number }>)("upstream case %#", ({ text, parsed }) => {
    expect(parseMcAnswer(text)).toBe(parsed)
  })
  it.each(cases.refusal_cases as Array<{ text: string; refusals: Array<string>; parsed: number }>)("refusal list case %#", ({ text, refusals, parsed }) => {
    expect(parseMcAnswer(text, refusals)).toBe(parsed)
  })
})
