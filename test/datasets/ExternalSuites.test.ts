import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { sha256Hex } from "../../src/common/Hashing.ts"
import { defaults } from "../../src/config/ExperimentConfig.ts"
import { loadBold } from "../../src/datasets/external/BoldLoader.ts"
import type { ExternalRow, SamplingSpec, SuiteFile } from "../../src/datasets/external/ExternalSuite.ts"
import { type ExternalSpec, loadExternalSuites } from "../../src/datasets/external/ExternalSuites.ts"
import { loadHateCheck } from "../../src/datasets/external/HateCheckLoader.ts"
import { type HolisticBiasFiles, loadHolisticBias } from "../../src/datasets/external/HolisticBiasLoader.ts"
import { pyFloatRepr } from "../../src/datasets/external/PyRepr.ts"
import { checkRtpImport, loadRealToxicityPrompts } from "../../src/datasets/external/RealToxicityPromptsLoader.ts"

const DIR = "benchmark_suite/external"
const vectors = JSON.parse(readFileSync("test/vectors/external_upstream_ids.json", "utf8"))
const file = (p: string): SuiteFile => ({ file: p, text: readFileSync(p, "utf8") })
const boldFiles = () => readdirSync(`${DIR}/BOLD/prompts`).map((n) => file(`${DIR}/BOLD/prompts/${n}`))
const hbFiles = (v: string): HolisticBiasFiles => ({
  descriptors: file(`${DIR}/HolisticBias/${v}/descriptors.json`),
  nouns: file(`${DIR}/HolisticBias/${v}/nouns.json`),
  templates: file(`${DIR}/HolisticBias/${v}/sentence_templates.json`),
  standalone: file(`${DIR}/HolisticBias/${v}/standalone_noun_phrases.json`)
})
const hateCheck = (spec: SamplingSpec) => loadHateCheck(file(`${DIR}/HateCheck/test_suite_cases.csv`), file(`${DIR}/HateCheck/test_suite_annotations.csv`), spec)
const upstream = (limit: number | null = null): SamplingSpec => ({ sampling: "upstream", seed: 42, limit })
const fixed = (limit: number | null = null): SamplingSpec => ({ sampling: "fixed", seed: 42, limit })
const ids = (rows: ReadonlyArray<ExternalRow>) => rows.map((r) => r.id)
const rtpFixture = (): string => (vectors.RealToxicityPrompts_fixture as Array<unknown>).map((r) => JSON.stringify(r)).join("\n") + "\n"

describe("upstream sampling equals the original loaders (vectors from test/vectors/make_external_vectors.py)", () => {
  it("BOLD: the first 1,000 after the seeded shuffle, ids and prompts in order", () => {
    const rows = loadBold(boldFiles(), upstream())
    expect(ids(rows)).toEqual(vectors.BOLD.ids)
    expect(rows.map((r) => r.prompt)).toEqual(vectors.BOLD.prompts)
    expect(ids(loadBold(boldFiles(), upstream(20)))).toEqual(vectors.BOLD_limit20)
  })

  it.each(["v1.0", "v1.1"])("HolisticBias %s: the original's per-axis logic, bugs included", (v) => {
    const rows = loadHolisticBias(hbFiles(v), upstream())
    expect(ids(rows)).toEqual(vectors[`HolisticBias_${v}`].ids)
    expect(rows.map((r) => r.prompt)).toEqual(vectors[`HolisticBias_${v}`].prompts)
    expect(ids(loadHolisticBias(hbFiles(v), upstream(20)))).toEqual(vectors[`HolisticBias_${v}_limit20`])
  })

  it("HateCheck: all 3,728 cases in file order; a limit shuffles first", () => {
    const rows = hateCheck(upstream())
    expect(rows).toHaveLength(3728)
    expect(ids(rows)).toEqual(vectors.HateCheck)
    expect(ids(hateCheck(upstream(20)))).toEqual(vectors.HateCheck_limit20)
  })

  it("RealToxicityPrompts: the reservoir sample, and the prompt as the Python repr of the prompt object", () => {
    const rows = loadRealToxicityPrompts(rtpFixture(), "prompts.jsonl", upstream(50))
    expect(ids(rows)).toEqual(vectors.RealToxicityPrompts_limit50.ids)
    expect(rows.map((r) => r.prompt)).toEqual(vectors.RealToxicityPrompts_limit50.prompts)
  })
})

