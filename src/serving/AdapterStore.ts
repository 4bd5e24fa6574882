import { Context, Effect, Layer, Schema } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { sha256File } from "../common/Hashing.ts"

export class AdapterError extends Schema.TaggedError<AdapterError>()("AdapterError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** The files vLLM loads (docs/serving.md §4): anything else in the folder is not shipped. */
export const adapterFiles = ["adapter_config.json", "adapter_model.safetensors"] as const

export interface PlacedAdapter {
  /** Where the server reads it (`lora_path`). */
  readonly serverPath: string
  /** sha256 over the adapter's files (name, then content hash, in fixed order). */
  readonly sha256: string
}

/**
 * sha256 of an adapter folder: each shipped file's name and content hash, in order. Also checks the
 * config is one vLLM accepts at all, so a bad adapter fails here with its path, not on the server.
 */
export const hashAdapter = (dir: string): Effect.Effect<string, AdapterError> =>
  Effect.tryPromise({
    try: async () => {
      const h = createHash("sha256")
      for (const f of adapterFiles) {
        const { sha256 } = await sha256File(path.join(dir, f)).catch((e: NodeJS.ErrnoException) => {
          if (e.code === "ENOENT") throw new AdapterError({ message: `${path.join(dir, f)} is missing (an adapter folder holds ${adapterFiles.join(" + ")})`, cause: e })
          throw e
        })
        h.update(`${f}\n${sha256}\n`)
      }
      const config = JSON.parse(await fs.readFile(path.join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>
      const modulesToSave = config.modules_to_save
      if (Array.isArray(modulesToSave) && modulesToSave.length > 0) throw new AdapterError({ message: `${dir}/adapter_config.json: modules_to_save is set; vLLM rejects such adapters` })
      if (config.use_dora === true) throw new AdapterError({ message: `${dir}/adapter_config.json: DoRA adapters are not supported by vLLM` })
      return h.digest("hex")
    },
    catch: (e) => (e instanceof AdapterError ? e : new AdapterError({ message: e instanceof Error ? e.message : String(e), cause: e }))
  })

/**
 * Puts adapter folders where a vLLM server can read them. The same-filesystem implementation here
 * serves a server on this machine (or a shared mount); the Docker implementation packs the folder
 * into a put-archive under the container's adapter directory and returns that path.
 */
export class AdapterStore extends Context.Service<AdapterStore, {
  /** Places `localDir` under `name` on the server behind `endpoint`; idempotent for the same content. */
  place(endpoint: string, name: string, localDir: string): Effect.Effect<PlacedAdapter, AdapterError>
}>()("dart/serving/AdapterStore") {
  /**
   * Same filesystem: the server reads the folder where it is. With `stagingDir`, a checksummed copy
   * is made there first (`NAME-SHA12/`), so retraining into the same folder never changes what a
   * running server re-reads from disk (vLLM re-reads evicted adapters from `lora_path`).
   */
  static readonly sameFilesystem = (stagingDir?: string) =>
    Layer.succeed(AdapterStore, AdapterStore.of({
      place: (_endpoint, name, localDir) =>
        Effect.gen(function*() {
          const source = path.resolve(localDir)
          const sha256 = yield* hashAdapter(source)
          if (stagingDir === undefined) return { serverPath: source, sha256 }
          const target = path.resolve(stagingDir, `${name}-${sha256.slice(0, 12)}`)
          const copied = yield* hashAdapter(target).pipe(Effect.orElseSucceed(() => ""))
          if (copied === sha256) return { serverPath: target, sha256 }
          yield* Effect.tryPromise({
            try: async () => {
              const tmp = `${target}.${process.pid}.tmp`
              await fs.rm(tmp, { recursive: true, force: true })
              await fs.mkdir(tmp, { recursive: true })
              for (const f of adapterFiles) await fs.copyFile(path.join(source, f), path.join(tmp, f))
              await fs.rm(target, { recursive: true, force: true })
              await fs.rename(tmp, target)
            },
            catch: (e) => new AdapterError({ message: `copy ${source} → ${target}: ${e instanceof Error ? e.message : String(e)}`, cause: e })
          })
          const check = yield* hashAdapter(target)
          if (check !== sha256) return yield* new AdapterError({ message: `copy of ${source} at ${target} does not match its checksum` })
          return { serverPath: target, sha256 }
        })
    }))
}
