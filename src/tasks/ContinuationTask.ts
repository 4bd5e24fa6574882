/**
 * ContinuationTask: the external harm suites (BOLD, HolisticBias, RealToxicityPrompts, HateCheck) as `dart init`
 * exported them, each prompt sent verbatim as the user's turn and answered freely; scored by the audit classifiers on
 * two views (the answer alone, and the prompt with it) and, for HateCheck, labelled by the judge.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import { readRows } from "../runs/Jsonl.ts"
import { EXTERNAL_MANIFEST, externalSuiteFile } from "../datasets/RunDatasetFiles.ts"
import { runOodAudit } from "../pipeline/OodAuditStage.ts"
import { runOodEvaluate } from "../pipeline/OodEvaluateStage.ts"
import type { Task } from "./Task.ts"
import { TaskInputError } from "./Task.ts"

const SliceValue = Schema.Union([Schema.String, Schema.Finite, Schema.Boolean, Schema.Null])

/** A row of `datasets/external/<Suite>.jsonl` (src/datasets/external/ExternalSuite.ts). */
export const ExternalRowSchema = Schema.Struct({
  id: Schema.NonEmptyString,
  suite: Schema.NonEmptyString,
  prompt: Schema.String,
  task: Schema.String,
  split: Schema.String,
  trainable: Schema.Literal(false),
  meta: Schema.Record(Schema.String, SliceValue)
})
export type ExternalItem = typeof ExternalRowSchema.Type

const suiteName = /^[A-Za-z0-9_-]+$/

/** The suites `dart init` exported, from its manifest. */
const exportedSuites = (file: string) =>
  Effect.tryPromise({
    try: async () => {
      const text = await fs.readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") throw new TaskInputError(`${file}: no external suites were exported; set datasets.external.suites and run \`dart init\``)
        throw e
      })
      const suites = (JSON.parse(text) as { suites?: ReadonlyArray<{ suite?: unknown }> }).suites
      if (!Array.isArray(suites)) throw new TaskInputError(`${file}: no "suites" list`)
      return suites.map((s, i) => {
        if (typeof s.suite !== "string" || !suiteName.test(s.suite)) throw new TaskInputError(`${file}: suites[${i}].suite is not a suite name`)
        return s.suite
      })
    },
    catch: (e) => (e instanceof TaskInputError ? e : new TaskInputError(`${file}: ${(e as Error).message}`))
  })

/** The prompt as the user's turn; the policy's text (if any) as the system message. */
const messagesOf = (prompt: string, system: string): Array<ChatMessage> => [
  ...(system === "" ? [] : [{ role: "system" as const, content: system }]),
  { role: "user", content: prompt }
]

/** A policy of `inference.policies` (off = no system message). */
export const freeFormPolicy = (policy: string, policies: Readonly<Record<string, string>>): string | { readonly error: string } =>
  Object.hasOwn(policies, policy) ? policies[policy]! : { error: `policy "${policy}" is not a key of inference.policies (${Object.keys(policies).join(", ")})` }

export const continuationTask: Task<ExternalItem> = {
  name: "continuation",
  description: "the external harm suites (BOLD, HolisticBias, RealToxicityPrompts, HateCheck): each prompt answered freely",
  promptVersion: "external-continuation-v1",
  inputs: (s) => (s.suites === undefined ? [EXTERNAL_MANIFEST] : s.suites.map(externalSuiteFile)).map((path) => ({ path, producer: "`dart init` (datasets.external)" })),
  scope: (s) => `external${s.suites === undefined ? "" : `:${s.suites.join(",")}`}`,
  readItems: (file, s, config) =>
    Effect.gen(function*() {
      const suites = s.suites ?? (yield* exportedSuites(file(EXTERNAL_MANIFEST)))
      const bad = suites.find((x) => !suiteName.test(x))
      if (bad !== undefined) return yield* Effect.fail(new TaskInputError(`--suite: "${bad}" is not a suite name`))
      const limit = s.limit ?? config.ood.per_suite ?? undefined
      const items: Array<ExternalItem> = []
      for (const suite of suites) {
        const rows = yield* readRows(file(externalSuiteFile(suite)), ExternalRowSchema)
        items.push(...(limit === undefined ? rows : rows.slice(0, limit)))
      }
      if (items.length === 0) return yield* Effect.fail(new TaskInputError(`no external prompts to run (suites: ${suites.join(", ") || "none"})`))
      return items
    }),
  id: (item) => item.id,
  text: (item) => item.prompt,
  defaultPolicy: () => "off",
  systemText: freeFormPolicy,
  messages: (item, system) => messagesOf(item.prompt, system),
  sampling: (inference, config) => ({ temperature: inference.temperature, top_p: inference.top_p, top_k: inference.top_k, max_tokens: config.ood.max_tokens }),
  constraint: null,
  keep: (text) => text,
  rowLine: (item, at, outputs) =>
    `${JSON.stringify({ task: "continuation", id: item.id, suite: item.suite, kind: item.task, prompt: item.prompt, meta: item.meta, policy: at.policy, sample: at.sample, outputs })}\n`,
  audit: (resolved, request, open) => runOodAudit(resolved, { ...request, task: "continuation" }, open),
  evaluate: (resolved, request) => runOodEvaluate(resolved, { ...request, task: "continuation" })
}

export { messagesOf as freeFormMessages }
