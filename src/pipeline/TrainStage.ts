import { Console, Effect, Schema } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { hashJson, sha256Hex } from "../common/Hashing.ts"
import { formatDuration } from "../common/Progress.ts"
import { Compute } from "../compute/Compute.ts"
import { toolVersion } from "../common/Version.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { fileExists, makeDirectories, syncDirectory, writeFileAtomic } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import type { OutputRecord } from "../runs/Manifest.ts"
import { RunStore } from "../runs/RunStore.ts"
import { ioError, type RunStoreError } from "../runs/RunStoreError.ts"
import { showName } from "../runs/SafePath.ts"
import { type DownloadedFile, type JobEvent, PROTOCOL, type StartJob, TrainerClient } from "../training/TrainerClient.ts"
import { TeacherTrainingRow } from "../contracts/TeacherOutput.ts"
import type { Severity } from "../domain/Severity.ts"
import { assembleTrainingSet, type Recipe, type SourceRow } from "../training/TrainingSet.ts"
import { trainerEndpoint } from "./ServicePlacement.ts"
import { layoutMessages } from "../domain/ChatLayout.ts"
import { chatLayoutFor } from "./ChatLayoutRecord.ts"
import { AdapterName, checkName, openStage } from "./StageRun.ts"

export class TrainStageError extends Schema.TaggedError<TrainStageError>()("TrainStageError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** The README's `mdac` / `mdac_h` and the code's `dart` / `dart_h` are the same stages (docs/protocol.md §9 B4). */
export const normalizeStage = (s: string): "dart" | "dart_h" | undefined =>
  s === "mdac" || s === "dart" ? "dart" : s === "mdac_h" || s === "dart_h" ? "dart_h" : undefined


export interface TrainRequest {
  readonly stage: "dart" | "dart_h"
  readonly adapterName: string
  readonly recipe: Recipe
  readonly initAdapter: string | undefined
  readonly weights: Readonly<Record<Severity, number>>
  readonly epochs: number | undefined
}

/** DART writes this into `final/` itself; a trainer's file of that name would be overwritten by it. */
const RECORD = "training_record.json"
const STAGING_PREFIX = ".download-"

const io = <A>(file: string, what: string, f: () => Promise<A>): Effect.Effect<A, RunStoreError> => Effect.tryPromise({ try: f, catch: ioError(file, what) })

const removeTree = (dir: string) => io(dir, "remove", () => fs.rm(dir, { recursive: true, force: true }))

/**
 * A fresh staging folder inside the adapter's (same file system, so moving it into place is a rename), removed when
 * the stage's scope closes: after success it holds the previous final/, after a failure or Ctrl-C a partial download.
 * Staging folders left by an attempt that died (SIGKILL, a crash) go first; the stage's lock means no live one owns them.
 */
const openStaging = (adapterDir: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      yield* makeDirectories([adapterDir])
      const stale = (yield* io(adapterDir, "list", () => fs.readdir(adapterDir))).filter((n) => n.startsWith(STAGING_PREFIX))
      // A process killed between the swap's two renames left final/ missing and the previous adapter in its staging
      // folder: put that back before the leftovers go.
      const final = path.join(adapterDir, "final")
      if (!(yield* fileExists(final))) {
        for (const n of stale) {
          const previous = path.join(adapterDir, n, "previous")
          if (yield* fileExists(previous)) {
            yield* io(final, "restore the previous adapter", () => fs.rename(previous, final))
            yield* syncDirectory(adapterDir)
            break
          }
        }
      }
      yield* Effect.forEach(stale, (n) => removeTree(path.join(adapterDir, n)), { discard: true })
      const staging = path.join(adapterDir, `${STAGING_PREFIX}${process.pid}-${randomBytes(4).toString("hex")}`)
      yield* makeDirectories([staging])
      return staging
    }),
    (staging) => removeTree(staging).pipe(Effect.ignore)
  )

/**
 * Moves verified downloads to `staging/final/` under the names the trainer gave (each checked safe by the client),
 * adds the training record, fsyncs every folder, then swaps the folder in as `adapterDir/final`: `final/` holds the
 * whole new adapter or is left as it was, never a mix. The previous `final/` ends up inside `staging`.
 */
