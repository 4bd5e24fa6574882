import * as grpc from "@grpc/grpc-js"
import * as protoLoader from "@grpc/proto-loader"
import { createHash } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Context, Duration, Effect, Layer, Schedule, Schema } from "effect"

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
  started: Schema.optionalKey(Schema.NullOr(Schema.Struct({ total_steps: Num, start_step: Num, device: Schema.String }))),
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
}

export interface DownloadedFile {
  readonly path: string
  readonly data: Uint8Array
  readonly sha256: string
}

/** The trainer sidecar over gRPC: deadlines on unary calls, keepalive on the channel, re-attaching event watch. */
export class TrainerClient extends Context.Service<TrainerClient, {
  version(): Effect.Effect<typeof VersionReply.Type, TrainerError>
  upload(kind: "dataset" | "adapter", name: string, files: ReadonlyArray<{ readonly path: string; readonly data: Uint8Array }>): Effect.Effect<typeof UploadReply.Type, TrainerError>
  startJob(request: StartJob): Effect.Effect<StartJobReply, TrainerError>
  /** Follows the job's events from `afterSeq`, re-attaching after a dropped stream, until done or failed. */
  watch(jobId: string, afterSeq: number, onEvent: (e: JobEvent) => Effect.Effect<void>): Effect.Effect<JobEvent, TrainerError>
  cancel(jobId: string): Effect.Effect<boolean, TrainerError>
  download(jobId: string): Effect.Effect<Array<DownloadedFile>, TrainerError>
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

        const download = (jobId: string) =>
          Effect.callback<Array<DownloadedFile>, TrainerError>((resume) => {
            const stream = rpc.DownloadAdapter!.call(client, { job_id: jobId }, { deadline: Date.now() + 600_000 })
            const files: Array<{ header: FileHeader; parts: Array<Buffer> }> = []
            stream.on("data", (chunk: { part: string; file?: { path: string; size: string; sha256: string }; data?: Buffer }) => {
              if (chunk.part === "file" && chunk.file) files.push({ header: { path: chunk.file.path, size: Number(chunk.file.size), sha256: chunk.file.sha256 }, parts: [] })
              else if (chunk.part === "data" && chunk.data) files[files.length - 1]?.parts.push(chunk.data)
            })
            stream.on("error", (err: grpc.ServiceError) => resume(Effect.fail(toError("DownloadAdapter")(err))))
            stream.on("end", () => {
              const out: Array<DownloadedFile> = []
              for (const f of files) {
                const data = Buffer.concat(f.parts)
                const sha256 = createHash("sha256").update(data).digest("hex")
                if (sha256 !== f.header.sha256 || data.byteLength !== f.header.size) {
                  return resume(Effect.fail(new TrainerError({ code: "DATA_LOSS", message: `DownloadAdapter: ${f.header.path} arrived with sha256 ${sha256}, expected ${f.header.sha256}` })))
                }
                out.push({ path: f.header.path, data, sha256 })
              }
              resume(Effect.succeed(out))
            })
            return Effect.sync(() => stream.cancel())
          })

        return TrainerClient.of({ version, upload, startJob, watch, cancel, download })
      })
    )
}
