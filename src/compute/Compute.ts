import { Context, type Effect, type Scope, type Stream } from "effect"
import type { ProbeConversation, TemplateProbe } from "../domain/ChatLayout.ts"
import type { ComputeError } from "./ComputeError.ts"
import type { HubModelResult } from "./HubResult.ts"
import type { FleetHost, FleetPlacement } from "./Placement.ts"
import type { CopiedFile, RunningService, ServiceStatus } from "./ServiceSpec.ts"

/**
 * The compute port: what the stages, the plan and the preflight ask of the machines, whatever engine runs them
 * (Docker hosts today: src/compute/DockerCompute.ts). Workloads are described engine-neutrally (ServiceSpec), placed
 * over the fleet once (Placement.ts) and handed back as endpoints; nothing here names an engine.
 */

/** What one host says about itself before anything is started there. */
export interface HostProbe {
  /** How the host is reached, as the user wrote it (for messages). */
  readonly address: string
  /** The engine and its version, e.g. "Docker 26.1.5". */
  readonly engine: string
  /** GPUs usable by services there: a count, null when GPUs are available without a count. */
  readonly gpus: number | null
}

/** A replica's life as the engine sees it, for the caller's log and dispatch. */
export interface ReplicaEvent {
  readonly kind: "ready" | "restarted" | "lost"
  readonly service: string
  readonly host: string
  readonly endpoint: string
  readonly detail: string
}

export interface ComputeOptions {
  readonly runDir: string
  /** Leave started services running after the scope (`dart compute up`). */
  readonly keep?: boolean
  readonly healthTimeout?: import("effect").Duration.Input
  readonly pull?: boolean
}

export class Compute extends Context.Service<Compute, {
  /** The engine's name, for messages ("docker"). */
  readonly backend: string
  /** The configured hosts, in config order. */
  readonly hostNames: ReadonlyArray<string>
  /** Where every service goes; computed once per command (hosts whose GPUs are "all" are counted first). */
  readonly placement: () => Effect.Effect<FleetPlacement, ComputeError>
  /** The hosts as they are now: GPUs counted, those that do not answer marked unusable (what the placement is made from). */
  readonly fleetHosts: () => Effect.Effect<ReadonlyArray<FleetHost>>
  /** Every vLLM replica of the placement up and healthy for the caller's scope, in placement order. */
  readonly vllm: () => Effect.Effect<ReadonlyArray<RunningService>, ComputeError, Scope.Scope>
  /** One `/classify` server per named `audit.classifiers` entry (all when none are named), in config order. */
  readonly classifiers: (names?: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<RunningService>, ComputeError, Scope.Scope>
  /** The trainer sidecar with `training.gpus` devices; `endpoint` is host:port for gRPC. */
  readonly trainer: () => Effect.Effect<RunningService, ComputeError, Scope.Scope>
  /** Copy a local folder into the service as `{filesDir}/{name}`; returns that path inside the service. */
  readonly putAdapter: (service: RunningService, localDir: string, name: string) => Effect.Effect<{ readonly path: string; readonly files: ReadonlyArray<CopiedFile> }, ComputeError>
  /** Copy a file or folder out of the service into `localDir` (replaced whole). */
  readonly getPath: (service: RunningService, remotePath: string, localDir: string) => Effect.Effect<ReadonlyArray<CopiedFile>, ComputeError>
  /** Ready / restarted / lost, as the engine sees the services, for as long as the stream is read. */
  readonly replicaEvents: (services: ReadonlyArray<RunningService>) => Stream.Stream<ReplicaEvent>
  /** A local address reaching `port` of a service on `host` for the caller's scope (a tunnel on remote hosts). */
  readonly reach: (host: string, port: number) => Effect.Effect<string, ComputeError, Scope.Scope>
  /** Preflight of one host: reachable, engine, GPUs. */
  readonly probeHost: (host: string) => Effect.Effect<HostProbe, ComputeError>
  readonly imagePresent: (host: string, image: string) => Effect.Effect<boolean, ComputeError>
  /** Hub models readable from `host` with the token there is (or in its cache); null when the host cannot tell (no fetcher). */
  readonly checkHubModels: (host: string, ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<HubModelResult> | null, ComputeError>
  /** The base model's chat template rendered on `conversations` where the trainer would run (tiny models built first). */
  readonly probeChatTemplate: (conversations: ReadonlyArray<ProbeConversation>) => Effect.Effect<TemplateProbe, ComputeError>
  readonly status: () => Effect.Effect<ReadonlyArray<ServiceStatus>, ComputeError>
  /** Stop and remove every service of the experiment on every host, kept ones included. */
  readonly down: () => Effect.Effect<ReadonlyArray<string>, ComputeError>
  /** Remove the experiment's services whose owning process is gone, on every host that answers. */
  readonly removeOrphans: () => Effect.Effect<ReadonlyArray<string>, ComputeError>
}>()("dart/compute/Compute") {}
