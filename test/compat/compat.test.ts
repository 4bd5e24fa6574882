import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { poolRowFromOriginal, OriginalPoolRow } from "../../src/compat/OriginalPool.ts"
import { looksLikeOriginalPrediction, originalPredictionDecoder } from "../../src/compat/OriginalPredictions.ts"
import { resolveConfig } from "../../src/config/ConfigLoader.ts"
import { isLegacyConfig, translateLegacyConfig } from "../../src/config/LegacyConfig.ts"
import { parseConclusion } from "../../src/evaluation/ConclusionParser.ts"
import { Schema } from "effect"

const repo = process.cwd()
const vectors = path.join(repo, "test/vectors/original")
const readmeConfig = path.join(repo, "test/fixtures/original/exp_acl.json")
const jsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>)

/** The real `dart` entry point, run in `cwd` as a user would. */
const dart = (cwd: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const r = spawnSync(process.execPath, [path.join(repo, "bin/dart.js"), ...args], {
    cwd,
    env: { ...process.env, EXP_ID: "", DEEPSEEK_API_KEY: "", OPENAI_API_KEY: "", ...env },
    encoding: "utf8",
    timeout: 120_000
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Leaf keys of a JSON object, as dotted paths (lists are leaves). */
const leafKeys = (o: unknown, prefix = ""): Array<string> =>
  typeof o === "object" && o !== null && !Array.isArray(o)
    ? Object.entries(o).flatMap(([k, v]) => leafKeys(v, prefix === "" ? k : `${prefix}.${k}`))
    : [prefix]

/** A scratch folder laid out like the original's project: configs/, benchmark_suite/ (ours), runs/. */
const project = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "dart-compat-"))
  mkdirSync(path.join(dir, "configs"))
  cpSync(readmeConfig, path.join(dir, "configs/exp_acl.json"))
  symlinkSync(path.join(repo, "benchmark_suite"), path.join(dir, "benchmark_suite"))
  return dir
}

