import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import * as path from "node:path"
import { explainOriginalRun, formatOriginalRun } from "../compat/OriginalRun.ts"
import * as fs from "node:fs/promises"
import { sha256File } from "../common/Hashing.ts"
import type { StageRecord } from "../runs/Manifest.ts"
import { listRunLinks } from "../runs/RunLinks.ts"
import { liveHolder } from "../runs/RunLock.ts"
import { NoSuchRunError, type RunHandle, RunStore } from "../runs/RunStore.ts"
import { ioError } from "../runs/RunStoreError.ts"
import { loadConfig } from "./Root.ts"

/** `dart status --verify` found recorded outputs missing or changed, or symbolic links inside the run (exit 1). */
export class RunDamagedError extends Schema.TaggedError<RunDamagedError>()("RunDamagedError", { message: Schema.String }) {}

/** What a stage really is now: the ledger's word, checked against the lock owner and the files on disk. */
export interface StageCheck {
  readonly status: string
  readonly holder: string | null
  readonly problems: ReadonlyArray<string>
}

/**
 * `running` only while the lock's owner lives (a SIGKILLed stage shows `interrupted`); a stage
 * whose recorded outputs are missing or changed shows `changed`. Sizes are always compared;
 * `full` also compares sha256 (slow on large files).
 */
export const checkStage = (run: RunHandle, name: string, record: StageRecord, full: boolean) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    let status: string = record.status
    let holder: string | null = null
    if (record.status === "running") {
      const live = yield* liveHolder(run.dir, name)
      if (live === undefined) {
        status = "interrupted"
        problems.push("its process is gone (killed?); run the stage again to resume")
      } else holder = `pid ${live.owner.pid} on ${live.owner.host} since ${live.owner.started_at}`
    }
    // A running stage is still writing its files; anything else should match its record.
    if (status !== "running") {
      for (const out of record.outputs) {
        let file: string
        try {
          file = run.file(out.path)
        } catch {
          // Only a damaged or hand-edited manifest records a path outside the run.
          problems.push(`${out.path}: recorded outside the run folder`)
          continue
        }
        // lstat: a link in the output's place is a problem of its own, whatever it points to.
        const st = yield* Effect.tryPromise({
          try: () => fs.lstat(file).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? undefined : Promise.reject(e))),
          catch: ioError(file, "stat")
        })
        if (st === undefined) problems.push(`${out.path}: missing`)
        else if (st.isSymbolicLink()) problems.push(`${out.path}: a symbolic link, not the file ${name} wrote`)
        else if (st.size !== out.bytes) problems.push(`${out.path}: ${out.bytes} bytes recorded, ${st.size} now`)
        else if (full) {
          const now = yield* Effect.tryPromise({ try: () => sha256File(file, { noFollow: true }), catch: ioError(file, "read") })
          if (now.sha256 !== out.sha256) problems.push(`${out.path}: same size but sha256 ${now.sha256.slice(0, 12)}… differs from the recorded ${out.sha256.slice(0, 12)}…`)
        }
      }
      if (problems.length > 0 && status === "done") status = "changed"
    }
    return { status, holder, problems } satisfies StageCheck
  })

export const statusCommand = Command.make("status", {
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the manifest as JSON, with each stage's checked status under `checked`"), Flag.withDefault(false)),
  verify: Flag.Boolean("verify").pipe(
    Flag.withDescription(
      "also compare every recorded output's sha256 (sizes are always compared) and list every symbolic link inside the run; exit 1 when anything is missing or changed, or there is a link"
    ),
    Flag.withDefault(false)
  )
}, ({ json, verify }) =>
  Effect.gen(function*() {
    const { config } = yield* loadConfig
    const store = yield* RunStore
    // A runs/{EXP_ID}/ made by the original Python code has no manifest: say what its stages left.
    const original = yield* explainOriginalRun(path.resolve(config.run.runs_dir, config.run.exp_id))
    if (original !== undefined) return yield* Console.log(json ? JSON.stringify(original, null, 2) : formatOriginalRun(original))
    const run = yield* store.requireRun(config.run.runs_dir, config.run.exp_id)
    const manifest = yield* store.readManifest(run)
    if (manifest === undefined) return yield* new NoSuchRunError({ message: `${run.dir}: manifest.json vanished` })
    const stages = Object.entries(manifest.stages)
    const checks = yield* Effect.forEach(stages, ([name, s]) => checkStage(run, name, s, verify))
    const problems = checks.reduce((n, c) => n + c.problems.filter((p) => !p.startsWith("its process")).length, 0)
    // dart never makes a link inside a run: each one was put there, and reads and writes through it are refused.
    const links = verify ? yield* Effect.tryPromise({ try: () => listRunLinks(run.dir), catch: ioError(run.dir, "listing") }) : []
    if (json) {
      yield* Console.log(JSON.stringify({
        ...manifest,
        checked: Object.fromEntries(stages.map(([name], i) => [name, checks[i]])),
        ...(verify ? { links } : {})
      }, null, 2))
    } else {
      const nameWidth = Math.max(16, ...stages.map(([n]) => n.length + 2))
      const statusWidth = Math.max(12, ...checks.map((c) => c.status.length + 2))
      const lines = [
        `run        ${manifest.exp_id}  (${run.dir})`,
        `created    ${manifest.created_at} by dart ${manifest.tool_version}${manifest.git_commit ? ` @ ${manifest.git_commit.slice(0, 12)}` : ""}, node ${manifest.node_version}`,
        `config     ${manifest.config_hash.slice(0, 16)}`,
        "",
        `${"stage".padEnd(nameWidth)}${"status".padEnd(statusWidth)}${"runs".padStart(5)}  ${"finished".padEnd(26)}outputs`
      ]
      if (stages.length === 0) lines.push("(no stage has run yet)")
      stages.forEach(([name, s], i) => {
        const c = checks[i]!
        lines.push(
          `${name.padEnd(nameWidth)}${c.status.padEnd(statusWidth)}${String(s.runs).padStart(5)}  ${(s.finished_at ?? "-").padEnd(26)}${s.outputs.length}` +
            `${c.holder ? `  held by ${c.holder}` : ""}${s.error ? `  error: ${s.error}` : ""}`
        )
        for (const p of c.problems) lines.push(`${"".padEnd(nameWidth)}! ${p}`)
      })
      if (links.length > 0) {
        lines.push("", `symbolic links inside the run (dart makes none; reads and writes through them are refused, remove them):`)
        for (const l of links) lines.push(`  ! ${l.path} -> ${l.target}`)
      }
      if (!verify) lines.push("", "(sizes checked; `dart status --verify` also compares sha256 and looks for symbolic links)")
      yield* Console.log(lines.join("\n"))
    }
    if (verify && (problems > 0 || links.length > 0)) {
      const found = [
        ...(problems > 0 ? [`${problems} recorded output${problems === 1 ? " is" : "s are"} missing or changed`] : []),
        ...(links.length > 0 ? [`${links.length} symbolic link${links.length === 1 ? "" : "s"} inside the run`] : [])
      ]
      return yield* new RunDamagedError({ message: `${run.dir}: ${found.join("; ")} (listed above)` })
    }
  })).pipe(Command.withDescription("Show a run's stage ledger: what ran, when, with which inputs, what it wrote, and whether that is still intact."))
