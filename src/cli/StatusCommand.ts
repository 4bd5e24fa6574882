import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import * as path from "node:path"
import { explainOriginalRun, formatOriginalRun } from "../compat/OriginalRun.ts"
import { NoSuchRunError, RunStore } from "../runs/RunStore.ts"
import { loadConfig } from "./Root.ts"

export const statusCommand = Command.make("status", {
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the manifest as JSON"), Flag.withDefault(false))
}, ({ json }) =>
  Effect.gen(function*() {
    const { config } = yield* loadConfig
    const store = yield* RunStore
    // A runs/{EXP_ID}/ made by the original Python code has no manifest: say what its stages left.
    const original = yield* explainOriginalRun(path.resolve(config.run.runs_dir, config.run.exp_id))
    if (original !== undefined) return yield* Console.log(json ? JSON.stringify(original, null, 2) : formatOriginalRun(original))
    const run = yield* store.requireRun(config.run.runs_dir, config.run.exp_id)
    const manifest = yield* store.readManifest(run)
    if (manifest === undefined) return yield* new NoSuchRunError({ message: `${run.dir}: manifest.json vanished` })
    if (json) return yield* Console.log(JSON.stringify(manifest, null, 2))
    const lines = [
      `run        ${manifest.exp_id}  (${run.dir})`,
      `created    ${manifest.created_at} by dart ${manifest.tool_version}${manifest.git_commit ? ` @ ${manifest.git_commit.slice(0, 12)}` : ""}, node ${manifest.node_version}`,
      `config     ${manifest.config_hash.slice(0, 16)}`,
      "",
      `${"stage".padEnd(16)}${"status".padEnd(10)}${"runs".padStart(5)}  ${"finished".padEnd(25)}outputs`
    ]
    const stages = Object.entries(manifest.stages)
    if (stages.length === 0) lines.push("(no stage has run yet)")
    for (const [name, s] of stages) {
      lines.push(`${name.padEnd(16)}${s.status.padEnd(10)}${String(s.runs).padStart(5)}  ${(s.finished_at ?? "-").padEnd(25)}${s.outputs.length}${s.error ? `  error: ${s.error}` : ""}`)
    }
    yield* Console.log(lines.join("\n"))
  })).pipe(Command.withDescription("Show a run's stage ledger: what ran, when, with which inputs, and what it wrote."))
