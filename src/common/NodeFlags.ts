/**
 * True when the command line or NODE_OPTIONS gives one of `flags` (`--x`, `--x=…` or `--no-x`; V8
 * reads `_` and `-` alike): dart's own V8 tuning then stays out of the way.
 */
export const userGaveFlag = (...flags: ReadonlyArray<string>): boolean =>
  [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
    .map((a) => a.replaceAll("_", "-").replace(/^--no-/, "--"))
    .some((a) => flags.some((f) => a === f || a.startsWith(`${f}=`)))
