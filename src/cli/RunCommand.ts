import { Effect, Option } from "effect"
import * as path from "node:path"
import { Command, Flag } from "effect/cli"
import { GraphSelectionError, parseStageId, stageIds } from "../pipeline/RunGraph.ts"
import { pipelineDrivers, runPipeline, SelectionError } from "../pipeline/RunPipeline.ts"
import { computeProbes } from "../pipeline/Preflight.ts"
import { Compute } from "../compute/Compute.ts"
import { withCompute } from "./WithCompute.ts"
import { loadConfig } from "./Root.ts"

const stage = (name: string, description: string) =>
  Flag.String(name).pipe(Flag.withDescription(`${description} (${stageIds.join(", ")})`), Flag.optional)

export const runCommand = Command.make("run", {
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("print the plan and the checks, start nothing"), Flag.withDefault(false)),
  from: stage("from", "start at this stage (re-entered even when done; earlier stages must be done)"),
  until: stage("until", "stop after this stage")
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadConfig
    const selection = yield* Effect.try({
      try: () => ({
        from: Option.getOrUndefined(Option.map(args.from, (s) => parseStageId("--from", s))),
        until: Option.getOrUndefined(Option.map(args.until, (s) => parseStageId("--until", s)))
      }),
      catch: (e) => new SelectionError({ message: e instanceof GraphSelectionError ? e.message : String(e) })
    })
    const runDir = path.join(resolved.config.run.runs_dir, resolved.config.run.exp_id)
    // One compute for the whole run: every stage, the preflight and the plan share its hosts and placement.
    yield* withCompute(resolved.config, Effect.scoped(Effect.gen(function*() {
      const drivers = yield* pipelineDrivers(resolved, runDir)
      return yield* runPipeline(resolved, { dryRun: args.dryRun, selection }, drivers, computeProbes(yield* Compute))
    })))
  })).pipe(
    Command.withDescription(
      "Steps 1-9 in order, resumable: shows the plan (stages to run or skip and why, items, teacher and judge requests with projected " +
        "tokens and cost, containers per host) and the checks (API keys, hosts, images, GPUs), then runs what the stage ledger says is " +
        "not done. Exit 5: a prerequisite is missing (nothing started); 3 and 4 as for dart teacher."
    ),
    Command.withExamples([
      { command: "dart run --dry-run", description: "the plan and the checks for configs/exp_acl.json" },
      { command: "dart run --config configs/smoke.json", description: "the smoke run end to end" },
      { command: "dart run --from repair --until train_dart_h", description: "repair and train DART_H again" }
    ])
  )
