import { Schema } from "effect"

/** Any failure reading or writing run artifacts; `path` is what the user should look at. */
export class RunStoreError extends Schema.TaggedError<RunStoreError>()("RunStoreError", {
  path: Schema.String,
  message: Schema.String
}) {}

export const ioError = (path: string, what: string) => (cause: unknown) =>
  new RunStoreError({ path, message: `${path}: ${what} failed: ${cause instanceof Error ? cause.message : String(cause)}` })
