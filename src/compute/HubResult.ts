/** What a host said about one hub model (the fetch task's last word on it), engine-neutral. */
export type HubModelResult =
  | { readonly repo: string; readonly ok: true; readonly cached: boolean; readonly bytes: number | null; readonly revision: string | null }
  | {
    readonly repo: string
    readonly ok: false
    readonly kind: "gated" | "unauthorized" | "not_found" | "revision_not_found" | "no_weights" | "network" | "other"
    readonly message: string
  }

const gib = (n: number) => `${(n / 2 ** 30).toFixed(n < 2 ** 30 ? 2 : 1)} GiB`

/** A result as one line for the checks and errors: what is wrong and what to do. */
export const describeHubResult = (r: HubModelResult): string =>
  r.ok
    ? `${r.repo} ${r.cached ? "is in the HF cache" : "is readable"}${r.bytes === null ? "" : ` (${gib(r.bytes)})`}`
    : r.message
