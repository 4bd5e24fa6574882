import { Cause, Clock, Context, Effect, Exit, Layer, Schema, Semaphore } from "effect"
import * as path from "node:path"
import { sha256File, sha256Hex } from "../common/Hashing.ts"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../common/SchemaIssueText.ts"
import { makeDirectories, readTextIfExists, writeFileAtomic } from "./AtomicFile.ts"
import { Manifest, type OutputRecord, type StageRecord } from "./Manifest.ts"
import { LOCK_DIR, withFileLock } from "./RunLock.ts"
import { noFollowMessage, RefusedFileError, refusedOrIoError, refuseLinks } from "./RunLinks.ts"
import { RunStoreError } from "./RunStoreError.ts"
import { showName } from "./SafePath.ts"

/** Sub-folders of `runs/{EXP_ID}/` (docs/architecture.md). */
export const runSubdirectories = [
  "configs",
  "datasets",
  "teacher_outputs/distill",
  "teacher_outputs/repair",
  "adapters",
  "predictions",
  "audit",
  "evaluation",
  "logs"
] as const

/** A run file a stage reads is not what the stage that wrote it recorded (edited, truncated, deleted). */
export class InputChangedError extends Schema.TaggedError<InputChangedError>()("InputChangedError", { message: Schema.String }) {}

/** A stage was asked to work in a run that `dart init` has not created. */
export class NoSuchRunError extends Schema.TaggedError<NoSuchRunError>()("NoSuchRunError", { message: Schema.String }) {}

export interface RunHandle {
  readonly expId: string
  readonly dir: string
  /**
   * Absolute path of a file inside the run. A path that leaves the run (`..`, absolute) throws: callers
   * pass the run's own layout (docs/architecture.md), so one that escapes is a bug, never a user's choice.
   */
  readonly file: (relative: string) => string
}

const encodeManifest = Schema.encodeSync(Manifest)
const decodeManifest = Schema.decodeUnknownResult(Manifest)

const messageOf = (u: unknown) => (u instanceof Error ? u.message : String(u))

const nowIso = Clock.currentTimeMillis.pipe(Effect.map((ms) => new Date(ms).toISOString()))

/**
 * The run directory and its ledger. Every write is atomic; the manifest is rewritten
 * under one lock so concurrent stage updates in this process never lose each other.
 */
