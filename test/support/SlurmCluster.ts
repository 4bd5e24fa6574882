import { execFile, execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/**
 * The real single-node Slurm cluster on this machine (Slurm 22.05 from Debian 12), set up by
 * scripts/setup-slurm.sh: node `hostname -s` with four fake GPUs (gres backed by /dev/tty0-3, so jobs get
 * CUDA_VISIBLE_DEVICES 0..3) and 16 declared CPUs, partition `debug`, slurmrestd on 127.0.0.1:6820 (OpenAPI
 * v0.0.38, JWT auth). REST requests carry `X-SLURM-USER-NAME: dart-slurm` and `X-SLURM-USER-TOKEN: token()`;
 * tokens are for the normal user dart-slurm because Slurm rejects tokens for root. The CLI (sbatch, squeue,
 * scancel, scontrol) works as root with the default /etc/slurm/slurm.conf. Per-run shared folders go under
 * `sharedRoot` (mode 1777: REST jobs run as dart-slurm, CLI jobs as the submitting user).
 */

export interface SlurmCluster {
  /** slurmrestd, loopback only. */
  readonly restUrl: string
  /** The user REST tokens are minted for (and REST jobs run as). */
  readonly user: string
  readonly partition: string
  /** The one node's name (`hostname -s`). */
  readonly node: string
  /** Fake GPUs on the node (gres gpu). */
  readonly gpus: number
  /** Parent of the tests' per-run shared folders (mode 1777). */
  readonly sharedRoot: string
  /** A fresh JWT for `user` (`scontrol token`), valid `lifespanS` seconds (default 3600). */
  readonly token: (lifespanS?: number) => string
}

export interface SlurmJob {
  readonly id: string
  readonly name: string
  readonly comment: string
  /** Slurm's job state, e.g. PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, FAILED. */
  readonly state: string
  readonly user: string
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")
const SETUP = path.join(REPO_ROOT, "scripts", "setup-slurm.sh")
export const SLURM_REST_URL = "http://127.0.0.1:6820"
export const SLURM_USER = "dart-slurm"
export const SLURM_SHARED_ROOT = "/var/tmp/dart-slurm"

/**
 * Whether this machine has dart's test cluster (scripts/setup-slurm.sh wrote /etc/slurm/slurm.conf), as every machine
 * the set-up ran on does, CI's included; a machine with a Slurm of its own keeps it, and the Slurm tests skip there.
 */
export const haveTestCluster = (): boolean => {
  try {
    return readFileSync("/etc/slurm/slurm.conf", "utf8").split("\n")[0] === "# written by dart scripts/setup-slurm.sh"
  } catch {
    return false
  }
}

const run = (cmd: string, args: ReadonlyArray<string>, timeoutMs = 120_000) =>
  new Promise<string>((resolve, reject) =>
    execFile(cmd, [...args], { encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${stderr}`.trim()))
      else resolve(stdout)
    })
  )

let cluster: Promise<SlurmCluster> | undefined

/**
 * Brings the cluster up when it is not (`scripts/setup-slurm.sh --start`: silent and about 50 ms when all is up;
 * an error when the packages are missing, pointing at scripts/setup.sh), once per process.
 */
export const ensureSlurm = (): Promise<SlurmCluster> => {
  cluster ??= (async () => {
    await run(SETUP, ["--start"], 180_000)
    const node = (await run("hostname", ["-s"])).trim()
    return {
      restUrl: SLURM_REST_URL,
      user: SLURM_USER,
      partition: "debug",
      node,
      gpus: 4,
      sharedRoot: SLURM_SHARED_ROOT,
      token: (lifespanS = 3600) => {
        // Synchronous, so that it fits inline where request headers are built.
        const out = execFileSync("scontrol", ["token", `username=${SLURM_USER}`, `lifespan=${lifespanS}`], {
          encoding: "utf8",
          timeout: 30_000
        })
        const m = /SLURM_JWT=(\S+)/.exec(out)
        if (m?.[1] === undefined) throw new Error(`scontrol token printed no SLURM_JWT: ${out}`)
        return m[1]
      }
    }
  })().catch((e: unknown) => {
    cluster = undefined // a later call tries again
    throw e
  })
  return cluster
}

interface SqueueJob {
  readonly job_id: number
  readonly name: string
  readonly comment: string
  readonly job_state: string
  readonly user_name: string
}

/**
 * Jobs Slurm still knows (`squeue --json -a`: every user's, any state; finished jobs stay listed until purged,
 * MinJobAge=30 s plus the purge interval), optionally filtered.
 */
export const slurmJobs = async (filter?: (j: SlurmJob) => boolean): Promise<Array<SlurmJob>> => {
  const out = JSON.parse(await run("squeue", ["--json", "-a"])) as { jobs?: ReadonlyArray<SqueueJob> }
  const jobs = (out.jobs ?? []).map((j): SlurmJob => ({
    id: String(j.job_id),
    name: j.name,
    comment: j.comment,
    state: j.job_state,
    user: j.user_name
  }))
  return filter === undefined ? jobs : jobs.filter(filter)
}

/** States in which a job still holds (or waits for) resources. */
export const activeState = (state: string) => !/^(COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE|OUT_OF_MEMORY)$/.test(state)

/** `scancel` of these job ids (as root, any user's); none is a no-op. */
export const cancelJobs = async (ids: ReadonlyArray<string>): Promise<void> => {
  if (ids.length === 0) return
  await run("scancel", [...ids])
}
