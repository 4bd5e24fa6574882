import { Schema } from "effect"

export const OutputRecord = Schema.Struct({
  path: Schema.String,
  sha256: Schema.String,
  bytes: Schema.Int
})
export type OutputRecord = typeof OutputRecord.Type

/** `interrupted`: stopped by SIGINT/SIGTERM, or found `running` with no live lock owner (killed). */
export const StageStatus = Schema.Literals(["running", "done", "failed", "stopped", "interrupted"])
export type StageStatus = typeof StageStatus.Type

/** One stage of the pipeline as the ledger records it; `inputs_hash` decides whether it must run again. */
export const StageRecord = Schema.Struct({
  status: StageStatus,
  inputs_hash: Schema.String,
  started_at: Schema.String,
  finished_at: Schema.NullOr(Schema.String),
  outputs: Schema.Array(OutputRecord),
  error: Schema.NullOr(Schema.String),
  runs: Schema.Int
})
export type StageRecord = typeof StageRecord.Type

export const Manifest = Schema.Struct({
  schema_version: Schema.Literal(1),
  exp_id: Schema.String,
  config_hash: Schema.String,
  tool_version: Schema.String,
  git_commit: Schema.NullOr(Schema.String),
  node_version: Schema.String,
  created_at: Schema.String,
  stages: Schema.Record(Schema.String, StageRecord),
  /** How the base model's conversations are laid out (chat_layout.json holds the probe's whole answer). */
  chat_layout: Schema.optionalKey(Schema.Struct({ base: Schema.String, system: Schema.Literals(["native", "folded"]), reason: Schema.String, stop_token_ids: Schema.Array(Schema.Int) }))
})
export type Manifest = typeof Manifest.Type