export class RunStore extends Context.Service<RunStore, {
  handle(runsDir: string, expId: string): RunHandle
  exists(run: RunHandle): Effect.Effect<boolean, RunStoreError>
  /** The run of this exp id, failing with a hint when `dart init` has not created it. */
  requireRun(runsDir: string, expId: string): Effect.Effect<RunHandle, NoSuchRunError | RunStoreError>
  create(run: RunHandle): Effect.Effect<void, RunStoreError>
  readManifest(run: RunHandle): Effect.Effect<Manifest | undefined, RunStoreError>
  writeManifest(run: RunHandle, manifest: Manifest): Effect.Effect<void, RunStoreError>
  readText(run: RunHandle, relative: string): Effect.Effect<string | undefined, RunStoreError>
  writeFile(run: RunHandle, relative: string, data: string | Uint8Array): Effect.Effect<OutputRecord, RunStoreError>
  /** Hash of a file as it is on disk now, or undefined when it is missing. */
  describeFile(run: RunHandle, relative: string): Effect.Effect<OutputRecord | undefined, RunStoreError>
  stageStarted(run: RunHandle, stage: string, inputsHash: string): Effect.Effect<void, RunStoreError>
  stageFinished(
    run: RunHandle,
    stage: string,
    outcome: { readonly status: "done" | "failed" | "stopped" | "interrupted"; readonly outputs: ReadonlyArray<OutputRecord>; readonly error?: string }
  ): Effect.Effect<void, RunStoreError>
  /**
   * Runs a stage body that called `stageStarted`: if it fails or is interrupted (SIGINT/SIGTERM)
   * while the ledger still says `running`, the ledger records `failed` or `interrupted`.
   */
  guard<A, E, R>(run: RunHandle, stage: string, body: Effect.Effect<A, E, R>): Effect.Effect<A, E, R>
  /**
   * Checks a run file against the newest ledger record of it (size, then sha256) before a stage
   * reads it; fails naming the file, the stage that wrote it and what changed. `required`: a file
   * no stage recorded is refused too (else it is accepted as the user's own).
   */
  verifyInput(run: RunHandle, relative: string, options: { readonly required: boolean; readonly producer: string }): Effect.Effect<void, InputChangedError | RunStoreError>
  /** True when the stage is done with these inputs and every recorded output is still intact. */
  isUpToDate(run: RunHandle, stage: string, inputsHash: string): Effect.Effect<boolean, RunStoreError>
}>()("dart/runs/RunStore") {
  static readonly layer = Layer.effect(
    RunStore,
    Effect.gen(function*() {
      const lock = yield* Semaphore.make(1)

      const handle = (runsDir: string, expId: string): RunHandle => {
        const dir = path.resolve(runsDir, expId)
        const file = (relative: string) => {
          if (path.isAbsolute(relative)) throw new Error(`run file ${showName(relative)} is an absolute path, not one inside the run folder ${dir}`)
          const joined = path.join(dir, relative)
          const inside = path.relative(dir, joined)
          if (inside === ".." || inside.startsWith(`..${path.sep}`)) throw new Error(`run file ${showName(relative)} leaves the run folder ${dir}`)
          return joined
        }
        return { expId, dir, file }
      }

      const manifestPath = (run: RunHandle) => run.file("manifest.json")

      // A path from a caller or a ledger that leaves the run fails here as an error, not as a thrown defect.
      const inRun = (run: RunHandle, relative: string) =>
        Effect.try({ try: () => run.file(relative), catch: (e) => new RunStoreError({ path: run.dir, message: messageOf(e), cause: e }) })

      const readManifest = (run: RunHandle) =>
        Effect.gen(function*() {
          const file = manifestPath(run)
          const text = yield* readTextIfExists(file, { root: run.dir })
          if (text === undefined) return undefined
          let json: unknown
          try {
            json = JSON.parse(text)
          } catch (e) {
            return yield* new RunStoreError({ path: file, message: `${file}: malformed JSON at ${jsonErrorLocation(text, e)}`, cause: e })
          }
          const decoded = decodeManifest(json, { errors: "all" })
          if (decoded._tag === "Failure") {
            const why = flattenIssue(decoded.failure.issue).map((i) => describeIssue(i, json)).join("; ")
            return yield* new RunStoreError({ path: file, message: `${file}: not a DART manifest: ${why}` })
          }
          return decoded.success
        })

      const writeManifest = (run: RunHandle, manifest: Manifest) =>
        writeFileAtomic(manifestPath(run), `${JSON.stringify(encodeManifest(manifest), null, 2)}\n`, { root: run.dir }).pipe(Effect.asVoid)

      // In-process semaphore for this process's fibers, file lock for the other processes'
      // stages of the same run: no read-modify-write of the ledger loses another's update.
      const updateManifest = (run: RunHandle, f: (m: Manifest) => Manifest) =>
        lock.withPermits(1)(withFileLock(run.file(`${LOCK_DIR}/manifest.lock`),
          Effect.gen(function*() {
            const current = yield* readManifest(run)
            if (current === undefined) {
              return yield* new RunStoreError({ path: manifestPath(run), message: `${manifestPath(run)}: missing; run \`dart init\` first` })
            }
            yield* writeManifest(run, f(current))
          })
        ))

      const writeFile = (run: RunHandle, relative: string, data: string | Uint8Array) =>
        inRun(run, relative).pipe(Effect.flatMap((file) => writeFileAtomic(file, data, { root: run.dir })),
          Effect.map((written): OutputRecord => ({
            path: relative,
            sha256: sha256Hex(written),
            bytes: typeof written === "string" ? Buffer.byteLength(written) : written.byteLength
          }))
        )

      // Hashed where it is: a link inside the run is refused, not hashed in its target's place.
      const describeFile = (run: RunHandle, relative: string) =>
        inRun(run, relative).pipe(Effect.flatMap((file) =>
          Effect.tryPromise({
            try: async () => {
              await refuseLinks(file, { root: run.dir, includeFile: true })
              return sha256File(file, { noFollow: true }).then(
                ({ sha256, bytes }): OutputRecord | undefined => ({ path: relative, sha256, bytes }),
                (e: NodeJS.ErrnoException) =>
                  e.code === "ENOENT" ? undefined : Promise.reject(e.code === "ELOOP" ? new RefusedFileError(noFollowMessage(file)) : e)
              )
            },
            catch: refusedOrIoError(file, "read")
          })
        ))

      const stageStarted = (run: RunHandle, stage: string, inputsHash: string) =>
        Effect.gen(function*() {
          const at = yield* nowIso
          yield* updateManifest(run, (m) => {
            const previous = m.stages[stage]
            const record: StageRecord = {
              status: "running",
              inputs_hash: inputsHash,
              started_at: at,
              finished_at: null,
              outputs: previous?.outputs ?? [],
              error: null,
              runs: (previous?.runs ?? 0) + 1
            }
            return { ...m, stages: { ...m.stages, [stage]: record } }
          })
        })

      const stageFinished: RunStore["Service"]["stageFinished"] = (run, stage, outcome) =>
        Effect.gen(function*() {
          const at = yield* nowIso
          yield* updateManifest(run, (m) => {
            const previous = m.stages[stage]
            const record: StageRecord = {
              status: outcome.status,
              inputs_hash: previous?.inputs_hash ?? "",
              started_at: previous?.started_at ?? at,
              finished_at: at,
              outputs: outcome.outputs,
              error: outcome.error ?? null,
              runs: previous?.runs ?? 1
            }
            return { ...m, stages: { ...m.stages, [stage]: record } }
          })
        })

      const guard = <A, E, R>(run: RunHandle, stage: string, body: Effect.Effect<A, E, R>) =>
        body.pipe(Effect.onExit((exit) => {
          if (Exit.isSuccess(exit)) return Effect.void
          const interrupted = Cause.hasInterruptsOnly(exit.cause)
          const error = interrupted ? "interrupted (SIGINT/SIGTERM)" : messageOf(Cause.squash(exit.cause))
          return Effect.gen(function*() {
            const m = yield* readManifest(run)
            if (m?.stages[stage]?.status !== "running") return
            yield* stageFinished(run, stage, { status: interrupted ? "interrupted" : "failed", outputs: m.stages[stage]!.outputs, error })
          }).pipe(Effect.ignore)
        }))

      const verifyInput: RunStore["Service"]["verifyInput"] = (run, relative, options) =>
        Effect.gen(function*() {
          const m = yield* readManifest(run)
          const records = Object.entries(m?.stages ?? {}).flatMap(([stage, r]) =>
            r.outputs.filter((o) => o.path === relative).map((o) => ({ stage, at: r.finished_at ?? r.started_at, out: o }))
          ).sort((a, b) => (a.at < b.at ? 1 : -1))
          const newest = records[0]
          const file = yield* inRun(run, relative)
          if (newest === undefined) {
            if (!options.required) return
            return yield* new InputChangedError({ message: `${file}: no stage recorded writing it; run ${options.producer} first` })
          }
          const now = yield* describeFile(run, relative)
          const was = `${newest.out.bytes} bytes, sha256 ${newest.out.sha256.slice(0, 12)}…`
          if (now === undefined) {
            return yield* new InputChangedError({ message: `${file}: missing; ${newest.stage} wrote it (${was}); run ${options.producer} again` })
          }
          if (now.bytes !== newest.out.bytes || now.sha256 !== newest.out.sha256) {
            return yield* new InputChangedError({
              message: `${file}: changed since ${newest.stage} wrote it (${was}; now ${now.bytes} bytes, sha256 ${now.sha256.slice(0, 12)}…` +
                `${now.bytes < newest.out.bytes ? ", shorter: truncated or rows deleted" : now.bytes > newest.out.bytes ? ", longer: rows added" : ", same size: edited"}); ` +
                `restore it or run ${options.producer} again`
            })
          }
        })

      const isUpToDate = (run: RunHandle, stage: string, inputsHash: string) =>
        Effect.gen(function*() {
          const m = yield* readManifest(run)
          const record = m?.stages[stage]
          if (record === undefined || record.status !== "done" || record.inputs_hash !== inputsHash) return false
          for (const out of record.outputs) {
            const now = yield* describeFile(run, out.path)
            if (now === undefined || now.sha256 !== out.sha256) return false
          }
          return true
        })

      const exists = (run: RunHandle) => readTextIfExists(manifestPath(run), { root: run.dir }).pipe(Effect.map((t) => t !== undefined))

      const create = (run: RunHandle) => makeDirectories([run.dir, ...runSubdirectories.map((d) => run.file(d))])

      const requireRun = (runsDir: string, expId: string) =>
        Effect.gen(function*() {
          const run = handle(runsDir, expId)
          if (!(yield* exists(run))) {
            return yield* new NoSuchRunError({ message: `no run ${showName(expId)} under ${runsDir}/ (create it with \`dart init --exp-id ${expId}\`)` })
          }
          return run
        })

      return RunStore.of({
        handle,
        exists,
        requireRun,
        create,
        readManifest,
        writeManifest,
        readText: (run, relative) => inRun(run, relative).pipe(Effect.flatMap((file) => readTextIfExists(file, { root: run.dir }))),
        writeFile,
        describeFile,
        stageStarted,
        stageFinished,
        guard,
        verifyInput,
        isUpToDate
      })
    })
  )
}
