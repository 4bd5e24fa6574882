import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { runInit } from "../pipeline/InitStage.ts"
import { loadConfig } from "./Root.ts"

export const initCommand = Command.make("init", {}, () =>
  Effect.gen(function*() {
    const resolved = yield* loadConfig
    const result = yield* runInit(resolved)
    const total = result.totals.train + result.totals.val + result.totals.test
    yield* Console.log(
      result.upToDate
        ? `${result.dir} is up to date (${total} items; nothing written)`
        : `initialized ${result.dir}: ${total} items (train ${result.totals.train}, val ${result.totals.val}, test ${result.totals.test})`
    )
  })).pipe(
    Command.withDescription(
      "Step 1: create runs/{EXP_ID}/, snapshot the resolved config (no secrets) and export the benchmark items split into train/val/test."
    ),
    Command.withExamples([
      { command: "dart init --exp-id demo", description: "the paper's setup under runs/demo" },
      { command: "dart init --config configs/smoke.json --override datasets.split.strategy=upstream", description: "a quick run with the original item-level split" }
    ])
  )
