import { Console, Effect, Layer, Option, Redacted, type Scope, Stream } from "effect"
import { Compute } from "../compute/Compute.ts"
import type { ComputeError } from "../compute/ComputeError.ts"
import type { RunningService } from "../compute/ServiceSpec.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { apiKeyFromEnv } from "../config/Secrets.ts"
import { AdapterError, AdapterStore, hashAdapter } from "../serving/AdapterStore.ts"
import type { ClassifierSpec } from "../serving/ClassifierClient.ts"
import { VllmClient } from "../serving/VllmClient.ts"
import { classifierEndpoint, classifierSpec, classifiersToStart, vllmEndpoints } from "./ServicePlacement.ts"

/** The servers an inference stage talks to, and the client and adapter store that go with them. */
export interface VllmAccess {
  readonly servers: ReadonlyArray<string>
  readonly layer: Layer.Layer<VllmClient | AdapterStore>
  /** The replicas dart started, in `servers` order; empty for configured endpoints. */
  readonly services: ReadonlyArray<RunningService>
}

/**
 * Opens the vLLM servers for the caller's scope: the configured endpoints (adapters read where they are), or, when
 * none is configured, every replica the command's compute places over the fleet (adapters published to each by the
 * compute port, checksummed, content-addressed), removed when the scope closes.
 */
export const openVllmServers = (resolved: ResolvedConfig, _runDir: string): Effect.Effect<VllmAccess, ComputeError, Scope.Scope | Compute> =>
  Effect.gen(function*() {
    // The server's --api-key, when it has one: from the environment only, never from the config.
    const apiKey = Option.getOrUndefined(yield* apiKeyFromEnv("VLLM_API_KEY"))
    const client = VllmClient.layer(apiKey === undefined ? {} : { apiKey: Redacted.value(apiKey) })
    const configured = vllmEndpoints(resolved.config)
    if (configured.length > 0) return { servers: configured, layer: Layer.merge(client, AdapterStore.sameFilesystem()), services: [] }
    const compute = yield* Compute
    const services = yield* compute.vllm()
    for (const s of services) yield* Console.error(`vLLM replica ${s.spec.name} on ${s.host} at ${s.endpoint}${s.reused ? " (reused)" : ""}`)
    // The engine's word on each replica (lost, restarted) beside the dispatcher's own health checks.
    yield* Effect.forkScoped(Stream.runForEach(compute.replicaEvents(services), (e) =>
      e.kind === "ready" ? Effect.void : Console.error(`vLLM replica ${e.service} on ${e.host}: ${e.kind} (${e.detail})`)))
    const byEndpoint = new Map(services.map((s) => [s.endpoint, s]))
    const store = AdapterStore.of({
      place: (endpoint, name, localDir) =>
        Effect.gen(function*() {
          const service = byEndpoint.get(endpoint)
          if (service === undefined) return yield* new AdapterError({ message: `${endpoint} is not a replica dart started` })
          const sha256 = yield* hashAdapter(localDir)
          // A content-addressed folder: retraining into the same local folder never changes what the server re-reads.
          const placed = yield* compute.putAdapter(service, localDir, `${name}-${sha256.slice(0, 12)}`).pipe(
            Effect.mapError((e) => new AdapterError({ message: `${localDir} → ${service.spec.name} on ${service.host}: ${e.message}` }))
          )
          return { serverPath: placed.path, sha256 }
        })
    })
    return { servers: services.map((s) => s.endpoint), layer: Layer.merge(client, Layer.succeed(AdapterStore, store)), services }
  })

/** Runs `use` with the vLLM servers of `openVllmServers`, closed when `use` ends. */
export const withVllmServers = <A, E, R>(
  resolved: ResolvedConfig,
  runDir: string,
  use: (servers: ReadonlyArray<string>) => Effect.Effect<A, E, R>
) => Effect.scoped(Effect.flatMap(openVllmServers(resolved, runDir), (access) => use(access.servers).pipe(Effect.provide(access.layer))))

/**
 * Every audit classifier with the endpoint that serves it: the configured one, or a `/classify` server the compute
 * layer starts for the caller's scope (only for classifiers without an endpoint).
 */
export const openClassifiers = (resolved: ResolvedConfig, _runDir: string): Effect.Effect<ReadonlyArray<ClassifierSpec>, ComputeError, Scope.Scope | Compute> =>
  Effect.gen(function*() {
    const { config } = resolved
    const toStart = classifiersToStart(config)
    const started = new Map<string, string>()
    if (toStart.length > 0) {
      const compute = yield* Compute
      const services = yield* compute.classifiers(toStart.map((c) => c.name))
      yield* Console.error(`classifiers on ${services[0]?.host ?? "-"}: ${services.map((s) => `${s.spec.name} at ${s.endpoint}`).join(", ")}`)
      toStart.forEach((c, i) => started.set(c.name, services[i]!.endpoint))
    }
    return config.audit.classifiers.map((c) => classifierSpec(c, classifierEndpoint(config, c) ?? started.get(c.name)!))
  })

/** Runs `use` with the classifiers of `openClassifiers`, removed when `use` ends. */
export const withClassifiers = <A, E, R>(
  resolved: ResolvedConfig,
  runDir: string,
  use: (classifiers: ReadonlyArray<ClassifierSpec>) => Effect.Effect<A, E, R>
) => Effect.scoped(Effect.flatMap(openClassifiers(resolved, runDir), use))
