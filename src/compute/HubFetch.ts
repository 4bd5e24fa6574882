import { Effect, Option, Schema } from "effect"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { formatDuration } from "../common/Progress.ts"
import { describeHubResult, type HubModelResult } from "./HubResult.ts"
import { ComputeError } from "./ComputeError.ts"
import { HF_CACHE_TARGET, hfCacheMount, trainerSpec } from "./ContainerSpecs.ts"
import { runTask } from "./DockerBackend.ts"
import { type DockerHost, redactedEnv } from "./DockerHost.ts"

/**
 * Hub models reach a host's HF cache through a throwaway task in the trainer image (`dart_trainer.hub_fetch`):
 * `check` before any paid work (the id exists, the token may read it, it has safetensors weights), `download`
 * before the first service that needs them. Every service then runs offline against that cache.
 */

const Progress = Schema.Struct({
  event: Schema.Literal("progress"),
  repo: Schema.String,
  done_bytes: Schema.Number,
  total_bytes: Schema.Number,
  files_done: Schema.Number,
  files_total: Schema.Number
})
const Ok = Schema.Struct({
  event: Schema.Literal("ok"),
  repo: Schema.String,
  revision: Schema.optionalKey(Schema.NullOr(Schema.String)),
  path: Schema.optionalKey(Schema.NullOr(Schema.String)),
  bytes: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  cached: Schema.optionalKey(Schema.Boolean)
})
const Failed = Schema.Struct({
  event: Schema.Literal("error"),
  repo: Schema.String,
  kind: Schema.Literals(["gated", "unauthorized", "not_found", "revision_not_found", "no_weights", "network", "other"]),
  message: Schema.String
})
const FetchEvent = Schema.Union([Progress, Ok, Failed])
const decodeEvent = Schema.decodeUnknownOption(Schema.fromJsonString(FetchEvent))

const gib = (n: number) => `${(n / 2 ** 30).toFixed(n < 2 ** 30 ? 2 : 1)} GiB`

export type { HubModelResult } from "./HubResult.ts"
export { describeHubResult } from "./HubResult.ts"

/** The task's JSON lines, in order; other output (library logs) is ignored. */
export const parseFetchOutput = (out: string): Array<typeof FetchEvent.Type> =>
  out.split(/\r?\n/).flatMap((l) => {
    const t = l.trim()
    return t.startsWith("{") ? Option.toArray(decodeEvent(t)) : []
  })

const resultsOf = (ids: ReadonlyArray<string>, events: ReadonlyArray<typeof FetchEvent.Type>): Array<HubModelResult> =>
  ids.map((repo): HubModelResult => {
    const last = events.filter((e) => e.repo === repo && e.event !== "progress").at(-1)
    if (last === undefined) return { repo, ok: false, kind: "other", message: `${repo}: the fetch task said nothing about it` }
    return last.event === "ok"
      ? { repo, ok: true, cached: last.cached ?? false, bytes: last.bytes ?? null, revision: last.revision ?? null }
      : { repo, ok: false, kind: (last as typeof Failed.Type).kind, message: (last as typeof Failed.Type).message }
  })

/**
 * Runs the fetch task for `ids` on `host` and returns one result per id. `offline`: look only in the cache (a host
 * without a route to the hub, where the user filled the cache by hand).
 */
export const runHubFetch = (
  host: DockerHost,
  hostConfig: ExperimentConfig["compute"]["hosts"][number],
  config: ExperimentConfig,
  ids: ReadonlyArray<string>,
  mode: "check" | "download",
  options: { readonly offline?: boolean; readonly print?: (line: string) => void } = {}
) =>
  Effect.gen(function*() {
    if (ids.length === 0) return []
    const image = trainerSpec(config, hostConfig, host.listenHost).image
    const token = redactedEnv("HF_TOKEN")
    const endpoint = process.env.HF_ENDPOINT
    const mount = hfCacheMount(config)
    let lastPrint = 0
    const started = Date.now()
    const { out } = yield* runTask(host, config.run.exp_id, `hub-${mode}`, {
      image,
      cmd: ["python3", "-m", "dart_trainer.hub_fetch", mode === "check" ? "--check" : "--download", ...ids],
      binds: mount.binds,
      volumes: mount.volumes,
      env: {
        HF_HOME: HF_CACHE_TARGET,
        HF_HUB_OFFLINE: options.offline === true ? "1" : "0",
        HF_HUB_DISABLE_PROGRESS_BARS: "1",
        HF_HUB_DISABLE_TELEMETRY: "1",
        PYTHONUNBUFFERED: "1",
        // A mirror or a stand-in hub; the hub's own address otherwise.
        ...(endpoint === undefined || endpoint === "" ? {} : { HF_ENDPOINT: endpoint })
      },
      secretEnv: token === undefined ? {} : { HF_TOKEN: token },
      user: undefined,
      network: options.offline === true ? "none" : "host",
      onLine: (line) => {
        const e = line.trim().startsWith("{") ? decodeEvent(line.trim()) : Option.none()
        if (Option.isNone(e) || e.value.event !== "progress" || options.print === undefined) return
        const p = e.value
        const now = Date.now()
        if (now - lastPrint < 2000 && p.done_bytes < p.total_bytes) return
        lastPrint = now
        const rate = p.done_bytes / Math.max(0.001, (now - started) / 1000)
        const eta = rate > 0 ? (p.total_bytes - p.done_bytes) / rate : Number.POSITIVE_INFINITY
        options.print(`fetch ${p.repo} on ${host.name}: ${gib(p.done_bytes)}/${gib(p.total_bytes)} (${p.files_done}/${p.files_total} files) ` +
          `${(rate / 2 ** 20).toFixed(1)} MiB/s ETA ${formatDuration(eta)}`)
      }
    }, [2])
    return resultsOf(ids, parseFetchOutput(out))
  })

/** Fails with every model that could not be fetched, named with what to do. */
export const requireFetched = (hostName: string, results: ReadonlyArray<HubModelResult>) => {
  const bad = results.filter((r) => !r.ok)
  return bad.length === 0 ? Effect.void : Effect.fail(new ComputeError({
    host: hostName,
    message: `hub model${bad.length === 1 ? "" : "s"} not available: ${bad.map(describeHubResult).join("; ")}`
  }))
}

/**
 * `mode` against the hub, then, for models the host cannot reach the hub for, a look in the cache alone (a host
 * without a route to the hub, whose cache the user filled by hand): one result per id.
 */
export const fetchHubModels = (
  host: DockerHost,
  hostConfig: ExperimentConfig["compute"]["hosts"][number],
  config: ExperimentConfig,
  ids: ReadonlyArray<string>,
  mode: "check" | "download",
  options: { readonly print?: (line: string) => void } = {}
) =>
  Effect.gen(function*() {
    const online = yield* runHubFetch(host, hostConfig, config, ids, mode, options)
    const unreachable = online.filter((r) => !r.ok && r.kind === "network").map((r) => r.repo)
    if (unreachable.length === 0) return online
    const cached = yield* runHubFetch(host, hostConfig, config, unreachable, "check", { offline: true })
    return online.map((r) => cached.find((c) => c.repo === r.repo && c.ok) ?? r)
  })
