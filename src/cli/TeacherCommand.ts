import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { teacherStage } from "../pipeline/Stages.ts"
import { loadRunConfig } from "./Root.ts"

export const teacherCommand = Command.make("teacher", {
  task: Flag.Literals("task", ["distill", "repair"]).pipe(Flag.withDescription("distill: rationales for the training items; repair: SAFE rationales for a regression pool")),
  input: Flag.String("input").pipe(Flag.withDescription("regression_pool.jsonl (for --task repair)"), Flag.optional),
  allowForeignRows: Flag.Boolean("allow-foreign-rows").pipe(
    Flag.withDescription(
      "--task repair: also repair pool rows whose id is not an item of this run (a pool made on another run, such as the original's), " +
        "with their own question and label. Rows of this run's items are always checked against its datasets; a test item is never " +
        "repaired unless the run's config sets audit.allow_test_repair"
    ),
    Flag.withDefault(false)
  ),
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("print the requests still needed and their projected tokens and cost; send nothing"), Flag.withDefault(false))
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadRunConfig
    yield* teacherStage(resolved, {
      task: args.task,
      input: Option.getOrUndefined(args.input),
      dryRun: args.dryRun,
      allowForeignRows: args.allowForeignRows
    })
  })).pipe(
    Command.withDescription(
      "Steps 2 and 6: teacher rationales over an OpenAI-compatible API (DeepSeek by default), with correction rounds, " +
        "a durable response ledger (a rerun never pays twice), budget caps and progress. Exit 3: budget reached; 4: items failed (rerun retries them)."
    ),
    Command.withExamples([
      { command: "dart teacher --task distill --dry-run", description: "what the distill stage would still cost" },
      { command: "dart teacher --task repair --input runs/demo/audit/audit_M0_vs_DART/regression_pool.jsonl", description: "SAFE rationales for the regression pool" }
    ])
  )
