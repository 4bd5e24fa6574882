import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { type Arm, parseModels } from "../inference/InferencePlan.ts"
import { InferStageError } from "../pipeline/InferStage.ts"
import * as path from "node:path"
import { inferStage } from "../pipeline/Stages.ts"
import { withCompute } from "./WithCompute.ts"
import { builtinTasks } from "../tasks/Tasks.ts"
import { findTask } from "../tasks/Task.ts"
import { loadRunConfig } from "./Root.ts"

const opt = <A>(o: Option.Option<A>) => Option.getOrUndefined(o)

/** The arms from whichever of the three forms was used: --models, --paired A/B, or one --model-id. */
const armsOf = (a: {
  models: Option.Option<string>
  paired: boolean
  modelAId: Option.Option<string>
  modelAAdapter: Option.Option<string>
  modelBId: Option.Option<string>
  modelBAdapter: Option.Option<string>
  modelId: Option.Option<string>
  modelAdapter: Option.Option<string>
}): Array<Arm> | string => {
  const arm = (id: string, adapter: string | undefined) => (adapter === undefined ? id : `${id}=${adapter}`)
  if (Option.isSome(a.models)) {
    if (a.paired || Option.isSome(a.modelId)) return "--models cannot be combined with --paired or --model-id"
    return parseModels(a.models.value)
  }
  if (a.paired) {
    if (Option.isNone(a.modelAId) || Option.isNone(a.modelBId)) return "--paired needs --model-a-id and --model-b-id"
    return parseModels([arm(a.modelAId.value, opt(a.modelAAdapter)), arm(a.modelBId.value, opt(a.modelBAdapter))].join(","))
  }
  if (Option.isSome(a.modelId)) return parseModels(arm(a.modelId.value, opt(a.modelAdapter)))
  return "give the models: --paired --model-a-id M0 --model-b-id DART --model-b-adapter DIR, --models M0,DART=DIR,..., or --model-id M0"
}

export const inferCommand = Command.make("infer", {
  runName: Flag.String("run-name").pipe(Flag.withDescription("outputs go to runs/{EXP_ID}/predictions/{RUN}/")),
  paired: Flag.Boolean("paired").pipe(Flag.withDescription("two models, A and B, on the same items"), Flag.withDefault(false)),
  modelAId: Flag.String("model-a-id").pipe(Flag.withDescription("name of model A (e.g. M0)"), Flag.optional),
  modelAAdapter: Flag.String("model-a-adapter").pipe(Flag.withDescription("adapter folder of A (none = the base model)"), Flag.optional),
  modelBId: Flag.String("model-b-id").pipe(Flag.withDescription("name of model B (e.g. DART)"), Flag.optional),
  modelBAdapter: Flag.String("model-b-adapter").pipe(Flag.withDescription("adapter folder of B, e.g. runs/$EXP_ID/adapters/DART/final"), Flag.optional),
  modelId: Flag.String("model-id").pipe(Flag.withDescription("single-model mode: the model's name"), Flag.optional),
  modelAdapter: Flag.String("model-adapter").pipe(Flag.withDescription("single-model mode: its adapter folder"), Flag.optional),
  models: Flag.String("models").pipe(Flag.withDescription("several models in one pass: M0,DART=DIR,DART_H=DIR (a bare name is the base model)"), Flag.optional),
  task: Flag.Literals("task", builtinTasks.map((t) => t.name)).pipe(
    Flag.withDescription(`what the models answer: ${builtinTasks.map((t) => `${t.name}: ${t.description}`).join("; ")} (default dart)`),
    Flag.withDefault("dart")
  ),
  suite: Flag.String("suite").pipe(
    Flag.withDescription("task continuation: external (every suite `dart init` exported, the default) or suite names, e.g. BOLD,HateCheck"),
    Flag.optional
  ),
  policy: Flag.String("policy").pipe(Flag.withDescription("dart, continuation, open_ended: a key of inference.policies (off, on, custom); mc: sys0…sys7 (not sys4) or a custom key"), Flag.optional),
  split: Flag.Literals("split", ["train", "val", "test"]).pipe(Flag.withDescription("items to run (audits: val, the default; evaluations: test)"), Flag.withDefault("val" as const)),
  limit: Flag.Int("limit").pipe(Flag.withDescription("only the first N items of the split (continuation: of each suite; open_ended: of the set)"), Flag.optional),
  benchmarks: Flag.String("benchmarks").pipe(Flag.withDescription("only these benchmarks, e.g. D1,N2"), Flag.optional),
  constrained: Flag.Boolean("constrained").pipe(Flag.withDescription("constrain answers with vLLM structured_outputs (mc: one of (a)/(b)/(c); dart: sentences then a conclusion line)"), Flag.withDefault(false))
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadRunConfig
    const arms = armsOf(args)
    if (typeof arms === "string") return yield* new InferStageError({ message: arms })
    const limit = opt(args.limit)
    if (limit !== undefined && limit <= 0) return yield* new InferStageError({ message: "--limit must be a positive number" })
    const task = findTask(builtinTasks, args.task)!
    const policy = opt(args.policy) ?? task.defaultPolicy(resolved.config)
    const suiteFlag = opt(args.suite)?.split(",").map((s) => s.trim()).filter((s) => s !== "")
    if (suiteFlag !== undefined && args.task !== "continuation") return yield* new InferStageError({ message: "--suite is for --task continuation" })
    const suites = suiteFlag === undefined || (suiteFlag.length === 1 && suiteFlag[0] === "external") ? undefined : suiteFlag
    const runDir = path.join(resolved.config.run.runs_dir, resolved.config.run.exp_id)
    // The configured endpoints, or a vLLM container started for this command and removed after it.
    yield* withCompute(resolved.config, inferStage(resolved, {
        runName: args.runName,
        arms,
        task: args.task,
        suites,
        policy,
        split: args.split,
        limit,
        benchmarks: opt(args.benchmarks)?.split(",").map((s) => s.trim()).filter((s) => s !== ""),
        constrained: args.constrained || resolved.config.inference.constrained
      }, runDir))
  })).pipe(
    Command.withDescription(
      "Steps 4 and 8: inference on vLLM (compute.vllm.endpoint / endpoints, or else vLLM replicas over compute.hosts) with LoRA adapters loaded at run time: paired, " +
        "single or several adapters beside the base in one pass; resumable per (item, model, policy, sample)."
    ),
    Command.withExamples([
      { command: "dart infer --paired --policy off --model-a-id M0 --model-b-id DART --model-b-adapter runs/demo/adapters/DART/final --run-name primary_val_off_M0_vs_DART", description: "step 4" },
      { command: "dart infer --models M0,DART=runs/demo/adapters/DART/final,DART_H=runs/demo/adapters/DART_H/final --split test --run-name test_all", description: "three models in one pass" },
      { command: "dart infer --task continuation --suite external --models M0,DART=runs/demo/adapters/DART/final --run-name external_M0_DART", description: "the external harm suites" }
    ])
  )
