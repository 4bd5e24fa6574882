import { NodeServices } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { readFileSync } from "node:fs"
import { ConfigError, ConfigLoader, ConfigUsageError, resolveConfig } from "../../src/config/ConfigLoader.ts"
import { parseOverride } from "../../src/config/Overrides.ts"

const resolve = (text: string, overrides: ReadonlyArray<string> = [], env?: string, flag?: string) =>
  resolveConfig("cfg.json", text, overrides, env, flag)

const ok = (r: ReturnType<typeof resolve>) => {
  if (r instanceof ConfigError || r instanceof ConfigUsageError) throw new Error(r.message)
  return r
}
const err = (r: ReturnType<typeof resolve>) => {
  if (!(r instanceof ConfigError)) throw new Error("expected a ConfigError")
  return r.message
}

describe("experiment config", () => {
  it("carries the paper's setup in configs/exp_acl.json", () => {
    const { config } = ok(resolve(readFileSync("configs/exp_acl.json", "utf8")))
    expect(config.model).toMatchObject({ base: "meta-llama/Llama-3.1-8B-Instruct", dtype: "bfloat16" })
    expect(config.teacher).toMatchObject({ provider: "deepseek", model: "deepseek-chat", max_concurrency: 16 })
    expect(config.training).toMatchObject({ epochs: 3, learning_rate: 2e-4, per_device_batch_size: 4, gradient_accumulation_steps: 8, max_length: 1024 })
    expect(config.training.lora).toMatchObject({ r: 16, alpha: 32, dropout: 0.05, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"] })
    expect(config.inference).toMatchObject({ temperature: 0.2, top_p: 0.9, top_k: null, max_tokens: 256, seed: 42 })
    expect(config.audit.classifiers.map((c) => c.label)).toEqual(["toxic", "hate"])
  })

  it("fills every omitted key from the defaults and hashes the resolved config", () => {
    const a = ok(resolve("{}"))
    const b = ok(resolve(`{"training": {"epochs": 3}}`))
    expect(a.config.training.warmup_ratio).toBe(0.03)
    expect(a.hash).toBe(b.hash)
    expect(ok(resolve(`{"training": {"epochs": 4}}`)).hash).not.toBe(a.hash)
  })

  it("applies overrides as JSON when they parse, else as strings, in order", () => {
    const r = ok(resolve("{}", ["training.epochs=5", "model.base=/models/llama", "training.lora.target_modules=[\"q_proj\"]", "training.epochs=6"]))
    expect(r.config.training.epochs).toBe(6)
    expect(r.config.model.base).toBe("/models/llama")
    expect(r.config.training.lora.target_modules).toEqual(["q_proj"])
  })

  it("takes the exp id from the file, then EXP_ID, then overrides, then --exp-id", () => {
    expect(ok(resolve(`{"run": {"exp_id": "file"}}`)).config.run.exp_id).toBe("file")
    expect(ok(resolve(`{"run": {"exp_id": "file"}}`, [], "env")).config.run.exp_id).toBe("env")
    expect(ok(resolve("{}", ["run.exp_id=ovr"], "env")).config.run.exp_id).toBe("ovr")
    expect(ok(resolve("{}", ["run.exp_id=ovr"], "env", "flag")).config.run.exp_id).toBe("flag")
  })

  it("names an unknown key with its path and the nearest valid key", () => {
    expect(err(resolve(`{"training": {"epocs": 3}}`))).toContain(`training.epocs: unknown key (did you mean "epochs"?)  [from cfg.json]`)
    expect(err(resolve(`{"trainer": {}}`))).toContain(`trainer: unknown key (did you mean "training"?)`)
    expect(err(resolve("{}", ["training.lora.rnak=8"]))).toContain("training.lora.rnak: unknown key (allowed here: r, alpha, dropout")
  })

  it("names a wrong type with its path, the expectation and the value", () => {
    const message = err(resolve(`{"training": {"epochs": "three", "lora": {"r": 0}}}`))
    expect(message).toContain(`training.epochs: expected number, got "three"`)
    expect(message).toContain("training.lora.r: expected a value greater than 0, got 0")
  })

  it("rejects an unknown benchmark name", () => {
    expect(err(resolve(`{"datasets": {"benchmarks": ["D1", "X9"]}}`))).toContain(`datasets.benchmarks[1]: expected "D1" | "D2"`)
  })

  it("says where malformed JSON breaks", () => {
    expect(err(resolve(`{\n "run": {\n  "seed": 1,\n }\n}`))).toMatch(/^cfg\.json: malformed JSON at line 4, column 2/)
    expect(err(resolve("[1, 2]"))).toContain("expected a JSON object")
  })

  it("attributes an error to the override that caused it", () => {
    expect(err(resolve("{}", ["training.epochs=\"x\""]))).toContain(`[from --override training.epochs="x"]`)
    expect(err(resolve("{}", [], undefined, "bad id!"))).toContain("[from --exp-id bad id!]")
  })

  it("rejects malformed overrides", () => {
    expect(parseOverride("training.epochs")).toMatch(/malformed --override "training.epochs": expected key.path=value/)
    expect(parseOverride("=3")).toMatch(/malformed/)
    expect(parseOverride("a..b=3")).toMatch(/not a dotted key path/)
    expect(parseOverride("a.b=")).toEqual({ raw: "a.b=", path: ["a", "b"], value: "" })
  })

  it("checks cross-field rules", () => {
    expect(err(resolve(`{"datasets": {"split": {"train": 0.9}}}`))).toContain("train + val + test must add up to 1")
    expect(err(resolve(`{"training": {"lora": {"r": 128}}}`))).toContain("lora.r 128 is above max_lora_rank 64")
    // vLLM refuses any other --max-lora-rank at start-up: say so at config time.
    expect(err(resolve(`{"training": {"max_lora_rank": 24}}`))).toMatch(/training\.max_lora_rank[\s\S]*24/)
    expect(err(resolve(`{"inference": {"policy": "strict"}}`))).toContain(`policy "strict" is not a key of inference.policies`)
    expect(err(resolve(`{"teacher": {"base_url": "https://user:pw@api.example/v1"}}`))).toContain("must not carry credentials")
  })

  it.effect("reads the file through the layer and names a missing one", () =>
    Effect.gen(function*() {
      const loader = yield* ConfigLoader
      const good = yield* loader.load({ configPath: "configs/smoke.json", overrides: [], expId: Option.some("t") })
      expect(good.config.datasets.benchmarks).toEqual(["D1", "N2"])
      const missing = yield* loader.load({ configPath: "configs/nope.json", overrides: [], expId: Option.none() }).pipe(Effect.flip)
      expect(missing.message).toBe("configs/nope.json: cannot read config file (no such file)")
    }).pipe(Effect.provide(ConfigLoader.layer), Effect.provide(NodeServices.layer)))
})
