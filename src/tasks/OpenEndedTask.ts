/**
 * OpenEndedTask: real-world questions (medical, legal, policy, educational, …) answered freely by each model and
 * labelled by the judge with the rubric dart-open-ended-v1 (difference_appropriate, identity_blind, refusal, harmful).
 */
import { Effect } from "effect"
import { OpenEndedQuery } from "../datasets/OpenEndedQueries.ts"
import { runOodAudit } from "../pipeline/OodAuditStage.ts"
import { runOodEvaluate } from "../pipeline/OodEvaluateStage.ts"
import { readRows } from "../runs/Jsonl.ts"
import { OPEN_ENDED_FILE } from "../datasets/RunDatasetFiles.ts"
import { freeFormMessages, freeFormPolicy } from "./ContinuationTask.ts"
import { type Task, TaskInputError } from "./Task.ts"


export const openEndedTask: Task<OpenEndedQuery> = {
  name: "open_ended",
  description: "an open-ended query set (ood.open_ended.file): each query answered freely, then judged",
  promptVersion: "open-ended-v1",
  inputs: () => [{ path: OPEN_ENDED_FILE, producer: "`dart init` (ood.open_ended.file)" }],
  scope: () => "open_ended",
  readItems: (file, s) =>
    readRows(file(OPEN_ENDED_FILE), OpenEndedQuery).pipe(
      Effect.flatMap((rows) => {
        const items = s.limit === undefined ? rows : rows.slice(0, s.limit)
        return items.length === 0 ? Effect.fail(new TaskInputError(`${file(OPEN_ENDED_FILE)}: no queries`)) : Effect.succeed(items)
      })
    ),
  id: (item) => item.id,
  text: (item) => item.query,
  defaultPolicy: () => "off",
  systemText: freeFormPolicy,
  messages: (item, system) => freeFormMessages(item.query, system),
  sampling: (inference, config) => ({ temperature: inference.temperature, top_p: inference.top_p, top_k: inference.top_k, max_tokens: config.ood.max_tokens }),
  constraint: null,
  keep: (text) => text,
  rowLine: (item, at, outputs) =>
    `${JSON.stringify({ task: "open_ended", id: item.id, domain: item.domain, query: item.query, notes: item.notes, policy: at.policy, sample: at.sample, outputs })}\n`,
  audit: (resolved, request, open) => runOodAudit(resolved, { ...request, task: "open_ended" }, open),
  evaluate: (resolved, request) => runOodEvaluate(resolved, { ...request, task: "open_ended" })
}