const placeAdapter = (adapterDir: string, staging: string, files: ReadonlyArray<DownloadedFile>, record: string) =>
  Effect.gen(function*() {
    const next = path.join(staging, "final")
    const folders = new Set([next])
    for (const f of files) {
      const target = path.join(next, f.path)
      folders.add(path.dirname(target))
      yield* io(target, "move into place", async () => {
        await fs.mkdir(path.dirname(target), { recursive: true })
        await fs.rename(f.tempFile, target)
      })
    }
    const written = yield* writeFileAtomic(path.join(next, RECORD), record)
    yield* Effect.forEach([...folders], syncDirectory, { discard: true })
    const final = path.join(adapterDir, "final")
    const previous = path.join(staging, "previous")
    // The swap runs to its end once begun: an interruption between the two renames would leave no final/, and the
    // scope's clean-up would then remove the previous adapter with the staging folder.
    yield* Effect.uninterruptible(Effect.gen(function*() {
      const hadPrevious = yield* fileExists(final)
      if (hadPrevious) yield* io(final, "move aside", () => fs.rename(final, previous))
      yield* io(final, "move into place", () => fs.rename(next, final)).pipe(
        // Put the previous adapter back: a failed swap must not leave the adapter without its final/.
        Effect.tapError(() => (hadPrevious ? Effect.tryPromise(() => fs.rename(previous, final)).pipe(Effect.ignore) : Effect.void))
      )
      yield* syncDirectory(adapterDir)
    }))
    return written
  })

const readTeacherRows = (file: string, what: string) =>
  Effect.gen(function*() {
    if (!(yield* fileExists(file))) return yield* new TrainStageError({ message: `${file} does not exist: run \`dart teacher --task ${what}\` first` })
    const rows = yield* readRows(file, TeacherTrainingRow)
    return rows.filter((r) => r.accepted).map((r): SourceRow => ({ id: r.key, messages: r.messages, ...(r.severity ? { severity: r.severity } : {}) }))
  })

/** Original steps 3 and 7: assemble the training set, train on the sidecar, bring the adapter home. */
export const runTrain = (resolved: ResolvedConfig, request: TrainRequest) => Effect.scoped(trainIn(resolved, request))

