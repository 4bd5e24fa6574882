/**
 * The one place secrets are scrubbed. Every writer of run files (atomic writes, JSONL
 * appends), the terminal (stdout/stderr, patched at start-up) and config error messages
 * pass their text through `redact`, so a provider that echoes a key in an error body, or
 * a key pasted into an --override, never reaches runs/, logs or the screen.
 */

export const REDACTED = "[REDACTED]"

/** Variables that always hold secrets; a config's `api_key_env` adds its own. */
export const secretVariables: ReadonlyArray<string> = ["DEEPSEEK_API_KEY", "OPENAI_API_KEY", "HF_TOKEN"]

/** Names that mark a variable as secret even when no config names it. */
const secretName = /(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)$/i

/** Values shorter than this are not scrubbed: redacting "1" or "abc" everywhere would garble output. */
const MIN_SECRET_LENGTH = 8

const secrets = new Set<string>()
let pattern: RegExp | undefined

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** Adds a literal secret value (and the forms it takes inside JSON and URLs). */
export const registerSecret = (value: string | undefined): void => {
  if (value === undefined || value.length < MIN_SECRET_LENGTH) return
  const forms = [value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value)]
  for (const f of forms) if (!secrets.has(f)) {
    secrets.add(f)
    pattern = undefined
  }
}

/** Registers the values of these environment variables, plus every variable whose name marks it as secret. */
export const registerSecretsFromEnv = (extra: ReadonlyArray<string | null | undefined> = [], env: NodeJS.ProcessEnv = process.env): void => {
  for (const name of [...secretVariables, ...extra]) if (name) registerSecret(env[name])
  for (const [name, value] of Object.entries(env)) if (secretName.test(name)) registerSecret(value)
}

/** Test hook: forget registered values. */
export const clearSecrets = (): void => {
  secrets.clear()
  pattern = undefined
}

/**
 * Token shapes that are secrets whoever owns them: bearer headers, OpenAI/DeepSeek-style
 * `sk-…` keys, Hugging Face `hf_…` tokens, and credentials inside URLs.
 */
const shapes: ReadonlyArray<readonly [RegExp, string]> = [
  // A bearer token has a digit somewhere; "bearer of bad news" stays as it is.
  [/\b(Bearer)\s+(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}/gi, `$1 ${REDACTED}`],
  [/\bsk-[A-Za-z0-9_-]{12,}/g, `sk-${REDACTED}`],
  [/\bhf_[A-Za-z0-9]{16,}/g, `hf_${REDACTED}`],
  // scheme://user:password@host -> scheme://user:[REDACTED]@host
  [/\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@"'<>]*):[^\s@/"'<>]+@/gi, `$1:${REDACTED}@`],
  // ?api_key=… &token=… in any URL-ish text
  [/([?&#](?:[a-z0-9_-]*(?:key|token|secret|password|passwd|auth|signature|sig|credential)[a-z0-9_-]*)=)[^\s&#"'<>]+/gi, `$1${REDACTED}`]
]

const literalPattern = (): RegExp | undefined => {
  if (secrets.size === 0) return undefined
  // Longest first, so a value is never half-replaced by a shorter one it contains.
  pattern ??= new RegExp([...secrets].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|"), "g")
  return pattern
}

/** `text` with every registered secret and every secret-shaped token replaced. */
export const redact = (text: string): string => {
  let out = text
  const literal = literalPattern()
  if (literal !== undefined) out = out.replace(literal, REDACTED)
  for (const [re, by] of shapes) out = out.replace(re, by)
  return out
}

/**
 * C0 controls but newline and tab, DEL and C1 controls. ESC starts every terminal escape sequence (CSI, OSC) and
 * BEL ends OSC; with them shown as text a sequence is inert, so the bytes after them may stay.
 */
const controls = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g

/**
 * `text` from a server (an error body, a reply) made safe for a terminal: each control character becomes a
 * visible `\u00NN` (inert on a terminal, and still valid inside JSON and JS strings, so `--json` output parses), so a hostile body cannot clear the screen, retitle the window or rewrite earlier lines.
 * Newlines and tabs stay, so a multi-line message keeps its lines.
 */
export const escapeControls = (text: string): string =>
  text.replace(controls, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** Bytes are scrubbed only when they are text (JSON, JSONL, reports); binary files pass untouched. */
export const redactData = (data: string | Uint8Array): string | Uint8Array => typeof data === "string" ? redact(data) : data

/** True when `text` holds something `redact` would replace. */
export const containsSecret = (text: string): boolean => redact(text) !== text

let installed = false

/**
 * Routes everything written to stdout and stderr through `redact` and `escapeControls`. Called once by bin.ts, so
 * every message (Effect's logger, Console, uncaught errors, warnings that quote a server's text mid-run) is covered
 * without each call site remembering to: dart itself prints no control characters but newline and tab.
 */
export const installOutputRedaction = (): void => {
  if (installed) return
  installed = true
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (...args: Array<unknown>) => boolean
    stream.write = ((chunk: unknown, ...rest: Array<unknown>) =>
      write(
        typeof chunk === "string" ? escapeControls(redact(chunk))
          : chunk instanceof Uint8Array ? escapeControls(redact(Buffer.from(chunk).toString("utf8")))
          : chunk,
        ...rest
      )) as typeof stream.write
  }
}
