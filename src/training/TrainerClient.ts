import * as grpc from "@grpc/grpc-js"
import * as protoLoader from "@grpc/proto-loader"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Context, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { showName, unsafePathReason } from "../runs/SafePath.ts"
import { type ProbeConversation, TemplateProbe } from "../domain/ChatLayout.ts"

export const PROTOCOL = "dart.trainer.v1"
const protoRoot = fileURLToPath(new URL("../../proto", import.meta.url))
const CHUNK = 64 * 1024

export class TrainerError extends Schema.TaggedError<TrainerError>()("TrainerError", {
  /** gRPC status name, e.g. INVALID_ARGUMENT, or a DART-side code. */
  code: Schema.String,
  message: Schema.String
}) {}

const statusName = (code: number) => (grpc.status as unknown as Record<number, string>)[code] ?? String(code)

export const toError = (what: string) => (e: unknown) => {
  const err = e as Partial<grpc.ServiceError>
  if (typeof err.code === "number") {
    // grpc-js ends some details with an empty "Resolution note: "; drop it, and any dangling separator.
    const details = (err.details ?? "").replace(/\s*Resolution note:\s*$/, "").trim()
    return new TrainerError({ code: statusName(err.code), message: `${what}: ${statusName(err.code)}${details === "" ? "" : `: ${details}`}` })
  }
  return new TrainerError({ code: "INTERNAL", message: `${what}: ${e instanceof Error ? e.message : String(e)}` })
}

const Num = Schema.Union([Schema.Number, Schema.NumberFromString])
const FileHeader = Schema.Struct({ path: Schema.String, size: Num, sha256: Schema.String })
export type FileHeader = typeof FileHeader.Type

const VersionReply = Schema.Struct({ protocol: Schema.String, server_version: Schema.String, libraries: Schema.Record(Schema.String, Schema.String), device: Schema.String, max_lora_rank: Schema.Number })
const UploadReply = Schema.Struct({ id: Schema.String, files: Schema.Array(FileHeader), rows: Schema.Number })
export const StartJobReply = Schema.Struct({
  job_id: Schema.String, resumed: Schema.Boolean, resumed_from_step: Num, train_rows: Schema.Number, eval_rows: Schema.Number,
  dropped_too_long: Schema.Number, dropped_ids: Schema.Array(Schema.String)
})
export type StartJobReply = typeof StartJobReply.Type
export const JobEvent = Schema.Struct({
  seq: Num,
  kind: Schema.Literals(["started", "step", "checkpoint", "evaluated", "done", "failed"]),
  started: Schema.optionalKey(Schema.NullOr(Schema.Struct({ total_steps: Num, start_step: Num, device: Schema.String, world_size: Schema.optionalKey(Num) }))),
  step: Schema.optionalKey(Schema.NullOr(Schema.Struct({ step: Num, total_steps: Num, loss: Schema.Number, learning_rate: Schema.Number, tokens_per_second: Schema.Number, eta_seconds: Schema.Number, epoch: Schema.Number }))),
  checkpoint: Schema.optionalKey(Schema.NullOr(Schema.Struct({ step: Num, path: Schema.String }))),
  evaluated: Schema.optionalKey(Schema.NullOr(Schema.Struct({ step: Num, eval_loss: Schema.Number }))),
  done: Schema.optionalKey(Schema.NullOr(Schema.Struct({ global_step: Num, train_loss: Schema.Number, best_eval_loss: Schema.Number, files: Schema.Array(FileHeader), validation: Schema.Record(Schema.String, Schema.String) }))),
  failed: Schema.optionalKey(Schema.NullOr(Schema.Struct({ code: Schema.String, message: Schema.String })))
})
export type JobEvent = typeof JobEvent.Type

const decode = <S extends Schema.Codec<unknown, unknown, never, never>>(schema: S, what: string) =>
  (u: unknown): Effect.Effect<S["Type"], TrainerError> => {
    const r = Schema.decodeUnknownResult(schema)(u)
    return r._tag === "Success"
      ? Effect.succeed(r.success)
      : Effect.fail(new TrainerError({ code: "BAD_REPLY", message: `${what}: unexpected reply from the trainer: ${r.failure.message}` }))
  }

