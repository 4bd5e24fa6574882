/** InferManifest: `inferIdentity` (what a run's answers depend on) and `inferManifest` (its `manifest.json`). */
import { hashJson } from "../common/Hashing.ts"
import type { ChatLayout } from "../domain/ChatLayout.ts"
import type { Sampling } from "../serving/VllmClient.ts"
import type { CanaryResult } from "./Canary.ts"
import type { Arm } from "./InferencePlan.ts"
import type { ServerReport } from "./ServerScheduler.ts"

/**
 * Everything an answer depends on. Answers are keyed per run name, so a rerun must have the same identity (the stage
 * refuses otherwise) and its hash is the stage's inputs hash in the ledger. Key order is the manifest's.
 */
export const inferIdentity = (plan: {
  readonly task: string
  readonly promptVersion: string
  readonly policy: string
  readonly system: string
  readonly split: string
  /** Each item's id and the text it asks (a changed prompt is a changed item). */
  readonly items: ReadonlyArray<readonly [string, string]>
  readonly samples: number
  readonly arms: ReadonlyArray<Arm>
  readonly adapterShas: ReadonlyMap<string, string>
  readonly sampling: Sampling
  readonly constrained: boolean
  /** The base model's chat layout (src/domain/ChatLayout.ts); recorded only when it changes what is sent. */
  readonly layout?: ChatLayout
}) => ({
  task: plan.task,
  policy: plan.policy,
  system_prompt: plan.system,
  split: plan.split,
  prompt_version: plan.promptVersion,
  items_hash: hashJson(plan.items),
  samples: plan.samples,
  models: plan.arms.map((a) => ({ name: a.name, adapter_sha256: plan.adapterShas.get(a.name) ?? null })),
  sampling: plan.sampling,
  constrained: plan.constrained,
  ...(plan.layout === undefined || (plan.layout.system === "native" && plan.layout.stopTokenIds.length === 0)
    ? {}
    : { chat_layout: { system: plan.layout.system, stop_token_ids: plan.layout.stopTokenIds } })
})

/** This invocation's counts, for `this_run`. */
export interface InferStats {
  requests: number
  failed: number
  promptTokens: number
  completionTokens: number
  answeredBefore: number
}

export interface InferFailure {
  readonly key: string
  readonly server: string
  readonly reason: string
}

/** `manifest.json`: identity, how each model was served, the servers, the canary, the rows and this invocation. */
export const inferManifest = (run: {
  readonly runName: string
  readonly identity: ReturnType<typeof inferIdentity>
  readonly arms: ReadonlyArray<Arm>
  readonly adapterShas: ReadonlyMap<string, string>
  /** Empty when every answer was already there and no server was asked. */
  readonly servers: ReadonlyArray<ServerReport>
  readonly canary: Readonly<Record<string, CanaryResult>>
  readonly rows: { readonly complete: number; readonly total: number }
  readonly stats: InferStats
  readonly seconds: number
  readonly failures: ReadonlyArray<InferFailure>
}) => ({
  run_name: run.runName,
  identity: run.identity,
  models: run.arms.map((a) => ({
    name: a.name,
    adapter: a.adapter,
    adapter_sha256: run.adapterShas.get(a.name) ?? null,
    served_as: a.adapter === null ? run.servers[0]?.baseId ?? null : a.name
  })),
  key: "id|model|policy|sample",
  servers: run.servers.map((s) => ({ url: s.url, version: s.version, base_model: s.baseId, answered: s.answered, concurrency: s.concurrency })),
  canary: run.canary,
  rows: run.rows,
  this_run: {
    requests: run.stats.requests,
    failed: run.stats.failed,
    answered_before: run.stats.answeredBefore,
    prompt_tokens: run.stats.promptTokens,
    completion_tokens: run.stats.completionTokens,
    seconds: run.seconds
  },
  // The first hundred say enough about what went wrong; the rest are asked again on the next run anyway.
  failures: run.failures.slice(0, 100)
})
