import { Schema } from "effect"

/** Anything that went wrong on a compute host; `host` is the config's host name so users know which box. */
export class ComputeError extends Schema.TaggedError<ComputeError>()("ComputeError", {
  host: Schema.String,
  message: Schema.String,
  /** The Docker, SSH or file-system error beneath, when there is one (shown with DART_DEBUG=1). */
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** A local file-system failure on the way to or from `host`, worded `{path}: {what} failed: {reason}`. */
export const localIoError = (host: string, file: string, what: string) => (cause: unknown) =>
  new ComputeError({ host, message: `${file}: ${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/** Docker's error text without dockerode's "(HTTP code 500) server error - " wrapping noise. */
export const dockerMessage = (e: unknown): string => {
  const err = e as { json?: { message?: string }; reason?: string; statusCode?: number; message?: string }
  if (err?.json?.message) return `${err.json.message}${err.statusCode ? ` (HTTP ${err.statusCode})` : ""}`
  return e instanceof Error ? e.message : String(e)
}
