import { describe, expect, it } from "@effect/vitest"
import { buildRunGraph, GraphSelectionError, parseStageId, planGraph, type StageId, type StageState, stageIds } from "../../src/pipeline/RunGraph.ts"
import { configFor } from "../support/RunConfig.ts"


const config = configFor("configs/exp_acl.json")
const graph = buildRunGraph(config)

const done = (keys: ReadonlyArray<string>): StageState => ({ records: Object.fromEntries(keys.map((k) => [k, { status: "done", error: null }])), changedOutputs: [] })
const allDone = (): Partial<Record<StageId, StageState>> => Object.fromEntries(graph.stages.map((s) => [s.id, done(s.ledgerKeys)]))
const decisions = (states: Partial<Record<StageId, StageState>>, selection = {}) =>
  Object.fromEntries(planGraph(graph, states, selection).map((p) => [p.stage.id, p.decision.action]))

describe("the stage graph", () => {
  it("runs the issue's stages in order, each with the request its CLI step would send", () => {
    expect(graph.stages.map((s) => s.id)).toEqual([...stageIds])
    const byId = Object.fromEntries(graph.stages.map((s) => [s.id, s]))
    expect(byId.train_dart!.work).toMatchObject({ kind: "train", request: { stage: "dart", adapterName: "DART", recipe: "distill", initAdapter: null } })
    // Repair audits val by default, so no test item is ever repaired (docs/protocol.md §9 B3).
    expect(byId.infer_audit!.work).toMatchObject({ kind: "infer", request: { split: "val", policy: "off", models: [{ id: "M0", adapter: null }, { id: "DART", adapter: "adapters/DART/final" }] } })
    expect(byId.audit!.work).toMatchObject({ kind: "audit", request: { split: "val", feedsRepair: true, pairedInput: "predictions/primary_val_off_M0_vs_DART/outputs.jsonl" } })
    expect(byId.repair!.work).toMatchObject({ kind: "teacher", request: { task: "repair", input: "audit/audit_val_M0_vs_DART/regression_pool.jsonl" } })
    expect(byId.train_dart_h!.work).toMatchObject({
      kind: "train",
      request: { stage: "dart_h", adapterName: "DART_H", recipe: "mix", initAdapter: "adapters/DART/final", weights: { mild: 1, moderate: 2, severe: 3, extreme: 4 }, epochs: 3 }
    })
    expect(byId.train_dart_h!.command).toContain("--repair-oversample mild=1,moderate=2,severe=3,extreme=4 --epochs 3")
    // One test pass for all three models, and both test audits read it.
    const test = byId.infer_test!.work
    expect(test.kind === "infer" && test.request.models.map((m) => m.id)).toEqual(["M0", "DART", "DART_H"])
    expect(test.kind === "infer" && test.request.split).toBe("test")
    for (const [id, b] of [["audit_test_dart", "DART"], ["audit_test_dart_h", "DART_H"]] as const) {
      expect(byId[id]!.work).toMatchObject({ kind: "audit", request: { aName: "M0", bName: b, split: "test", feedsRepair: false, pairedInput: "predictions/primary_test_off_M0_DART_DART_H/outputs.jsonl" } })
    }
    const evaluate = byId.evaluate!.work
    expect(evaluate.kind).toBe("evaluate")
    if (evaluate.kind === "evaluate") {
      expect(evaluate.requests.map((r) => [r.runName, r.aName, r.bName])).toEqual([["eval_M0_vs_DART", "M0", "DART"], ["eval_main", "M0", "DART_H"]])
      // Both audits on the same test pairs, DART's first: the reduction is DART -> DART_H.
      expect(evaluate.requests[1]!.audits).toEqual(["audit/audit_test_M0_vs_DART/summary.json", "audit/audit_test_M0_vs_DART_H/summary.json"])
    }
    expect(graph.warnings).toEqual([])
    // Every stage reads only what earlier stages produce.
    graph.stages.forEach((s, i) => {
      for (const n of s.needs) expect(graph.stages.findIndex((x) => x.id === n), `${s.id} needs ${n}`).toBeLessThan(i)
    })
  })

  it("reproduces the original's order (audit on test) with audit.split test, and warns that test items get repaired", () => {
    const original = buildRunGraph(configFor("configs/exp_acl.json", ["audit.split=test"]))
    const audit = original.stages.find((s) => s.id === "audit")!
    expect(audit.work).toMatchObject({ kind: "audit", request: { split: "test", runName: "audit_test_M0_vs_DART" } })
    expect(original.stages.find((s) => s.id === "infer_audit")!.work).toMatchObject({ request: { split: "test", runName: "primary_test_off_M0_vs_DART" } })
    expect(original.warnings).toHaveLength(1)
    expect(original.warnings[0]).toContain("TEST items")
  })
})