export interface StartJob {
  readonly job_id: string
  readonly dataset_id: string
  readonly base_model: string
  readonly dtype: string
  readonly lora: { readonly r: number; readonly alpha: number; readonly dropout: number; readonly target_modules: ReadonlyArray<string>; readonly bias: string }
  readonly qlora: { readonly enabled: boolean; readonly quant_type: string; readonly double_quant: boolean; readonly compute_dtype: string }
  readonly epochs: number
  readonly learning_rate: number
  readonly per_device_batch_size: number
  readonly gradient_accumulation_steps: number
  readonly max_length: number
  readonly seed: number
  readonly init_adapter_id: string
  readonly lr_scheduler: string
  readonly warmup_ratio: number
  readonly weight_decay: number
  readonly eval_fraction: number
  readonly eval_steps: number
  readonly save_steps: number
  readonly gradient_checkpointing: boolean
  readonly max_steps: number
  readonly optimizer: string
  /** Data-parallel processes (one per GPU, gloo on CPU); absent = one, as before the field existed. */
  readonly processes?: number
}

/** An adapter file received in full: its bytes, checked against the declared size and sha256 and fsynced, are in `tempFile`. */
export interface DownloadedFile {
  /** The name the trainer gave it: a safe relative path, declared by the job, sent once. */
  readonly path: string
  readonly size: number
  readonly sha256: string
  readonly tempFile: string
}

/** Far above any LoRA adapter; a job that declares more is refused before a byte is read. */
export const MAX_ADAPTER_BYTES = 64 * 1024 ** 3

const downloadError = (jobId: string, code: string, message: string) =>
  new TrainerError({ code, message: `DownloadAdapter for job ${jobId}: ${message}` })

/**
 * Why the files a job's `done` event declares cannot be downloaded as they are: the trainer chooses these names,
 * so each must be a safe relative path (src/runs/SafePath.ts), none twice, none both a file and a folder, and
 * each size a whole number of bytes within MAX_ADAPTER_BYTES in all.
 */
export const checkDeclaredFiles = (jobId: string, declared: ReadonlyArray<FileHeader>): TrainerError | undefined => {
  const names = new Set<string>()
  // On case- or normalization-insensitive file systems (macOS) `A.bin` and `a.bin` are one file: the second would
  // replace the first while both were recorded.
  const folded = new Set<string>()
  let total = 0
  for (const f of declared) {
    const unsafe = unsafePathReason(f.path)
    if (unsafe !== undefined) return downloadError(jobId, "BAD_REPLY", `adapter file name ${showName(f.path)} refused: ${unsafe}`)
    const fold = f.path.normalize("NFC").toLowerCase()
    if (names.has(f.path) || folded.has(fold)) return downloadError(jobId, "BAD_REPLY", `adapter file ${showName(f.path)} is declared more than once (names are compared ignoring case)`)
    folded.add(fold)
    if (!Number.isSafeInteger(f.size) || f.size < 0) return downloadError(jobId, "BAD_REPLY", `adapter file ${showName(f.path)} has no valid size (${String(f.size)})`)
    if (!/^[0-9a-f]{64}$/.test(f.sha256)) return downloadError(jobId, "BAD_REPLY", `adapter file ${showName(f.path)} has no valid sha256 (${showName(f.sha256)})`)
    names.add(f.path)
    total += f.size
  }
  // Ancestors only (a safe name has at most 8 segments), so a long list costs no more than its length.
  for (const name of names) {
    const segments = name.split("/")
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join("/")
      if (names.has(parent)) return downloadError(jobId, "BAD_REPLY", `adapter file ${showName(parent)} is also a folder of ${showName(name)}`)
    }
  }
  if (total > MAX_ADAPTER_BYTES) return downloadError(jobId, "BAD_REPLY", `the adapter is declared as ${total} bytes, over the ${MAX_ADAPTER_BYTES}-byte limit`)
  return undefined
}

interface DownloadChunk {
  readonly part: string
  readonly file?: { readonly path: string; readonly size: string; readonly sha256: string }
  readonly data?: Buffer
}

/** `buf` in full at the handle's position (a write may take less than it was given). */
const writeAll = async (handle: fs.FileHandle, buf: Uint8Array) => {
  for (let done = 0; done < buf.byteLength;) done += (await handle.write(buf, done, buf.byteLength - done)).bytesWritten
}

