import { describe, expect, it } from "@effect/vitest"
import { flattenParams, fitValue, MAX_KEY, MAX_PARAM_VALUE, safeKey, TRUNCATED_MARKER } from "../../src/tracking/TrackingParams.ts"
import { resolvedFor } from "../support/RunConfig.ts"

describe("flattenParams", () => {
  it("gives one param per leaf, a list of plain values as JSON, a list of objects by index", () => {
    const params = flattenParams({
      run: { exp_id: "smoke", seed: 42 },
      training: { lora: { target_modules: ["q_proj", "v_proj"], r: 8 }, qlora: { enabled: false } },
      datasets: { benchmarks: null, limits: {} },
      audit: { classifiers: [{ name: "toxicity", id2label: { "0": "neutral" } }], views: [] },
      inference: { policies: { off: "" } }
    })
    expect(params).toEqual([
      { key: "run.exp_id", value: "smoke" },
      { key: "run.seed", value: "42" },
      { key: "training.lora.target_modules", value: "[\"q_proj\",\"v_proj\"]" },
      { key: "training.lora.r", value: "8" },
      { key: "training.qlora.enabled", value: "false" },
      { key: "datasets.benchmarks", value: "null" },
      { key: "datasets.limits", value: "{}" },
      { key: "audit.classifiers.0.name", value: "toxicity" },
      { key: "audit.classifiers.0.id2label.0", value: "neutral" },
      { key: "audit.views", value: "[]" },
      { key: "inference.policies.off", value: "" }
    ])
  })

  it("cuts a value over MLflow's 500 characters with a marker naming the config artifact", () => {
    const long = "x".repeat(2000)
    const [p] = flattenParams({ inference: { policies: { on: long } } })
    expect(p!.value.length).toBe(MAX_PARAM_VALUE)
    expect(p!.value.endsWith(TRUNCATED_MARKER)).toBe(true)
    expect(p!.value).toContain("config/config.json")
    expect(fitValue("short")).toBe("short")
    expect(fitValue("y".repeat(MAX_PARAM_VALUE))).toBe("y".repeat(MAX_PARAM_VALUE))
  })

  it("makes names MLflow accepts, and keeps two names that clean to the same one apart", () => {
    expect(safeKey("inference.policies.my[policy]")).toBe("inference.policies.my_policy_")
    expect(safeKey("a..b/../c")).toBe("a__b/__/c")
    expect(safeKey("k".repeat(400)).length).toBe(MAX_KEY)
    const params = flattenParams({ p: { "a[1]": "x", "a(1)": "y" } })
    expect(params.map((p) => p.key)).toEqual(["p.a_1_", "p.a_1__2"])
  })

  it("flattens a whole resolved config (configs/smoke.json) into unique, valid, fitting params", () => {
    const resolved = resolvedFor("configs/smoke.json", ["tracking.mlflow.uri=http://127.0.0.1:5000"])
    const params = flattenParams(resolved.json)
    expect(params.length).toBeGreaterThan(100)
    expect(new Set(params.map((p) => p.key)).size).toBe(params.length)
    for (const p of params) {
      expect(p.key).toMatch(/^[/\w.\- :]+$/)
      expect(p.key.length).toBeLessThanOrEqual(MAX_KEY)
      expect(p.value.length).toBeLessThanOrEqual(MAX_PARAM_VALUE)
    }
    const byKey = new Map(params.map((p) => [p.key, p.value]))
    expect(byKey.get("run.exp_id")).toBe("smoke")
    expect(byKey.get("tracking.mlflow.uri")).toBe("http://127.0.0.1:5000")
    expect(byKey.get("tracking.mlflow.token_env")).toBe("MLFLOW_TRACKING_TOKEN")
    expect(byKey.get("training.lora.r")).toBe(String(resolved.config.training.lora.r))
  })
})
