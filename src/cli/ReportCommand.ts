import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { ConfigLoader } from "../config/ConfigLoader.ts"
import { writeRunReport } from "../report/RunReport.ts"
import { root } from "./Root.ts"

export const reportCommand = Command.make("report", {
  runsDir: Flag.String("runs-dir").pipe(
    Flag.withDescription("folder that holds the run (same as --override run.runs_dir=D)"),
    Flag.optional
  ),
  out: Flag.String("out").pipe(
    Flag.withDescription("write the page to FILE instead of runs/{EXP_ID}/report.html"),
    Flag.optional
  )
}, (args) =>
  Effect.gen(function*() {
    const flags = yield* root
    const loader = yield* ConfigLoader
    const resolved = yield* loader.loadForRun({
      configPath: Option.getOrUndefined(flags.config),
      overrides: [...flags.override, ...Option.toArray(args.runsDir).map((d) => `run.runs_dir=${d}`)],
      expId: flags.expId
    })
    const file = yield* writeRunReport(resolved.config, { out: Option.getOrUndefined(args.out) })
    yield* Console.log(`report: ${file}`)
  })).pipe(
    Command.withDescription(
      "One offline HTML page for the whole run, from whatever its folder holds now: plan and stage timings, the teacher, training curves, " +
        "the audits, M0/DART/DART_H with CIs, and a filterable browser of the audited pairs (a partial run gives a partial report). " +
        "`dart run` writes it at the end."
    ),
    Command.withExamples([{ command: "dart report --exp-id demo", description: "writes runs/demo/report.html" }])
  )
