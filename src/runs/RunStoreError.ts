import { Schema } from "effect"

/** Any failure reading or writing run artifacts; `path` is what the user should look at, `cause` the error beneath (for DART_DEBUG). */
export class RunStoreError extends Schema.TaggedError<RunStoreError>()("RunStoreError", {
  path: Schema.String,
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

export const ioError = (path: string, what: string) => (cause: unknown) =>
  new RunStoreError({ path, message: `${path}: ${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