/**
 * Streams DownloadAdapter into temp files in `dir`, named by position (never by the trainer's names). Each header must
 * be a file the job declared, with the declared size and sha256, sent once; bytes past the declared size end the call
 * at once; each file's sha256 is taken as it arrives and checked, then the file is fsynced. Any failure removes the
 * temp files made so far. The stream is read one message at a time, so gRPC flow control holds the trainer back
 * while the disk catches up: memory stays at a few chunks whatever the adapter's size.
 */
const receiveAdapter = async (stream: grpc.ClientReadableStream<DownloadChunk>, jobId: string, declared: ReadonlyArray<FileHeader>, dir: string, signal: AbortSignal) => {
  const wanted = new Map(declared.map((f) => [f.path, f]))
  const seen = new Set<string>()
  const temps: Array<string> = []
  const got: Array<DownloadedFile> = []
  let current: { header: FileHeader; tempFile: string; handle: fs.FileHandle; hash: ReturnType<typeof createHash>; bytes: number } | undefined
  const fail = (code: string, message: string) => downloadError(jobId, code, message)
  const finish = async () => {
    if (current === undefined) return
    const { header, tempFile, handle, hash, bytes } = current
    if (bytes !== header.size) throw fail("DATA_LOSS", `adapter file ${showName(header.path)} ended after ${bytes} of its declared ${header.size} bytes`)
    const sha256 = hash.digest("hex")
    if (sha256 !== header.sha256) throw fail("DATA_LOSS", `adapter file ${showName(header.path)} arrived with sha256 ${sha256}, expected ${header.sha256}`)
    await handle.sync()
    current = undefined
    await handle.close()
    got.push({ path: header.path, size: header.size, sha256, tempFile })
  }
  // Errors reach the loop through the iterator; this keeps a late CANCELLED after a break from going unhandled.
  stream.on("error", () => {})
  const abort = () => stream.cancel()
  signal.addEventListener("abort", abort)
  try {
    for await (const chunk of stream as AsyncIterable<DownloadChunk>) {
      if (signal.aborted) throw fail("CANCELLED", "interrupted")
      if (chunk.part === "file" && chunk.file !== undefined) {
        await finish()
        const name = chunk.file.path
        const unsafe = unsafePathReason(name)
        if (unsafe !== undefined) throw fail("BAD_REPLY", `adapter file name ${showName(name)} refused: ${unsafe}`)
        if (seen.has(name)) throw fail("BAD_REPLY", `the trainer sent adapter file ${showName(name)} more than once`)
        const want = wanted.get(name)
        if (want === undefined) throw fail("BAD_REPLY", `the trainer sent adapter file ${showName(name)}, which the job did not declare`)
        if (String(want.size) !== chunk.file.size || want.sha256 !== chunk.file.sha256) {
          throw fail("BAD_REPLY", `adapter file ${showName(name)} was sent as ${chunk.file.size} bytes, sha256 ${showName(chunk.file.sha256)}, ` +
            `but declared as ${want.size} bytes, sha256 ${want.sha256}`)
        }
        seen.add(name)
        const tempFile = path.join(dir, `${temps.length}.part`)
        temps.push(tempFile)
        current = { header: want, tempFile, handle: await fs.open(tempFile, "wx", 0o644), hash: createHash("sha256"), bytes: 0 }
      } else if (chunk.part === "data" && chunk.data !== undefined) {
        if (current === undefined) throw fail("BAD_REPLY", "the trainer sent data before any file header")
        if (current.bytes + chunk.data.byteLength > current.header.size) {
          throw fail("DATA_LOSS", `adapter file ${showName(current.header.path)} sent more than its declared ${current.header.size} bytes`)
        }
        current.bytes += chunk.data.byteLength
        current.hash.update(chunk.data)
        await writeAll(current.handle, chunk.data)
      }
    }
    await finish()
    const missing = declared.find((f) => !seen.has(f.path))
    if (missing !== undefined) throw fail("DATA_LOSS", `adapter file ${showName(missing.path)} was declared but never sent`)
    return got
  } catch (e) {
    stream.cancel()
    await current?.handle.close().catch(() => {})
    await Promise.all(temps.map((t) => fs.rm(t, { force: true })))
    throw e instanceof TrainerError ? e : toError(`DownloadAdapter for job ${jobId}`)(e)
  } finally {
    signal.removeEventListener("abort", abort)
  }
}