const trainIn = Effect.fn("TrainStage.run")(function*(resolved: ResolvedConfig, request: TrainRequest) {
  const store = yield* RunStore
  const { config } = resolved
  const t = config.training
  yield* checkName(AdapterName, "--adapter-name", request.adapterName)
  // Teacher outputs must be what the teacher stage recorded (files it never recorded are taken as given).
  const tasks = request.recipe === "repair_only" ? ["repair"] : request.recipe === "distill" ? ["distill"] : ["distill", "repair"]
  const stage = yield* openStage({
    config,
    stage: `train/${request.adapterName}`,
    inputs: tasks.map((task) => ({ path: `teacher_outputs/${task}/outputs.jsonl`, inRun: true, required: false, producer: `\`dart teacher --task ${task}\`` }))
  })
  const { run } = stage
  if (request.stage === "dart_h" && request.recipe !== "repair_only" && request.initAdapter === undefined) {
    yield* Console.error("warning: stage dart_h without --init-adapter trains a fresh LoRA instead of continuing DART")
  }
  const distill = request.recipe === "repair_only" ? [] : yield* readTeacherRows(run.file("teacher_outputs/distill/outputs.jsonl"), "distill")
  const repair = request.recipe === "distill" ? [] : yield* readTeacherRows(run.file("teacher_outputs/repair/outputs.jsonl"), "repair")
  const { rows, manifest } = assembleTrainingSet({ distill, repair, recipe: request.recipe, weights: request.weights, seed: t.seed })
  if (rows.length === 0) return yield* new TrainStageError({ message: `the ${request.recipe} training set is empty (no accepted teacher rows)` })
  // Laid out as every request to the base model is (src/domain/ChatLayout.ts): training sees what serving sends.
  const layout = yield* chatLayoutFor(config, run.dir).pipe(Effect.mapError((e) => new TrainStageError({ message: e.message, cause: e })))
  const dataset = rows.map((r) => `${JSON.stringify({ id: `${r.id}#${r.source}${r.copy > 0 ? `.${r.copy}` : ""}`, messages: layoutMessages(layout, r.messages) })}\n`).join("")
  const datasetHash = sha256Hex(dataset)

  const initFiles = request.initAdapter === undefined ? [] : yield* Effect.forEach(["adapter_config.json", "adapter_model.safetensors"], (name) =>
    Effect.tryPromise({
      try: async () => ({ path: name, data: new Uint8Array(await fs.readFile(path.join(request.initAdapter!, name))) }),
      catch: () => new TrainStageError({ message: `--init-adapter ${request.initAdapter}: ${name} is missing (expected a PEFT adapter folder, e.g. runs/${config.run.exp_id}/adapters/DART/final)` })
    }))


  const spec: Omit<StartJob, "job_id" | "dataset_id" | "init_adapter_id"> = {
    base_model: config.model.base,
    dtype: config.model.dtype,
    lora: { r: t.lora.r, alpha: t.lora.alpha, dropout: t.lora.dropout, target_modules: t.lora.target_modules, bias: t.lora.bias },
    qlora: { enabled: t.qlora.enabled, quant_type: t.qlora.quant_type, double_quant: t.qlora.double_quant, compute_dtype: t.qlora.compute_dtype },
    epochs: request.epochs ?? t.epochs,
    learning_rate: t.learning_rate,
    per_device_batch_size: t.per_device_batch_size,
    gradient_accumulation_steps: t.gradient_accumulation_steps,
    max_length: t.max_length,
    seed: t.seed,
    lr_scheduler: t.lr_scheduler,
    warmup_ratio: t.warmup_ratio,
    weight_decay: t.weight_decay,
    eval_fraction: t.eval_fraction,
    eval_steps: t.eval_steps,
    save_steps: t.save_steps,
    gradient_checkpointing: t.gradient_checkpointing,
    max_steps: 0,
    optimizer: t.optimizer,
    // Only when asked: a one-process job's spec (and so its job id and record) stays what it always was.
    ...(t.gpus > 1 ? { processes: t.gpus } : {})
  }
  const inputsHash = hashJson({ datasetHash, spec, init: initFiles.map((f) => sha256Hex(f.data)) })
  if (yield* stage.upToDate(inputsHash)) {
    yield* Console.log(`adapter ${request.adapterName} is up to date (${run.file(`adapters/${request.adapterName}/final`)})`)
    return
  }
  const jobId = `${config.run.exp_id}-${request.adapterName}-${inputsHash.slice(0, 12)}`

  const trainOn = (endpoint: string) => Effect.gen(function*() {
    const client = yield* TrainerClient
    const version = yield* client.version()
    if (version.protocol !== PROTOCOL) {
      return yield* new TrainStageError({ message: `trainer at ${endpoint} speaks ${version.protocol}, DART needs ${PROTOCOL}` })
    }
    // The ledger must not show a stage as running after it failed or was stopped (SIGINT/SIGTERM: interrupted).
    yield* stage.begin(inputsHash, Effect.gen(function*() {
    const uploaded = yield* client.upload("dataset", `${request.adapterName}-${request.recipe}`, [{ path: "train.jsonl", data: new TextEncoder().encode(dataset) }])
    const init = initFiles.length === 0 ? undefined : yield* client.upload("adapter", `${request.adapterName}-init`, initFiles)
    const started = yield* client.startJob({ ...spec, job_id: jobId, dataset_id: uploaded.id, init_adapter_id: init?.id ?? "" })
    yield* Console.error(
      `train ${request.adapterName}: ${started.train_rows} train / ${started.eval_rows} eval rows on ${version.device}` +
        (started.resumed ? `, resuming from step ${started.resumed_from_step}` : "") +
        (started.dropped_too_long > 0 ? `; ${started.dropped_too_long} rows longer than max_length ${t.max_length} left out: ${started.dropped_ids.slice(0, 5).join(", ")}${started.dropped_ids.length > 5 ? ", …" : ""}` : "")
    )
    const losses: Array<{ step: number; loss: number; learning_rate: number }> = []
    const evals: Array<{ step: number; eval_loss: number }> = []
    let lastPrint = 0
    let worldSize = 1
    const onEvent = (e: JobEvent) => Effect.sync(() => {
      if (e.kind === "started" && e.started) {
        worldSize = Math.max(1, Number(e.started.world_size ?? 1))
        process.stderr.write(`train ${request.adapterName}: ${e.started.total_steps} steps on ${e.started.device}${worldSize > 1 ? ` over ${worldSize} processes` : ""}\n`)
      }
      if (e.kind === "step" && e.step) {
        losses.push({ step: Number(e.step.step), loss: e.step.loss, learning_rate: e.step.learning_rate })
        const now = Date.now()
        if (now - lastPrint > 2000 || Number(e.step.step) === Number(e.step.total_steps)) {
          lastPrint = now
          process.stderr.write(`train ${request.adapterName} step ${e.step.step}/${e.step.total_steps} loss ${e.step.loss.toFixed(4)} lr ${e.step.learning_rate.toExponential(2)} ` +
            `${Math.round(e.step.tokens_per_second).toLocaleString("en")} tok/s ETA ${formatDuration(e.step.eta_seconds)}\n`)
        }
      } else if (e.kind === "evaluated" && e.evaluated) evals.push({ step: Number(e.evaluated.step), eval_loss: e.evaluated.eval_loss })
    })
    // Ctrl-C (or any interruption) cancels the job on the sidecar instead of leaving it training.
    const end = yield* client.watch(jobId, 0, onEvent).pipe(Effect.onInterrupt(() => client.cancel(jobId).pipe(Effect.ignore)))
    if (end.kind === "failed" || end.done == null) {
      const why = end.failed ? `${end.failed.code}: ${end.failed.message}` : "no result"
      return yield* new TrainStageError({ message: `training job ${jobId} failed: ${why}` })
    }
    const done = end.done
    const reserved = done.files.find((f) => f.path === RECORD)
    if (reserved !== undefined) {
      return yield* new TrainStageError({ message: `training job ${jobId}: adapter file name ${showName(RECORD)} refused: DART writes its training record under that name` })
    }
    const rel = `adapters/${request.adapterName}`
    const adapterDir = run.file(rel)
    const staging = yield* openStaging(adapterDir)
    const files = yield* client.download(jobId, done.files, staging)
    const record = {
      adapter: request.adapterName,
      stage: request.stage,
      recipe: request.recipe,
      base_model: config.model.base,
      job_id: jobId,
      dataset: { sha256: datasetHash, rows: rows.length, train_rows: started.train_rows, eval_rows: started.eval_rows, dropped_too_long: started.dropped_too_long, dropped_ids: started.dropped_ids },
      init_adapter: request.initAdapter === undefined ? null : { path: request.initAdapter, files: initFiles.map((f) => ({ path: f.path, sha256: sha256Hex(f.data) })) },
      hyperparameters: spec,
      metrics: { global_step: Number(done.global_step), train_loss: done.train_loss, best_eval_loss: done.best_eval_loss, losses, evals },
      validation: done.validation,
      files: done.files,
      versions: { dart: toolVersion, trainer: version.server_version, protocol: version.protocol, ...version.libraries, device: version.device },
      mix: manifest
    }
    const recordText = yield* placeAdapter(adapterDir, staging, files, `${JSON.stringify(record, null, 2)}\n`)
    const outputs: Array<OutputRecord> = files.map((f) => ({ path: `${rel}/final/${f.path}`, sha256: f.sha256, bytes: f.size }))
    outputs.push({ path: `${rel}/final/${RECORD}`, sha256: sha256Hex(recordText), bytes: Buffer.byteLength(recordText) })
    outputs.push(yield* store.writeFile(run, `${rel}/mix_manifest.json`, `${JSON.stringify(manifest, null, 2)}\n`))
    outputs.push(yield* store.writeFile(run, `${rel}/train.jsonl`, dataset))
    yield* stage.finish({ status: "done", outputs })
    yield* Console.log(`adapter ${request.adapterName}: ${done.global_step} steps, train loss ${done.train_loss.toFixed(4)} -> ${run.file(`${rel}/final`)} (${files.map((f) => `${f.path} ${f.sha256.slice(0, 12)}`).join(", ")})`)
    }))
  }).pipe(
    Effect.provide(TrainerClient.layer(endpoint)),
    Effect.mapError((e) => (e._tag === "TrainerError" ? new TrainStageError({ message: `trainer at ${endpoint}: ${e.message}`, cause: e }) : e))
  )
  const configured = trainerEndpoint(config)
  if (configured !== null) return yield* trainOn(configured)
  // No endpoint: the trainer the command's compute places (the host with the most GPUs) for this stage only.
  yield* Effect.scoped(Effect.gen(function*() {
    const trainer = yield* (yield* Compute).trainer()
    yield* Console.error(`trainer ${trainer.spec.name} on ${trainer.host}${trainer.reused ? " (reused)" : ""} at ${trainer.endpoint}${t.gpus > 1 ? `, ${t.gpus} processes` : ""}`)
    yield* trainOn(trainer.endpoint)
  })).pipe(
    Effect.mapError((e) => (e._tag === "ComputeError" ? new TrainStageError({ message: `compute host ${e.host}: ${e.message}`, cause: e }) : e))
  )
})