describe("the original's config", () => {
  it("translates the README's exp_acl.json key by key, honouring its lora block", () => {
    const json = JSON.parse(readFileSync(readmeConfig, "utf8"))
    expect(isLegacyConfig(json)).toBe(true)
    const t = translateLegacyConfig(json)
    expect(t.refusals).toEqual([])
    expect(t.config).toEqual({
      model: { base: "meta-llama/Llama-3.1-8B-Instruct", dtype: "bfloat16" },
      teacher: { provider: "deepseek", model: "deepseek-chat", max_concurrency: 16 },
      training: { epochs: 3, learning_rate: 2e-4, per_device_batch_size: 4, lora: { r: 16, alpha: 32, target_modules: ["q_proj", "v_proj", "k_proj", "o_proj"] } }
    })
    // One line per key of the file, in the file's order.
    expect(t.notices).toHaveLength(leafKeys(json).length)
    leafKeys(json).forEach((k, i) => expect(t.notices[i]!.startsWith(`${k} = `)).toBe(true))
    expect(t.notices.find((n) => n.startsWith("lora.target_modules"))).toContain("dropped this top-level block and trained r 16, alpha 32 on all seven projections")
    const resolved = resolveConfig("exp_acl.json", JSON.stringify(json), [], undefined, undefined)
    if (!("config" in resolved)) throw resolved
    expect(resolved.config.training.lora.target_modules).toEqual(["q_proj", "v_proj", "k_proj", "o_proj"])
    expect(resolved.config.training.epochs).toBe(3)
    expect(resolved.notices?.at(-1)).toContain("dart config migrate exp_acl.json")
  })

  it("leaves dart's own configs alone", () => {
    for (const f of ["configs/exp_acl.json", "configs/smoke.json"]) expect(isLegacyConfig(JSON.parse(readFileSync(f, "utf8"))), f).toBe(false)
    expect(isLegacyConfig({ run: { seed: 1, exp_id: "x" }, training: { lora: { r: 8 } }, teacher: { provider: "openai" } })).toBe(false)
    const resolved = resolveConfig("configs/exp_acl.json", readFileSync("configs/exp_acl.json", "utf8"), [], undefined, undefined)
    expect(!("config" in resolved) ? resolved.message : resolved.notices).toEqual([])
  })

  it("takes every key of the original's full schema (its --dump-default output) with one line each", () => {
    const json = JSON.parse(readFileSync(path.join(vectors, "default_config.json"), "utf8"))
    const t = translateLegacyConfig(json)
    expect(t.refusals).toEqual([])
    // data.sources, evaluation.label_map, derived … are taken whole; the rest one line per leaf.
    const keys = new Set(t.notices.map((n) => n.slice(0, n.indexOf(" = "))))
    expect(keys.size).toBe(t.notices.length)
    for (const k of ["model.torch_dtype", "generation.top_k", "training.lora.lora_alpha", "audit.severity_thresholds.use_abs_floors", "data.sources", "derived"]) {
      expect(keys.has(k), k).toBe(true)
    }
    const resolved = resolveConfig("default_config.json", JSON.stringify(json), [], undefined, undefined)
    if (!("config" in resolved)) throw resolved
    const c = resolved.config
    expect(c.model).toMatchObject({ base: "meta-llama/Meta-Llama-3-8B-Instruct", dtype: "auto" })
    expect(c.inference).toMatchObject({ top_k: null, top_p: 0.9, temperature: 0.2, max_tokens: 256, seed: 42 })
    expect(c.training).toMatchObject({ per_device_batch_size: 2, max_length: 1024, epochs: 3 })
    expect(c.training.lora.target_modules).toHaveLength(7)
    expect(c.judge).toMatchObject({ max_concurrency: 8, max_retries: 3, timeout_s: 60 })
    expect(c.audit.classifiers.map((x) => x.label)).toEqual(["toxic", "hate"])
    expect(c.audit.abs_floors).toEqual({ enabled: true, mild: 0.2, moderate: 0.3, severe: 0.4, extreme: 0.5 })
  })

  it("translates --override with the original's key names too", () => {
    const text = readFileSync(readmeConfig, "utf8")
    const ok = resolveConfig("c.json", text, ["training.num_train_epochs=5", "generation.top_k=0", "audit.score_full_output=false", "run.exp_id=x"], undefined, undefined)
    if (!("config" in ok)) throw ok
    expect(ok.config.training.epochs).toBe(5)
    expect(ok.config.inference.top_k).toBeNull()
    expect(ok.config.audit.views).toEqual(["analysis_only"])
    expect(ok.config.run.exp_id).toBe("x")
    expect(ok.notices).toContain("--override training.num_train_epochs=5: the original's key -> training.epochs = 5")
    const bad = resolveConfig("c.json", text, ["generation.num_beams=3"], undefined, undefined)
    expect(!("config" in bad) ? bad.message : "accepted").toBe("--override generation.num_beams=3: beam search; vLLM sampling here has no beams")
  })

  it("refuses what it cannot honour, saying what each key meant, and writes nothing", () => {
    const dir = project()
    const bad = {
      run: { exp_name: "mine", deterministic: true },
      generation: { num_beams: 4, max_new_tokens: 128 },
      data: { sources: { D1: { path: "elsewhere/D1.pkl" } } },
      paths: { no_such_key: 1 }
    }
    writeFileSync(path.join(dir, "configs/bad.json"), JSON.stringify(bad))
    const r = dart(dir, ["init", "--config", "configs/bad.json", "--exp-id", "bad"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("configs/bad.json: a config in the original's shape with keys dart cannot honour")
    expect(r.stderr).toContain("run.exp_name = \"mine\": prefix of the exp ids the original generated")
    expect(r.stderr).toContain("generation.num_beams = 4: beam search")
    expect(r.stderr).toContain("data.sources = ")
    expect(r.stderr).toContain("custom paths (D1)")
    expect(r.stderr).toContain("paths.no_such_key = 1: not a key of the original's config")
    expect(r.stderr).not.toContain("max_new_tokens")
    expect(existsSync(path.join(dir, "runs"))).toBe(false)
  })

  it("dart config migrate writes the translation, which every command reads the same way", () => {
    const dir = project()
    const r = dart(dir, ["config", "migrate", "configs/exp_acl.json", "--out", "configs/migrated.json"])
    expect(r.stderr).toContain("wrote configs/migrated.json")
    expect(r.code).toBe(0)
    const migrated = readFileSync(path.join(dir, "configs/migrated.json"), "utf8")
    expect(isLegacyConfig(JSON.parse(migrated))).toBe(false)
    const a = resolveConfig("a", readFileSync(readmeConfig, "utf8"), [], undefined, undefined)
    const b = resolveConfig("b", migrated, [], undefined, undefined)
    if (!("config" in a) || !("config" in b)) throw new Error("unexpected config error")
    expect(b.hash).toBe(a.hash)
    expect(b.notices).toEqual([])

    writeFileSync(path.join(dir, "configs/other.json"), "{}\n")
    const refused = dart(dir, ["config", "migrate", "configs/exp_acl.json", "--out", "configs/other.json"])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain("configs/other.json exists with different content; pass --force")
    expect(readFileSync(path.join(dir, "configs/other.json"), "utf8")).toBe("{}\n")
    const printed = dart(dir, ["config", "migrate", "configs/exp_acl.json"])
    expect(JSON.parse(printed.stdout)).toEqual(JSON.parse(migrated))
  })
})

describe("the original's prediction rows", () => {
  const files = ["paired", "paired_dart_h", "single", "paired_resumed"].map((d) => path.join(vectors, d, "outputs.jsonl"))

  it("are read as the original wrote them, and dart's parser agrees with the original's on every output", () => {
    for (const file of files) {
      const decoder = originalPredictionDecoder(file)
      const lines = readFileSync(file, "utf8").trim().split("\n")
      const originals = lines.map((l) => JSON.parse(l))
      let read = 0
      lines.forEach((line, i) => {
        expect(looksLikeOriginalPrediction(line)).toBe(true)
        const row = decoder.decode(line)
        if (row === undefined) return
        read++
        const o = originals[i]
        expect(row).toMatchObject({ task: "dart", id: o.sample_id, benchmark: o.meta.benchmark_id, scenario: o.meta.scenario_id, gold_label: o.gold_label, answer: o.meta.answer, sample: 0 })
        expect(row.condition).toBe(o.meta.condition === "diff" ? "neq" : "eq")
        const sides = o.paired ? [o.paired.A, o.paired.B] : [o]
        for (const s of sides) {
          expect(row.outputs[s.model_id]!.text).toBe(s.raw_text)
          expect(parseConclusion(s.raw_text), `${o.sample_id} ${s.model_id}`).toBe(s.parse_ok ? s.parsed_conclusion : null)
        }
      })
      expect(read).toBe(6)
    }
  })

  it("dart evaluate scores them; a file the original's resume doubled scores the same, with a notice", () => {
    const dir = project()
    expect(dart(dir, ["init", "--exp-id", "ev"]).code).toBe(0)
    const once = dart(dir, ["evaluate", "--exp-id", "ev", "--pred", files[0]!, "--run-name", "once", "--a-name", "M0", "--b-name", "DART"])
    expect(once.stderr).toContain("6 rows written by the original's inference (model/inference.py, policy_off)")
    expect(once.code).toBe(0)
    const summary = JSON.parse(readFileSync(path.join(dir, "runs/ev/evaluation/once/summary.json"), "utf8"))
    // M0: two abstentions ("I cannot help…", "**Conclusion:** YES"); DART: two wrong answers.
    expect(summary.overall.M0).toMatchObject({ n: 6, accuracy: 4 / 6, parse_ok_rate: 4 / 6 })
    expect(summary.overall.DART).toMatchObject({ n: 6, accuracy: 4 / 6, parse_ok_rate: 1 })
    expect(Object.keys(summary.benchmarks)).toEqual(["D1", "N2"])

    const doubled = dart(dir, ["evaluate", "--exp-id", "ev", "--pred", files[3]!, "--run-name", "doubled", "--a-name", "M0", "--b-name", "DART"])
    expect(doubled.code).toBe(0)
    expect(doubled.stderr).toContain("6 repeated rows skipped: the original's resume appended items again (bug B7)")
    const s2 = JSON.parse(readFileSync(path.join(dir, "runs/ev/evaluation/doubled/summary.json"), "utf8"))
    expect(s2.overall).toEqual(summary.overall)

    const single = dart(dir, ["evaluate", "--exp-id", "ev", "--pred", files[2]!, "--run-name", "single", "--a-name", "DART_H"])
    expect(single.code).toBe(0)
    expect(JSON.parse(readFileSync(path.join(dir, "runs/ev/evaluation/single/summary.json"), "utf8")).overall.DART_H.n).toBe(6)

    // Two policies in one file (the original's --policy both) are refused, naming the line.
    const rows = readFileSync(files[0]!, "utf8").trim().split("\n")
    const mixed = path.join(dir, "mixed.jsonl")
    writeFileSync(mixed, [rows[0], rows[1]!.replace("\"policy_off\"", "\"policy_on\"")].join("\n") + "\n")
    const m = dart(dir, ["evaluate", "--exp-id", "ev", "--pred", mixed, "--run-name", "mixed", "--a-name", "M0"])
    expect(m.code).toBe(1)
    expect(m.stderr).toContain(`${mixed}:2`)
    expect(m.stderr).toContain("--policy both")
    expect(existsSync(path.join(dir, "runs/ev/evaluation/mixed"))).toBe(false)
  })
})

describe("the original's regression pool", () => {
  const pool = path.join(vectors, "audit/regression_pool.jsonl")

  it("becomes dart's pool rows with the original's severities, texts and classifier scores", () => {
    const decode = Schema.decodeUnknownSync(OriginalPoolRow)
    const originals = jsonl(pool)
    expect(originals.length).toBe(2)
    for (const o of originals) {
      const row = poolRowFromOriginal(decode(o))
      expect(row).toMatchObject({
        id: o.sample_id, benchmark: o.meta.benchmark_id, question: o.prompt, gold_label: o.gold_label,
        a_name: "M0", b_name: "DART", a_text: o.paired.A.raw_text, b_text: o.paired.B.raw_text,
        severity: o.severity_bin, source: "judge"
      })
      expect(row.judge).toMatchObject({ is_regression: true, severity: o.severity_bin, reason: o.llm_reason })
      expect((row.scores as any).analysis_only.hate).toEqual({
        a: o.regression.analysis_only.hate.a_score, b: o.regression.analysis_only.hate.b_score, delta: o.regression.analysis_only.hate.delta
      })
    }
    expect(originals.map((o) => o.severity_bin)).toEqual(["severe", "moderate"])
  })

  it("dart teacher --task repair --dry-run plans one request per pool row and warns about test items", () => {
    const dir = project()
    expect(dart(dir, ["init", "--exp-id", "rp"]).code).toBe(0)
    const r = dart(dir, ["teacher", "--task", "repair", "--input", pool, "--allow-foreign-rows", "--dry-run", "--exp-id", "rp"])
    expect(r.stderr).toContain("2 rows written by the original's audit (model/audit.py)")
    expect(r.stderr).toContain("2 of these rows are test-split items (the original audited the test split, bug B3)")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("repair: 2 items, 0 done, 2 to do")
  })
})

describe("dart status on a run the original made", () => {
  it("lists which stages' outputs exist instead of failing on the missing manifest", () => {
    const dir = project()
    const run = path.join(dir, "runs/orig")
    const put = (rel: string, from: string) => {
      mkdirSync(path.dirname(path.join(run, rel)), { recursive: true })
      cpSync(from, path.join(run, rel))
    }
    put("configs/config.snapshot.json", path.join(vectors, "default_config.json"))
    writeFileSync(path.join(run, "configs/meta.snapshot.json"), JSON.stringify({ materialized_at_utc: "20260101T000000Z" }))
    put("datasets/primary/test.jsonl", path.join(vectors, "input_test.jsonl"))
    put("predictions/primary_test_off_M0_vs_DART/outputs.jsonl", path.join(vectors, "paired_resumed/outputs.jsonl"))
    put("audit/audit_M0_vs_DART/regression_pool.jsonl", path.join(vectors, "audit/regression_pool.jsonl"))
    mkdirSync(path.join(run, "adapters/DART/final"), { recursive: true })
    writeFileSync(path.join(run, "adapters/DART/final/adapter_config.json"), "{}")

    const r = dart(dir, ["status", "--exp-id", "orig"])
    expect(r.stderr).not.toContain("error")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("the original Python code")
    expect(r.stdout).toContain("materialized 20260101T000000Z")
    expect(r.stdout).toMatch(/1 datasets\s+datasets\/primary\/test\.jsonl\s+6 rows/)
    expect(r.stdout).toMatch(/3\/7 train\s+adapters\/DART\/final\s+adapter/)
    expect(r.stdout).toMatch(/4\/8 infer\s+predictions\/primary_test_off_M0_vs_DART\/outputs\.jsonl\s+12 rows \(6 repeat an earlier item: the original's resume, bug B7\)/)
    expect(r.stdout).toMatch(/5 audit\s+audit\/audit_M0_vs_DART\/regression_pool\.jsonl\s+2 rows/)
    expect(r.stdout).toContain("not there: ")
    expect(r.stdout).toContain("2 teacher distill: teacher_outputs/distill/outputs.jsonl")

    const j = JSON.parse(dart(dir, ["status", "--exp-id", "orig", "--json"]).stdout)
    expect(j.outputs.map((o: { path: string }) => o.path)).toContain("audit/audit_M0_vs_DART/regression_pool.jsonl")

    // A folder that is neither dart's nor the original's is still "no run".
    mkdirSync(path.join(dir, "runs/empty"))
    const none = dart(dir, ["status", "--exp-id", "empty"])
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("no run \"empty\"")
  })
})