const ProbeChatTemplateReply = Schema.Struct({ result_json: Schema.String })

/** The trainer sidecar over gRPC: deadlines on unary calls, keepalive on the channel, re-attaching event watch. */
export class TrainerClient extends Context.Service<TrainerClient, {
  version(): Effect.Effect<typeof VersionReply.Type, TrainerError>
  upload(kind: "dataset" | "adapter", name: string, files: ReadonlyArray<{ readonly path: string; readonly data: Uint8Array }>): Effect.Effect<typeof UploadReply.Type, TrainerError>
  startJob(request: StartJob): Effect.Effect<StartJobReply, TrainerError>
  /** Follows the job's events from `afterSeq`, re-attaching after a dropped stream, until done or failed. */
  watch(jobId: string, afterSeq: number, onEvent: (e: JobEvent) => Effect.Effect<void>): Effect.Effect<JobEvent, TrainerError>
  cancel(jobId: string): Effect.Effect<boolean, TrainerError>
  /**
   * Downloads the job's adapter into temp files in `dir` (which must exist), checked against `declared` (the job's
   * `done.files`): nothing the trainer names is used as a path, and a failure leaves no temp file behind.
   */
  download(jobId: string, declared: ReadonlyArray<FileHeader>, dir: string): Effect.Effect<Array<DownloadedFile>, TrainerError>
  /** The base model's chat template on `conversations` (src/domain/ChatLayout.ts), rendered where the trainer runs. */
  probeChatTemplate(baseModel: string, conversations: ReadonlyArray<ProbeConversation>): Effect.Effect<TemplateProbe, TrainerError>
}>()("dart/training/TrainerClient") {
  static readonly layer = (address: string) =>
    Layer.effect(
      TrainerClient,
      Effect.gen(function*() {
        const definition = protoLoader.loadSync("dart/trainer/v1/trainer.proto", {
          includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true
        })
        const pkg = grpc.loadPackageDefinition(definition) as unknown as { dart: { trainer: { v1: { Trainer: grpc.ServiceClientConstructor } } } }
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new pkg.dart.trainer.v1.Trainer(address, grpc.credentials.createInsecure(), {
            "grpc.keepalive_time_ms": 30_000,
            "grpc.keepalive_timeout_ms": 10_000,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.max_receive_message_length": 8 * 1024 * 1024
          })),
          (c) => Effect.sync(() => c.close())
        )
        // grpc-js builds the methods at run time from the proto; DART decodes every reply with Schema.
        const rpc = client as unknown as Record<string, (...args: Array<unknown>) => any>
        const call = <A>(method: string, request: unknown, seconds: number) =>
          Effect.callback<A, TrainerError>((resume) => {
            const c = rpc[method]!.call(client, request, { deadline: Date.now() + seconds * 1000 },
              (err: grpc.ServiceError | null, reply: A) => resume(err ? Effect.fail(toError(method)(err)) : Effect.succeed(reply)))
            return Effect.sync(() => c.cancel())
          })

        const version = () => call<unknown>("GetVersion", {}, 60).pipe(Effect.flatMap(decode(VersionReply, "GetVersion")))

        const upload = (kind: "dataset" | "adapter", name: string, files: ReadonlyArray<{ readonly path: string; readonly data: Uint8Array }>) =>
          Effect.callback<unknown, TrainerError>((resume) => {
            const stream = rpc.Upload!.call(client, { deadline: Date.now() + 600_000 }, (err: grpc.ServiceError | null, reply: unknown) =>
              resume(err ? Effect.fail(toError("Upload")(err)) : Effect.succeed(reply)))
            // Respect back-pressure: wait for 'drain' when write() says the buffer is full.
            const chunks = function*() {
              yield { header: { kind, name } }
              for (const f of files) {
                yield { file: { path: f.path, size: String(f.data.byteLength), sha256: createHash("sha256").update(f.data).digest("hex") } }
                for (let i = 0; i < f.data.byteLength; i += CHUNK) yield { data: Buffer.from(f.data.subarray(i, i + CHUNK)) }
              }
            }()
            const pump = () => {
              for (let next = chunks.next(); !next.done; next = chunks.next()) {
                if (!stream.write(next.value)) return void stream.once("drain", pump)
              }
              stream.end()
            }
            pump()
            return Effect.sync(() => stream.cancel())
          }).pipe(Effect.flatMap(decode(UploadReply, "Upload")))

        const startJob = (request: StartJob) =>
          call<unknown>("StartJob", { ...request, seed: String(request.seed) }, 300).pipe(Effect.flatMap(decode(StartJobReply, "StartJob")))

        const watchOnce = (jobId: string, afterSeq: number, onEvent: (e: JobEvent) => Effect.Effect<void>, last: { seq: number }) =>
          Effect.callback<JobEvent, TrainerError>((resume) => {
            // No deadline: a watch lasts as long as training; keepalive detects a dead peer.
            const stream = rpc.WatchJob!.call(client, { job_id: jobId, after_seq: String(afterSeq) })
            let terminal: JobEvent | undefined
            let chain: Promise<unknown> = Promise.resolve()
            stream.on("data", (raw: unknown) => {
              chain = chain.then(() =>
                Effect.runPromise(decode(JobEvent, "WatchJob")(raw).pipe(
                  Effect.tap((e) => {
                    last.seq = Number(e.seq)
                    if (e.kind === "done" || e.kind === "failed") terminal = e
                    return onEvent(e)
                  }),
                  Effect.catch((e: TrainerError) => Effect.sync(() => {
                    stream.cancel()
                    resume(Effect.fail(e))
                  }))
                )))
            })
            stream.on("error", (err: grpc.ServiceError) => void chain.then(() => resume(Effect.fail(toError("WatchJob")(err)))))
            stream.on("end", () =>
              void chain.then(() => resume(terminal ? Effect.succeed(terminal) : Effect.fail(new TrainerError({ code: "UNAVAILABLE", message: "WatchJob: stream ended before the job did" })))))
            return Effect.sync(() => stream.cancel())
          })

        const watch = (jobId: string, afterSeq: number, onEvent: (e: JobEvent) => Effect.Effect<void>) => {
          const last = { seq: afterSeq }
          return Effect.suspend(() => watchOnce(jobId, last.seq, onEvent, last)).pipe(
            Effect.retry({
              schedule: Schedule.exponential("500 millis").pipe(
                Schedule.jittered,
                Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(10))))
              ),
              times: 30,
              while: (e) => e.code === "UNAVAILABLE" || e.code === "INTERNAL" || e.code === "UNKNOWN"
            })
          )
        }

        const cancel = (jobId: string) => call<{ cancelled: boolean }>("CancelJob", { job_id: jobId }, 30).pipe(Effect.map((r) => r.cancelled === true))

        const download = (jobId: string, declared: ReadonlyArray<FileHeader>, dir: string) =>
          Effect.suspend(() => {
            const refused = checkDeclaredFiles(jobId, declared)
            if (refused !== undefined) return Effect.fail(refused)
            return Effect.callback<Array<DownloadedFile>, TrainerError>((resume) => {
              const controller = new AbortController()
              const stream = rpc.DownloadAdapter!.call(client, { job_id: jobId }, { deadline: Date.now() + 600_000 })
              const done = receiveAdapter(stream, jobId, declared, dir, controller.signal)
                .then((files) => resume(Effect.succeed(files)),
                  (e: unknown) => resume(Effect.fail(e instanceof TrainerError ? e : toError(`DownloadAdapter for job ${jobId}`)(e))))
              // Interruption waits for the temp files to be closed and removed, so none outlives the call.
              return Effect.promise(() => {
                controller.abort()
                return done
              })
            })
          })

        const probeChatTemplate = (baseModel: string, conversations: ReadonlyArray<ProbeConversation>) =>
          call<unknown>("ProbeChatTemplate", { base_model: baseModel, conversations_json: JSON.stringify({ conversations }) }, 300).pipe(
            Effect.flatMap(decode(ProbeChatTemplateReply, "ProbeChatTemplate")),
            Effect.flatMap((r) => decode(Schema.fromJsonString(TemplateProbe), "ProbeChatTemplate result_json")(r.result_json))
          )

        return TrainerClient.of({ version, upload, startJob, watch, cancel, download, probeChatTemplate })
      })
    )
}
