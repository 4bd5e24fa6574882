import { Effect, Redacted, Schema, type Scope } from "effect"
import { spawn } from "node:child_process"
import type { Client as SshClient } from "ssh2"
import { parseHostAddress } from "../DockerHost.ts"
import { connectSsh } from "../Ssh.ts"
import { shq } from "./SlurmJobs.ts"
import { stateOf } from "./SlurmRest.ts"
import { SlurmError, type SlurmJob, type SlurmJobRequest, type SlurmTransport } from "./SlurmTransport.ts"

/**
 * The command-line transport: sbatch, squeue --json, scancel and scontrol, run here or on a login node over one SSH
 * connection (kept for the scope). Secrets reach sbatch's environment through the channel's stdin, base64 per line
 * before the script, so they are in no argv, no file and no log; sbatch exports them, and only what a job needs of this environment, to the job (`--export=PATH,HOME,…,NAMES`).
 */

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

type Runner = (command: string, stdin: string) => Effect.Effect<Ran, SlurmError>

const localRunner = (via: string): Runner => (command, stdin) =>
  Effect.callback<Ran, SlurmError>((resume) => {
    // A REST token in this environment would become the Slurm commands' identity (their JWT auth): not theirs to use.
    const { SLURM_JWT: _jwt, ...env } = process.env
    const child = spawn("bash", ["-c", command], { stdio: ["pipe", "pipe", "pipe"], env, detached: true })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    child.on("error", (e) => resume(Effect.fail(new SlurmError({ via, message: e.message, cause: e }))))
    child.on("close", (code) => resume(Effect.succeed({ code: code ?? 1, stdout, stderr })))
    child.stdin.on("error", () => {})
    child.stdin.end(stdin)
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const sshRunner = (via: string, conn: SshClient): Runner => (command, stdin) =>
  Effect.callback<Ran, SlurmError>((resume) => {
    try {
      conn.exec(command, (err, stream) => {
        if (err) return resume(Effect.fail(new SlurmError({ via, message: err.message, cause: err })))
        let stdout = ""
        let stderr = ""
        stream.on("data", (c: Buffer) => (stdout += c))
        stream.stderr.on("data", (c: Buffer) => (stderr += c))
        stream.on("close", (code: number | null) => resume(Effect.succeed({ code: code ?? 1, stdout, stderr })))
        stream.end(stdin)
      })
    } catch (e) {
      // ssh2 throws "Not connected" for a connection that is gone.
      resume(Effect.fail(new SlurmError({ via, message: `ssh: ${(e as Error).message}`, cause: e })))
    }
  })

const SqueueJob = Schema.Struct({
  job_id: Schema.Number,
  name: Schema.String,
  comment: Schema.optionalKey(Schema.NullOr(Schema.String)),
  // A string up to 23.02; a list of flags from 23.11.
  job_state: Schema.Union([Schema.String, Schema.Array(Schema.String)]),
  state_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
  nodes: Schema.optionalKey(Schema.NullOr(Schema.String)),
  user_name: Schema.optionalKey(Schema.NullOr(Schema.String))
})
const Squeue = Schema.fromJsonString(Schema.Struct({ jobs: Schema.Array(SqueueJob) }))
const decodeSqueue = Schema.decodeUnknownEffect(Squeue)

/** squeue's job in the transport's shape. */
export const toJob = (j: typeof SqueueJob.Type): SlurmJob => {
  const state = Array.isArray(j.job_state) ? stateOf(j.job_state) : (j.job_state as string)
  const reason = j.state_reason ?? null
  return { id: String(j.job_id), name: j.name, comment: j.comment ?? "", state, reason: reason === "None" || reason === "" ? null : reason, nodes: j.nodes ?? "", user: j.user_name ?? "" }
}

/** sbatch's options for a request (no secret is ever among them). */
export const sbatchArgs = (r: SlurmJobRequest): Array<string> => [
  "--parsable",
  `--job-name=${r.name}`,
  `--comment=${r.comment}`,
  ...(r.partition === null ? [] : [`--partition=${r.partition}`]),
  ...(r.account === null ? [] : [`--account=${r.account}`]),
  ...(r.qos === null ? [] : [`--qos=${r.qos}`]),
  ...(r.timeLimitMinutes === null ? [] : [`--time=${r.timeLimitMinutes}`]),
  "--nodes=1",
  "--ntasks=1",
  ...(r.gpus > 0 ? [`--gres=gpu:${r.gpus}`] : []),
  ...(r.cpusPerTask === null ? [] : [`--cpus-per-task=${r.cpusPerTask}`]),
  ...(r.memoryMb === null ? [] : [`--mem=${r.memoryMb}`]),
  `--chdir=${r.workdir}`,
  `--output=${r.logFile}`,
  `--error=${r.logFile}`,
  // A preempted or failed service job must end (and be seen lost), not wait in the queue to start again.
  "--no-requeue",
  // Only what the job needs from here: this process's other secrets (API keys) and settings stay here.
  `--export=${["PATH", "HOME", "USER", "LANG", ...Object.keys(r.env), ...Object.keys(r.secretEnv)].join(",")}`
]

/**
 * The remote command: read `NAME base64` lines up to an empty one, export them, then sbatch reads the script from
 * the rest of stdin. `read` takes a pipe byte by byte, so the script is left whole for sbatch.
 */
export const submitCommand = (r: SlurmJobRequest) =>
  `bash -c ${shq(
    `while IFS=' ' read -r k v && [ -n "$k" ]; do export "$k=$(printf %s "$v" | base64 -d)"; done; exec sbatch ${sbatchArgs(r).map(shq).join(" ")}`
  )}`

export const submitStdin = (r: SlurmJobRequest) => {
  const env = { ...r.env, ...Object.fromEntries(Object.entries(r.secretEnv).map(([k, v]) => [k, Redacted.value(v)])) }
  return `${Object.entries(env).map(([k, v]) => `${k} ${Buffer.from(v).toString("base64")}\n`).join("")}\n${r.script}`
}

/** The CLI transport, here (`ssh` null) or over SSH to a login node. */
export const slurmCli = (options: { readonly ssh: string | null; readonly identityFile: string | null }): Effect.Effect<SlurmTransport & { readonly ssh?: SshClient }, SlurmError, Scope.Scope> =>
  Effect.gen(function*() {
    let run: Runner
    let via: string
    let ssh: SshClient | undefined
    if (options.ssh === null) {
      via = "sbatch (here)"
      run = localRunner(via)
    } else {
      const a = parseHostAddress(options.ssh)
      if (typeof a === "string" || a.kind !== "ssh") return yield* new SlurmError({ via: options.ssh, message: `compute.slurm.ssh: expected ssh://user@host[:port], got ${options.ssh}` })
      via = `sbatch over ${options.ssh}`
      const connect = connectSsh({ name: "slurm", ...(options.identityFile === null ? {} : { identity_file: options.identityFile }) }, a, "compute.slurm.identity_file").pipe(
        Effect.mapError((e) => new SlurmError({ via, message: e.message, cause: e }))
      )
      const conn = yield* connect
      const shared = sshRunner(via, conn)
      // The kept connection gone (the login node's sshd restarted, the network cut, or already closed while a scope
      // ends and cancels its jobs): the command runs on a connection of its own, opened and closed for it.
      run = (command, stdin) =>
        shared(command, stdin).pipe(
          Effect.catch((e) => (/Not connected|No response from server|ECONNRESET/.test(e.message)
            ? Effect.scoped(Effect.flatMap(connect, (fresh) => sshRunner(via, fresh)(command, stdin)))
            : Effect.fail(e)))
        )
      ssh = conn
    }
    const must = (what: string, command: string, stdin = "") =>
      run(command, stdin).pipe(
        Effect.flatMap((r) =>
          r.code === 0 ? Effect.succeed(r.stdout) : Effect.fail(new SlurmError({ via, message: `${what}: ${r.stderr.trim().replace(/\s+/g, " ") || `exit ${r.code}`}` }))
        )
      )
    const user = (yield* must("id -un", "id -un")).trim()
    return {
      via,
      user,
      ...(ssh === undefined ? {} : { ssh }),
      version: () =>
        must("sinfo --version", "sinfo --version").pipe(
          Effect.map((out) => ({ slurm: out.trim().replace(/^slurm(-wlm)?\s+/i, ""), api: "cli" }))
        ),
      submit: (r) =>
        must(`sbatch ${r.name}`, submitCommand(r), submitStdin(r)).pipe(
          Effect.flatMap((out) => {
            const id = /^(\d+)/.exec(out.trim())?.[1]
            return id === undefined ? Effect.fail(new SlurmError({ via, message: `sbatch answered no job id: ${out.trim().slice(0, 200)}` })) : Effect.succeed(id)
          })
        ),
      jobs: () =>
        must("squeue --json", "squeue --json").pipe(
          Effect.flatMap((out) => decodeSqueue(out).pipe(Effect.mapError((e) => new SlurmError({ via, message: `squeue --json answered something unexpected: ${e.message.slice(0, 300)}` })))),
          Effect.map((s) => s.jobs.map(toJob))
        ),
      cancel: (id) => must(`scancel ${id}`, `scancel ${shq(id)}`).pipe(Effect.asVoid),
      nodeAddress: (node) =>
        must(`scontrol show node ${node}`, `scontrol show node ${shq(node)} -o`).pipe(
          Effect.flatMap((out) => {
            const addr = /(?:^|\s)NodeAddr=(\S+)/.exec(out)?.[1]
            return addr === undefined ? Effect.fail(new SlurmError({ via, message: `scontrol show node ${node}: no NodeAddr in its answer` })) : Effect.succeed(addr)
          })
        )
    } satisfies SlurmTransport & { readonly ssh?: SshClient }
  })
