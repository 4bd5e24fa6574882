import type { Redacted } from "effect"

/** What a DART service needs from any backend (Docker today; Slurm or Kubernetes later start the same specs). */
export type ServiceRole = "vllm" | "classifier" | "trainer"

export interface HealthCheck {
  /** Command run inside the service, exit 0 = healthy (Docker's CMD-SHELL form). */
  readonly shell: string
  readonly intervalS: number
  readonly timeoutS: number
  readonly startPeriodS: number
  readonly retries: number
}

export interface ServiceSpec {
  readonly role: ServiceRole
  /** Unique within an experiment: `vllm`, `classifier-toxicity`, `trainer`. */
  readonly name: string
  readonly image: string
  /** Replaces the image's entrypoint when set. */
  readonly entrypoint?: ReadonlyArray<string> | undefined
  readonly cmd: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
  /** Secrets: only in the create body, never in the spec hash, labels, logs or URLs. */
  readonly secretEnv: Readonly<Record<string, Redacted.Redacted<string>>>
  /** The port it listens on (host networking, on the host's listen address). */
  readonly port: number
  /** Scheme of its endpoint: vLLM and classifiers speak HTTP, the trainer gRPC. */
  readonly protocol: "http" | "grpc"
  readonly health: HealthCheck
  /** "all", device ids, or null for none. */
  readonly gpus: "all" | ReadonlyArray<string> | null
  readonly shmBytes: number | null
  readonly ipcHost: boolean
  readonly volumes: ReadonlyArray<{ readonly name: string; readonly target: string }>
  readonly binds: ReadonlyArray<{ readonly source: string; readonly target: string; readonly readOnly: boolean }>
  /** Folder inside the service where `putDirectory` places files (adapters, datasets). */
  readonly filesDir: string
  /** Hub model ids the service reads from the host's HF cache, offline: fetched into it before the service starts. */
  readonly hubModels: ReadonlyArray<string>
}

/** A started (or reused) service. */
export interface RunningService {
  readonly spec: ServiceSpec
  readonly host: string
  readonly id: string
  /** http://host:port (HTTP services) or host:port (gRPC), reachable from this process (an ssh tunnel when remote). */
  readonly endpoint: string
  readonly reused: boolean
}

export interface ServiceStatus {
  readonly host: string
  readonly name: string
  readonly role: string
  readonly id: string
  readonly image: string
  readonly state: string
  readonly health: string
  readonly gpus: string
  readonly owner: string
  readonly startedAt: string
}

export interface CopiedFile {
  readonly path: string
  readonly size: number
  readonly sha256: string
}
