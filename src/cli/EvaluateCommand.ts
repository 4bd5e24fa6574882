import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { evaluateStage } from "../pipeline/Stages.ts"
import { loadRunConfig } from "./Root.ts"

export const evaluateCommand = Command.make("evaluate", {
  pred: Flag.String("pred").pipe(Flag.withDescription("prediction rows (JSONL; `task` dart or mc decides the view)")),
  runName: Flag.String("run-name").pipe(Flag.withDescription("name of this evaluation: outputs go to runs/{EXP_ID}/evaluation/{RUN}/")),
  aName: Flag.String("a-name").pipe(Flag.withDescription("model A (the baseline, e.g. M0)")),
  bName: Flag.String("b-name").pipe(Flag.withDescription("model B, compared with A on the same items"), Flag.optional),
  audit: Flag.String("audit").pipe(
    Flag.withDescription("audit summary.json (repeatable; the first is the baseline for harm-drift change)"),
    Flag.atLeast(0)
  ),
  force: Flag.Boolean("force").pipe(Flag.withDescription("replace an earlier evaluation of this --run-name made from different inputs"), Flag.withDefault(false)),
  allowForeignRows: Flag.Boolean("allow-foreign-rows").pipe(
    Flag.withDescription(
      "also count prediction rows whose id is not an item of this run (predictions made on another run); without it such a row " +
        "is refused with its file and line. Rows the original's inference wrote carry its own ids: they are always counted, with a note"
    ),
    Flag.withDefault(false)
  )
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadRunConfig
    yield* evaluateStage(resolved, {
      predFile: args.pred,
      runName: args.runName,
      aName: args.aName,
      bName: Option.getOrUndefined(args.bName),
      audits: args.audit,
      force: args.force,
      allowForeignRows: args.allowForeignRows
    })
  })).pipe(
    Command.withDescription(
      "Step 9: decision metrics (or the suite's DiffAware/CtxtAware), paired tests, harm-drift change, tables (md, tex, csv) and an offline HTML report."
    ),
    Command.withExamples([{
      command: "dart evaluate --pred runs/demo/predictions/primary_test_off_M0_vs_DART_H/outputs.jsonl --run-name eval_main --a-name M0 --b-name DART_H",
      description: "the paper's main comparison"
    }])
  )
