import * as grpc from "@grpc/grpc-js"
import * as protoLoader from "@grpc/proto-loader"
import { createHash } from "node:crypto"
import * as path from "node:path"

/**
 * A loopback stand-in for the trainer sidecar (proto/dart/trainer/v1/trainer.proto) that says what a test tells it:
 * every job finishes at once, and DownloadAdapter sends whatever file names, sizes and bytes the job's plan holds,
 * true or not. It honours back-pressure and stops when the client cancels, and records what it sent, so a test can
 * tell how far a download ran before DART gave up on it.
 */

export interface FileHeader {
  readonly path: string
  readonly size: number
  readonly sha256: string
}

/** One file as DownloadAdapter sends it: a header (true or not), then the chunks (made when sent, never all held). */
export interface SentFile {
  readonly header: FileHeader
  readonly chunks: () => Iterable<Uint8Array>
}

export interface AdapterPlan {
  /** What the job's `done` event lists in `files`. */
  readonly declared: ReadonlyArray<FileHeader>
  /** What DownloadAdapter streams, in order. */
  readonly sent: ReadonlyArray<SentFile>
}

export interface DownloadRecord {
  readonly jobId: string
  readonly startedAt: number
  endedAt: number | undefined
  bytesSent: number
  cancelled: boolean
}

const CHUNK = 64 * 1024

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex")

function* slices(data: Uint8Array, size = CHUNK): Iterable<Uint8Array> {
  for (let i = 0; i < data.byteLength; i += size) yield data.subarray(i, i + size)
}

/** A file sent as it is, its header true. */
export const honestFile = (name: string, data: Uint8Array | string): SentFile => {
  const bytes = typeof data === "string" ? Buffer.from(data) : data
  return { header: { path: name, size: bytes.byteLength, sha256: sha256(bytes) }, chunks: () => slices(bytes) }
}

/** The chunks of a deterministic `size`-byte file, made one at a time (a 1 GB adapter is never held). */
function* generated(size: number, seed: number): Iterable<Uint8Array> {
  const block = Buffer.alloc(CHUNK)
  for (let offset = 0, n = 0; offset < size; offset += CHUNK, n++) {
    // A cheap pattern that differs per chunk, so a reordered or repeated chunk changes the sha256.
    block.fill((seed + n) & 0xff)
    block.writeUInt32BE(n, 0)
    yield block.subarray(0, Math.min(CHUNK, size - offset))
  }
}

/** A large file generated on the fly; its sha256 is computed by generating it once up front. */
export const generatedFile = (name: string, size: number, seed = 7): SentFile => {
  const hash = createHash("sha256")
  for (const c of generated(size, seed)) hash.update(c)
  return { header: { path: name, size, sha256: hash.digest("hex") }, chunks: () => generated(size, seed) }
}

/** The two files of a PEFT adapter, small and honest. */
export const adapterFiles = (tag = "x"): Array<SentFile> => [
  honestFile("adapter_config.json", JSON.stringify({ peft_type: "LORA", r: 8, lora_alpha: 16, tag })),
  honestFile("adapter_model.safetensors", Buffer.alloc(200_000, tag))
]

export const startHostileTrainer = async (plan: (jobId: string) => AdapterPlan) => {
  const definition = protoLoader.loadSync("dart/trainer/v1/trainer.proto", {
    includeDirs: [path.resolve("proto")], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true
  })
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { dart: { trainer: { v1: { Trainer: grpc.ServiceClientConstructor } } } }
  const jobs: Array<string> = []
  const downloads: Array<DownloadRecord> = []
  const server = new grpc.Server({ "grpc.max_receive_message_length": 8 * 1024 * 1024 })

  server.addService(pkg.dart.trainer.v1.Trainer.service, {
    GetVersion: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      callback(null, { protocol: "dart.trainer.v1", server_version: "hostile-0", libraries: {}, device: "cpu", max_lora_rank: 64 }),
    Upload: (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      call.on("data", () => {})
      call.on("end", () => callback(null, { id: `bundle-${jobs.length}`, files: [], rows: 16 }))
    },
    StartJob: (call: grpc.ServerUnaryCall<{ job_id: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      jobs.push(call.request.job_id)
      callback(null, { job_id: call.request.job_id, resumed: false, resumed_from_step: "0", train_rows: 15, eval_rows: 1, dropped_too_long: 0, dropped_ids: [] })
    },
    WatchJob: (call: grpc.ServerWritableStream<{ job_id: string }, unknown>) => {
      const { declared } = plan(call.request.job_id)
      call.write({ seq: "1", started: { total_steps: "1", start_step: "0", device: "cpu" } })
      call.write({
        seq: "2",
        done: { global_step: "1", train_loss: 0.5, best_eval_loss: 0.25, validation: { rank: "8" },
          files: declared.map((f) => ({ path: f.path, size: String(f.size), sha256: f.sha256 })) }
      })
      call.end()
    },
    CancelJob: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, { cancelled: true }),
    // Honest about the template: these tests are about what it sends back after training.
    ProbeChatTemplate: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      callback(null, {
        result_json: JSON.stringify({
          layout: "native", reason: "the template renders the system message", conversations: [], template_sha256: null, bos_token: null,
          template_adds_bos: false, double_bos: false, eos_token: null, stop_token_ids: [], end_of_turn: null, end_of_turn_id: null,
          end_of_turn_stops: true, pad_token: null, pad_plan: "own"
        })
      }),
    DownloadAdapter: (call: grpc.ServerWritableStream<{ job_id: string }, unknown>) => {
      const record: DownloadRecord = { jobId: call.request.job_id, startedAt: Date.now(), endedAt: undefined, bytesSent: 0, cancelled: false }
      downloads.push(record)
      call.on("cancelled", () => (record.cancelled = true))
      const parts = function*() {
        for (const f of plan(call.request.job_id).sent) {
          yield { file: { path: f.header.path, size: String(f.header.size), sha256: f.header.sha256 } }
          for (const c of f.chunks()) yield { data: Buffer.from(c) }
        }
      }()
      const pump = () => {
        for (let next = parts.next(); !next.done; next = parts.next()) {
          if (record.cancelled) return
          if (next.value.data !== undefined) record.bytesSent += next.value.data.byteLength
          if (!call.write(next.value)) return void call.once("drain", pump)
        }
        record.endedAt = Date.now()
        call.end()
      }
      pump()
    }
  })

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
  return {
    address: `127.0.0.1:${port}`,
    /** Job ids in the order StartJob received them. */
    jobs,
    downloads,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()))
  }
}