describe("ledger decisions", () => {
  it("runs everything on a fresh run and skips everything on a finished one", () => {
    expect(Object.values(decisions({}))).toEqual(stageIds.map(() => "run"))
    expect(Object.values(decisions(allDone()))).toEqual(stageIds.map(() => "skip"))
  })

  it("resumes a failed, stopped or interrupted stage and lets the stages after it re-check their inputs", () => {
    for (const [status, reason] of [["failed", "failed last time (boom)"], ["stopped", "stopped (boom)"], ["running", "interrupted"]] as const) {
      const states = { ...allDone(), repair: { records: { "teacher/repair": { status, error: "boom" } }, changedOutputs: [] } }
      const plan = planGraph(graph, states)
      const at = Object.fromEntries(plan.map((p) => [p.stage.id, p.decision]))
      expect(at.repair!.action).toBe("resume")
      expect(at.repair!.reason).toContain(reason)
      for (const id of ["init", "distill", "train_dart", "infer_audit", "audit"]) expect(at[id]!.action, id).toBe("skip")
      for (const id of ["train_dart_h", "infer_test", "audit_test_dart", "audit_test_dart_h", "evaluate"]) expect(at[id]!.action, id).toBe("check")
      expect(at.train_dart_h!.reason).toContain("repair runs first")
    }
  })

  it("reruns a done stage whose outputs changed, and resumes a stage with only some ledger entries done", () => {
    const states = { ...allDone(), train_dart: { ...done(["train/DART"]), changedOutputs: ["adapters/DART/final/adapter_model.safetensors"] } }
    const plan = planGraph(graph, states)
    expect(plan.find((p) => p.stage.id === "train_dart")!.decision).toEqual({ action: "run", reason: "outputs changed or missing since it finished: adapters/DART/final/adapter_model.safetensors" })
    // The audit does not read the DART adapter directly; its inference does.
    expect(plan.find((p) => p.stage.id === "infer_audit")!.decision.action).toBe("check")
    const partial = planGraph(graph, { ...allDone(), evaluate: done(["evaluate/eval_M0_vs_DART"]) })
    expect(partial.find((p) => p.stage.id === "evaluate")!.decision).toEqual({ action: "resume", reason: "part done; not run yet: evaluate/eval_main" })
  })

  it("honours --from and --until", () => {
    const from = decisions(allDone(), { from: "repair" })
    expect(from).toMatchObject({ init: "excluded", audit: "excluded", repair: "check", train_dart_h: "check", evaluate: "check" })
    const until = decisions({}, { until: "train_dart" })
    expect(until).toMatchObject({ init: "run", distill: "run", train_dart: "run", infer_audit: "excluded", evaluate: "excluded" })
    expect(() => planGraph(graph, { init: done(["init"]) }, { from: "repair" })).toThrow(/earlier stage distill is not done: never ran/)
    expect(() => planGraph(graph, allDone(), { from: "evaluate", until: "init" })).toThrow(GraphSelectionError)
    expect(() => parseStageId("--from", "teach")).toThrow(/--from teach: unknown stage; stages are init, distill/)
  })

  it("adds the out-of-distribution stages after the evaluation, each a CLI step with the three models, and only what the config asks for", () => {
    const byId = Object.fromEntries(graph.stages.map((s) => [s.id, s]))
    const tail = graph.stages.slice(graph.stages.findIndex((s) => s.id === "evaluate") + 1).map((s) => s.id)
    expect(tail).toEqual(["infer_external", "infer_open_ended", "audit_external", "audit_open_ended", "evaluate_ood"])
    expect(byId.infer_external!.command).toBe(
      "dart infer --task continuation --suite external --policy off --models M0,DART=adapters/DART/final,DART_H=adapters/DART_H/final --run-name external_M0_DART_DART_H"
    )
    expect(byId.infer_external!.work).toMatchObject({ kind: "infer", request: { task: "continuation", models: [{ id: "M0" }, { id: "DART" }, { id: "DART_H" }] } })
    expect(byId.infer_open_ended!.work).toMatchObject({ kind: "infer", request: { task: "open_ended", runName: "open_ended_M0_DART_DART_H" } })
    // Scored answer by answer: the audit's command has no --a-name/--b-name.
    expect(byId.audit_external!.command).toBe("dart audit --paired-input predictions/external_M0_DART_DART_H/outputs.jsonl --run-name audit_external_M0_DART_DART_H")
    expect(byId.audit_external!.work).toMatchObject({ kind: "audit", request: { task: "continuation", feedsRepair: false } })
    expect(byId.evaluate_ood!.ledgerKeys).toEqual(["evaluate/eval_external_M0_DART_DART_H", "evaluate/eval_open_ended_M0_DART_DART_H"])
    expect(byId.evaluate_ood!.needs).toEqual(["audit_external", "audit_open_ended"])

    const ids = (overrides: ReadonlyArray<string>) => buildRunGraph(configFor("configs/exp_acl.json", overrides)).stages.map((s) => s.id)
    expect(ids(["ood.enabled=false"]).at(-1)).toBe("evaluate")
    expect(ids(["ood.open_ended.file=null"]).slice(-3)).toEqual(["infer_external", "audit_external", "evaluate_ood"])
    expect(ids(["datasets.external.suites=[]"]).slice(-3)).toEqual(["infer_open_ended", "audit_open_ended", "evaluate_ood"])
    expect(ids(["datasets.external.suites=[]", "ood.open_ended.file=null"]).at(-1)).toBe("evaluate")
  })
})