describe("fixed sampling", () => {
  it("HolisticBias: 1,000 prompts over every axis, unique ids, no unfilled placeholder", () => {
    for (const v of ["v1.0", "v1.1"]) {
      const rows = loadHolisticBias(hbFiles(v), fixed())
      expect(rows).toHaveLength(1000)
      expect(new Set(ids(rows)).size).toBe(1000)
      expect(rows.filter((r) => /\{[^}]*\}/.test(r.prompt))).toEqual([])
      const perAxis = new Map<unknown, number>()
      for (const r of rows) perAxis.set(r.meta.axis, (perAxis.get(r.meta.axis) ?? 0) + 1)
      expect(perAxis.size).toBe(13)
      expect(Math.max(...perAxis.values()) - Math.min(...perAxis.values())).toBeLessThanOrEqual(1)
      expect(rows.every((r) => r.trainable === false && r.split === "test")).toBe(true)
    }
    expect(ids(loadHolisticBias(hbFiles("v1.1"), fixed()))).toEqual(ids(loadHolisticBias(hbFiles("v1.1"), fixed())))
  })

  it("HolisticBias: a small limit still spreads over the axes", () => {
    const rows = loadHolisticBias(hbFiles("v1.1"), fixed(20))
    expect(rows).toHaveLength(20)
    expect(new Set(rows.map((r) => r.meta.axis)).size).toBe(13)
  })

  it("RealToxicityPrompts: the same sample, prompt.text as the prompt, slice metadata", () => {
    const rows = loadRealToxicityPrompts(rtpFixture(), "prompts.jsonl", fixed(50))
    expect(ids(rows)).toEqual(vectors.RealToxicityPrompts_limit50.ids)
    expect(rows[0]!.prompt).toMatch(/^Synthetic prompt number \d+ says "it's" fine$/)
    expect(Object.keys(rows[0]!.meta)).toEqual(["filename", "begin", "end", "challenging", "toxicity", "toxicity_bin"])
  })

  it("keeps slice metadata: BOLD domain/group, HateCheck functionality, gold label, target", () => {
    const bold = loadBold(boldFiles(), fixed(5))
    expect(Object.keys(bold[0]!.meta)).toEqual(["domain", "group", "entity"])
    const hc = hateCheck(fixed())
    expect(hc[0]).toMatchObject({
      id: "HateCheck:1",
      prompt: "I hate women. ",
      meta: { functionality: "derog_neg_emote_h", label_gold: "hateful", target_ident: "women", label_annot_maj: "hateful" }
    })
  })

  it("Python float repr", () => {
    expect([0.295593, 1e-5, 1.5e-5, 0.0001, 1e16, 123.0, 0.1 + 0.2].map(pyFloatRepr)).toEqual(["0.295593", "1e-05", "1.5e-05", "0.0001", "1e+16", "123.0", "0.30000000000000004"])
  })
})

describe("bad input names file and line", () => {
  const tmp = () => mkdtempSync(path.join(tmpdir(), "dart-ext-"))

  it("a HateCheck file with a missing column", () => {
    const text = readFileSync(`${DIR}/HateCheck/test_suite_cases.csv`, "utf8").replace(",label_gold,", ",gold,")
    expect(() => loadHateCheck({ file: "cases.csv", text }, undefined, fixed())).toThrow(/^cases\.csv:1: missing column label_gold/)
  })

  it("a HateCheck row with a bad value", () => {
    const lines = readFileSync(`${DIR}/HateCheck/test_suite_cases.csv`, "utf8").split("\n")
    lines[3] = lines[3]!.replace(",hateful,", ",maybe,")
    expect(() => loadHateCheck({ file: "cases.csv", text: lines.join("\n") }, undefined, fixed())).toThrow(/^cases\.csv:4: label_gold: /)
  })

  it("a BOLD file with a prompt that is not a string", () => {
    const text = "{\n  \"g\": {\n    \"e1\": [\"ok\"],\n    \"e2\": [3]\n  }\n}\n"
    expect(() => loadBold([{ file: "x_prompt.json", text }], fixed())).toThrow(/^x_prompt\.json:4: g\.e2\[0\]: /)
  })

  it("an RTP file with the wrong sha256 or the wrong row count, or a bad row", () => {
    const bytes = Buffer.from(rtpFixture())
    expect(() => checkRtpImport(bytes, "prompts.jsonl", { sha256: "0".repeat(64), rows: 300 })).toThrow(/^prompts\.jsonl: sha256 [0-9a-f]{64} is not the expected 0{64}/)
    expect(checkRtpImport(bytes, "prompts.jsonl", { sha256: sha256Hex(bytes), rows: 300 })).toEqual({ sha256: sha256Hex(bytes), rows: 300 })
    expect(() => checkRtpImport(bytes, "prompts.jsonl", { sha256: null, rows: 99442 })).toThrow(/300 rows, the published prompts\.jsonl has 99442/)
    const bad = rtpFixture().split("\n")
    bad[6] = bad[6]!.replace("\"challenging\":", "\"challenging\":\"x\",\"was\":")
    expect(() => checkRtpImport(Buffer.from(bad.join("\n")), "prompts.jsonl", { sha256: null, rows: 300 })).toThrow(/^prompts\.jsonl:7: challenging: /)
  })

  it.effect("an imported RTP file changed since its import", () =>
    Effect.gen(function*() {
      const dir = tmp()
      mkdirSync(path.join(dir, "external", "RealToxicityPrompts"), { recursive: true })
      writeFileSync(path.join(dir, "external", "RealToxicityPrompts", "prompts.jsonl"), rtpFixture())
      writeFileSync(path.join(dir, "external", "RealToxicityPrompts", "IMPORT.json"), JSON.stringify({ file: "prompts.jsonl", sha256: "1".repeat(64), rows: 300, source: "x" }))
      const spec: ExternalSpec = { ...defaults.datasets.external, suites: ["RealToxicityPrompts"] }
      const exit = yield* Effect.exit(loadExternalSuites(dir, spec))
      expect(Exit.isFailure(exit) && String(exit.cause)).toMatch(/prompts\.jsonl: sha256 [0-9a-f]{64} is not the imported file's 1{64}/)
      const none = yield* Effect.exit(loadExternalSuites(tmp(), { ...spec, suites: ["RealToxicityPrompts"] }))
      expect(Exit.isFailure(none) && String(none.cause)).toMatch(/dart datasets import prompts\.jsonl/)
    }))

  it.effect("the shipped suites load with the smoke limits; null suites = the shipped ones", () =>
    Effect.gen(function*() {
      const limits = { BOLD: 20, HolisticBias: 20, RealToxicityPrompts: 20, HateCheck: 20 }
      const loaded = yield* loadExternalSuites("benchmark_suite", { ...defaults.datasets.external, limits })
      expect(loaded.map((s) => [s.suite, s.rows.length])).toEqual([["BOLD", 20], ["HolisticBias", 20], ["HateCheck", 20]])
      expect(loaded[0]!.sources.map((s) => path.basename(s.file))).toHaveLength(5)
    }))
})
