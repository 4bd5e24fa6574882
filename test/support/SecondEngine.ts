import { execFileSync, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { HostConfig } from "../../src/compute/DockerHost.ts"
import { SOCKET } from "./DockerEngine.ts"
import { freePort } from "./FreePort.ts"

/**
 * A second, real Docker engine on this machine, reached like a remote box: over SSH (an sshd on 127.0.0.1) to its
 * own socket. For fleet tests (one DART run over two Docker hosts) and for a box that dies or loses its network.
 *
 * Layout (one engine per machine, see the lock below):
 * - /var/lib/dart-engine2/data: its data root, persistent, so images copied in once stay for later test runs;
 *   dockerd.log, daemon.json, key.json (its own engine ID) and the lock file beside it.
 * - /run/dart-engine2: its exec root (managed containerd's state and socket, runc state), docker.sock, docker.pid.
 * - Its own managed containerd (dockerd starts it from the exec root: own socket, state, root, config) with its
 *   own namespace "dart2", so nothing is shared with the main engine's containerd; shim sockets still land in the
 *   fixed /run/containerd/s, named by a hash of the containerd socket, so they cannot clash either.
 * - A pids cgroup /dart-engine2: dockerd (and so containerd and the shims) in /dart-engine2/daemon, the sshd and its
 *   sessions in /dart-engine2/ssh, the containers in /dart-engine2/<id> (--cgroup-parent). "Everything of engine
 *   2" is the processes of that tree, which is what kill() kills and what engine2Processes() lists.
 * - Same network rule as the main engine: --bridge=none and no iptables/forwarding/masquerading; containers use
 *   host networking and listen on 127.0.0.1.
 *
 * Locking: the data root can serve only one dockerd, and a per-caller data root would mean copying the multi-GB
 * images again each time, so there is one engine 2 per machine and a caller holds an exclusive flock(1) on
 * /var/lib/dart-engine2/lock from startSecondEngine to stop(). Test files that use it run one after the other
 * (a second one waits for the lock, up to `lockTimeoutS`). The lock is held by a `flock … cat` child reading our
 * stdin pipe, so it goes when this process dies, even by SIGKILL; the engine it left is then found by the next
 * caller, stopped cleanly (SIGTERM, then SIGKILL of whatever is left) and started afresh.
 */

export const ENGINE2_HOME = "/var/lib/dart-engine2"
export const ENGINE2_DATA_ROOT = path.join(ENGINE2_HOME, "data")
export const ENGINE2_EXEC_ROOT = "/run/dart-engine2"
export const ENGINE2_SOCKET = path.join(ENGINE2_EXEC_ROOT, "docker.sock")
export const ENGINE2_LOG = path.join(ENGINE2_HOME, "dockerd.log")
const LOCK = path.join(ENGINE2_HOME, "lock")
const NAMESPACE = "dart2"
const CGROUP_PARENT = "/dart-engine2"
const CONTAINERD_SOCKET = path.join(ENGINE2_EXEC_ROOT, "containerd", "containerd.sock")

export interface SecondEngine {
  /** Engine 2's unix socket on this machine (for the docker CLI: `docker -H unix://…`). */
  readonly socket: string
  /** DART's host entry for engine 2: ssh://USER@127.0.0.1:PORT/run/dart-engine2/docker.sock with the sshd's key. */
  readonly hostConfig: HostConfig & { readonly name: string; readonly docker: string; readonly identity_file: string }
  /** ssh://USER@127.0.0.1:PORT (no socket path). */
  readonly sshUrl: string
  /** The box dies: SIGKILL of dockerd, containerd, the shims, every container process and the sshd with its sessions. */
  readonly kill: () => Promise<void>
  /** The network to the box is cut: SIGKILL of the sshd and its sessions only; the engine and containers live on. */
  readonly cutSsh: () => Promise<void>
  /** The box comes back: whatever is down (engine, sshd) starts again, at the same socket and the same ssh port. */
  readonly restart: () => Promise<void>
  /** Graceful: sshd, then dockerd (SIGTERM, which stops its containers); stale state cleaned; the image cache stays; the lock goes. */
  readonly stop: () => Promise<void>
  /** Ids of containers on engine 2 with `dart.exp=expId`, all states (like containersOf for the main engine). */
  readonly containers: (expId: string) => Array<string>
  /** SSH logins the sshd accepted so far (over restarts). */
  readonly logins: () => number
}

export interface SecondEngineOptions {
  /** Images to have on engine 2: each missing one (or one with another id) is copied from the main engine. */
  readonly images?: ReadonlyArray<string>
  /** DART host name (default "box2"). */
  readonly name?: string
  /** How long to wait for another test file's engine 2 (default 600 s). */
  readonly lockTimeoutS?: number
}

// ---------------------------------------------------------------------------------------------------------------
// Processes and cgroups

const cgroupDir = (): string | undefined => {
  if (fs.existsSync("/sys/fs/cgroup/pids/cgroup.procs")) return "/sys/fs/cgroup/pids/dart-engine2"
  if (fs.existsSync("/sys/fs/cgroup/cgroup.controllers")) return "/sys/fs/cgroup/dart-engine2"
  return undefined
}
const CGROUP = cgroupDir()

const readProc = (pid: number, file: string) => {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, "utf8")
  } catch {
    return undefined
  }
}

/** Alive and not a zombie. */
const alive = (pid: number) => {
  const stat = readProc(pid, "stat")
  if (stat === undefined) return false
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
  return state !== "Z" && state !== "X"
}

const allPids = () => fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map(Number)
const argvOf = (pid: number) => (readProc(pid, "cmdline") ?? "").split("\0").filter((s) => s !== "")
const ppidOf = (pid: number) => {
  const stat = readProc(pid, "stat")
  return stat === undefined ? -1 : Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
}

/** Pids in a cgroup and all its descendants. */
const cgroupPids = (dir: string | undefined): Array<number> => {
  if (dir === undefined || !fs.existsSync(dir)) return []
  const out: Array<number> = []
  const walk = (d: string) => {
    try {
      out.push(...fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n").filter((l) => l !== "").map(Number))
    } catch { /* gone meanwhile */ }
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name))
  }
  walk(dir)
  return out
}

const descendants = (root: number): Array<number> => {
  const children = new Map<number, Array<number>>()
  for (const p of allPids()) {
    const pp = ppidOf(p)
    children.set(pp, [...(children.get(pp) ?? []), p])
  }
  const out: Array<number> = []
  const visit = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c)
      visit(c)
    }
  }
  visit(root)
  return out
}

/** dockerd, containerd and shims of engine 2 found by their command lines (also without the cgroup). */
const daemonPidsByName = (names: ReadonlyArray<string>) =>
  allPids().filter((p) => {
    const argv = argvOf(p)
    return argv.length > 0 && names.includes(path.basename(argv[0]!)) && argv.join(" ").includes(`${ENGINE2_EXEC_ROOT}/`)
  })
const dockerdPids = () => daemonPidsByName(["dockerd"])

const SSH_CGROUP = CGROUP === undefined ? undefined : path.join(CGROUP, "ssh")
const live = (pids: Iterable<number>) => [...new Set(pids)].filter((p) => p !== process.pid && alive(p)).sort((a, b) => a - b)

/** The engine's processes: dockerd, containerd, shims, containers (not the sshd). */
const enginePids = () => {
  const ssh = new Set(cgroupPids(SSH_CGROUP))
  return live([...cgroupPids(CGROUP).filter((p) => !ssh.has(p)), ...daemonPidsByName(["dockerd", "containerd", "containerd-shim-runc-v2", "containerd-shim"])])
}

/** Every live process of engine 2: daemons, shims, containers, its sshd and ssh sessions. Empty once stopped. */
export const engine2Processes = (): Array<number> => live([...enginePids(), ...cgroupPids(CGROUP)])

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** SIGKILL whatever `collect` finds until it finds nothing alive (new children of dying parents included). */
const killAll = async (what: string, collect: () => Array<number>, timeoutMs = 15_000) => {
  const until = Date.now() + timeoutMs
  for (;;) {
    const pids = collect().filter((p) => p !== process.pid && alive(p))
    if (pids.length === 0) return
    if (Date.now() > until) throw new Error(`${what}: processes ${pids.join(" ")} survive SIGKILL`)
    for (const p of pids) {
      try {
        process.kill(p, "SIGKILL")
      } catch { /* gone */ }
    }
    await sleep(50)
  }
}

const waitGone = async (pids: Array<number>, timeoutMs: number) => {
  const until = Date.now() + timeoutMs
  while (pids.some(alive) && Date.now() < until) await sleep(100)
  return !pids.some(alive)
}

// ---------------------------------------------------------------------------------------------------------------
// The engine

const ping = (socket: string) =>
  new Promise<boolean>((resolve) => {
    const req = http.get({ socketPath: socket, path: "/_ping", timeout: 2000 }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on("error", () => resolve(false))
    req.on("timeout", () => {
      req.destroy()
      resolve(false)
    })
  })

let flagsCache: { ip6tables: boolean; trustKey: boolean } | undefined
/** Which flags this dockerd takes: --ip6tables (20.10+), and a trust key path (engine ID) before 24.0. */
const dockerdFlags = () => {
  if (flagsCache !== undefined) return flagsCache
  const help = execFileSync("dockerd", ["--help"], { encoding: "utf8" })
  const major = Number(/(\d+)\.\d+/.exec(execFileSync("dockerd", ["--version"], { encoding: "utf8" }))?.[1] ?? "0")
  flagsCache = { ip6tables: help.includes("--ip6tables"), trustKey: major > 0 && major < 24 }
  return flagsCache
}

const logTail = () => {
  try {
    return fs.readFileSync(ENGINE2_LOG, "utf8").trimEnd().split("\n").slice(-15).join("\n")
  } catch {
    return ""
  }
}

const mountPointsOfEngine = () =>
  fs.readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "")
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m === ENGINE2_DATA_ROOT || m.startsWith(`${ENGINE2_DATA_ROOT}/`) || m === ENGINE2_EXEC_ROOT || m.startsWith(`${ENGINE2_EXEC_ROOT}/`))

/**
 * State a dead engine 2 leaves (once none of its processes runs): its mounts (the data root's bind mount, overlay
 * roots of containers it ran, the netns file), the shims' sockets in the shared /run/containerd/s, the exec root
 * and empty cgroups. The data root itself stays: dockerd restores its containers as exited on the next start.
 */
const cleanStaleState = () => {
  if (enginePids().length > 0) throw new Error(`engine 2 still runs: ${enginePids().join(" ")}`)
  const ids = new Set<string>()
  try {
    for (const id of fs.readdirSync(path.join(ENGINE2_DATA_ROOT, "containers"))) ids.add(id)
  } catch { /* none yet */ }
  for (const id of ids) {
    const hash = createHash("sha256").update(path.join(CONTAINERD_SOCKET, NAMESPACE, id)).digest("hex")
    fs.rmSync(path.join("/run/containerd/s", hash), { force: true })
  }
  for (let round = 0; round < 5; round++) {
    const mounts = mountPointsOfEngine().sort((a, b) => b.length - a.length)
    if (mounts.length === 0) break
    for (const m of mounts) {
      try {
        execFileSync("umount", ["-l", m], { stdio: "pipe" })
      } catch { /* already gone */ }
    }
  }
  if (!mountPointsOfEngine().some((m) => m === ENGINE2_EXEC_ROOT || m.startsWith(`${ENGINE2_EXEC_ROOT}/`))) {
    fs.rmSync(ENGINE2_EXEC_ROOT, { recursive: true, force: true })
  }
  const rmdirTree = (d: string) => {
    if (!fs.existsSync(d)) return
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rmdirTree(path.join(d, e.name))
    try {
      fs.rmdirSync(d)
    } catch { /* busy */ }
  }
  if (CGROUP !== undefined) rmdirTree(CGROUP)
  // --cgroup-parent made /dart-engine2 in every hierarchy (cgroup v1); empty ones go (busy ones stay).
  try {
    for (const h of fs.readdirSync("/sys/fs/cgroup")) rmdirTree(path.join("/sys/fs/cgroup", h, CGROUP_PARENT))
  } catch { /* no cgroup fs */ }
}

/**
 * Stops whatever runs of engine 2 (its sshd too, unless `keepSsh`): SIGTERM to dockerd (it stops its containers
 * and containerd), then SIGKILL of the rest, then its stale state.
 */
const shutdownEngine = async (graceMs = 30_000, keepSsh = false) => {
  const daemons = dockerdPids()
  for (const p of daemons) {
    try {
      process.kill(p, "SIGTERM")
    } catch { /* gone */ }
  }
  await waitGone(daemons, graceMs)
  await killAll("engine 2", () => (keepSsh ? enginePids() : engine2Processes()))
  cleanStaleState()
}

const startEngine = async () => {
  fs.mkdirSync(ENGINE2_DATA_ROOT, { recursive: true })
  fs.mkdirSync(ENGINE2_EXEC_ROOT, { recursive: true, mode: 0o700 })
  const flags = dockerdFlags()
  const config = path.join(ENGINE2_HOME, "daemon.json")
  // Its own config file (not /etc/docker/daemon.json) and, on old engines, its own key (not /etc/docker/key.json),
  // so its engine ID differs from the main engine's.
  fs.writeFileSync(config, JSON.stringify(flags.trustKey ? { "deprecated-key-path": path.join(ENGINE2_HOME, "key.json") } : {}) + "\n")
  const daemonCgroup = CGROUP === undefined ? undefined : path.join(CGROUP, "daemon")
  if (daemonCgroup !== undefined) fs.mkdirSync(daemonCgroup, { recursive: true })
  const args = [
    "--config-file", config, "--data-root", ENGINE2_DATA_ROOT, "--exec-root", ENGINE2_EXEC_ROOT,
    "--pidfile", path.join(ENGINE2_EXEC_ROOT, "docker.pid"), "-H", `unix://${ENGINE2_SOCKET}`,
    "--containerd-namespace", NAMESPACE, "--containerd-plugins-namespace", `${NAMESPACE}-plugins`,
    "--cgroup-parent", CGROUP_PARENT,
    "--bridge=none", "--iptables=false", ...(flags.ip6tables ? ["--ip6tables=false"] : []), "--ip-forward=false", "--ip-masq=false"
  ]
  const log = fs.openSync(ENGINE2_LOG, "w")
  // Joins its cgroup before it becomes dockerd, so containerd and the shims it starts are in it too.
  const child = spawn("/bin/sh", ["-c", `${daemonCgroup === undefined ? "" : `echo $$ > '${daemonCgroup}/cgroup.procs' || exit 97; `}exec dockerd "$@"`, "dockerd", ...args], {
    cwd: "/", detached: true, stdio: ["ignore", log, log]
  })
  fs.closeSync(log)
  let exited: number | null = null
  child.once("exit", (code, signal) => (exited = code ?? (signal === null ? -1 : 128)))
  child.unref()
  const until = Date.now() + 60_000
  while (!(await ping(ENGINE2_SOCKET))) {
    if (exited !== null) throw new Error(`engine 2's dockerd exited (${exited}); ${ENGINE2_LOG}:\n${logTail()}`)
    if (Date.now() > until) throw new Error(`engine 2 did not answer on ${ENGINE2_SOCKET} within 60 s; ${ENGINE2_LOG}:\n${logTail()}`)
    await sleep(100)
  }
}

/** Containers an earlier holder of engine 2 left (a killed test run): the engine starts empty but for its images. */
const removeAllContainers = () => {
  const docker2 = (...args: Array<string>) => execFileSync("docker", ["-H", `unix://${ENGINE2_SOCKET}`, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
  const ids = docker2("ps", "-aq").trim().split("\n").filter((l) => l !== "")
  if (ids.length > 0) docker2("rm", "-fv", ...ids)
}

// ---------------------------------------------------------------------------------------------------------------
// Images

const imageInfo = (socket: string, image: string) => {
  try {
    const [id, size] = execFileSync("docker", ["-H", `unix://${socket}`, "image", "inspect", "--format", "{{.Id}} {{.Size}}", image], { encoding: "utf8", stdio: "pipe" }).trim().split(" ")
    return { id: id!, size: Number(size) }
  } catch {
    return undefined
  }
}

/** `docker save` on the main engine piped into `docker load` on engine 2, unless engine 2 has the same image id. */
export const copyImage = async (image: string): Promise<{ copied: boolean; seconds: number }> => {
  const main = imageInfo(SOCKET, image)
  if (main === undefined) throw new Error(`${image} is not on the main engine (${SOCKET}); build it there first`)
  const have = imageInfo(ENGINE2_SOCKET, image)
  if (have?.id === main.id) return { copied: false, seconds: 0 }
  const free = (() => {
    const s = fs.statfsSync(ENGINE2_DATA_ROOT)
    return s.bavail * s.bsize
  })()
  // load unpacks the layers next to the compressed-free archive stream: about the image size, plus margin.
  if (free < main.size * 1.2 + 2 ** 30) {
    throw new Error(`copying ${image} (${(main.size / 1e9).toFixed(1)} GB) into engine 2 needs about ${(main.size * 1.2 / 1e9 + 1).toFixed(1)} GB free in ${ENGINE2_DATA_ROOT}; ${(free / 1e9).toFixed(1)} GB are`)
  }
  const t0 = Date.now()
  await new Promise<void>((resolve, reject) => {
    const save = spawn("docker", ["-H", `unix://${SOCKET}`, "save", image], { stdio: ["ignore", "pipe", "pipe"] })
    const load = spawn("docker", ["-H", `unix://${ENGINE2_SOCKET}`, "load", "-q"], { stdio: ["pipe", "pipe", "pipe"] })
    let errors = ""
    save.stderr.on("data", (d) => (errors += String(d)))
    load.stderr.on("data", (d) => (errors += String(d)))
    load.stdout.resume()
    load.stdin.on("error", () => {})
    save.stdout.pipe(load.stdin)
    const codes: Array<number | null> = []
    const done = (code: number | null) => {
      codes.push(code)
      if (codes.length < 2) return
      if (codes.every((c) => c === 0)) resolve()
      else reject(new Error(`copying ${image} into engine 2 failed (save/load exit ${codes.join("/")}): ${errors.trim()}`))
    }
    save.once("close", done)
    load.once("close", done)
  })
  const seconds = (Date.now() - t0) / 1000
  const now = imageInfo(ENGINE2_SOCKET, image)
  if (now?.id !== main.id) throw new Error(`${image} on engine 2 has id ${now?.id}, the main engine's is ${main.id}`)
  // A stale copy under the same tag would stay as a dangling image of several GB.
  if (have !== undefined) {
    try {
      execFileSync("docker", ["-H", `unix://${ENGINE2_SOCKET}`, "image", "rm", have.id], { stdio: "pipe" })
    } catch { /* still used by a container */ }
  }
  console.log(`[engine 2] copied ${image} (${(main.size / 1e9).toFixed(2)} GB) from the main engine in ${seconds.toFixed(1)} s`)
  return { copied: true, seconds }
}

// ---------------------------------------------------------------------------------------------------------------
// sshd (startSshd's configuration, with a fixed port and keys so that it can come back at the same address)

const prepareSshd = async (dir: string) => {
  fs.mkdirSync(dir, { recursive: true })
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "host_key")])
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "user_key")])
  fs.writeFileSync(path.join(dir, "authorized_keys"), fs.readFileSync(path.join(dir, "user_key.pub")))
  const port = await freePort()
  fs.writeFileSync(path.join(dir, "sshd_config"), [
    `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${path.join(dir, "host_key")}`, `PidFile ${path.join(dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`, "PasswordAuthentication no", "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "AllowTcpForwarding yes", "AllowStreamLocalForwarding yes",
    "LogLevel VERBOSE", ""
  ].join("\n"))
  fs.mkdirSync("/run/sshd", { recursive: true })
  return { dir, port, identityFile: path.join(dir, "user_key"), log: path.join(dir, "sshd.log") }
}

const portOpen = (port: number) =>
  new Promise<boolean>((r) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.destroy()
      r(true)
    })
    s.on("error", () => r(false))
  })

/** Starts the sshd in the ssh cgroup (its sessions are forked into it); returns the listener's pid. */
const launchSshd = async (ssh: Awaited<ReturnType<typeof prepareSshd>>) => {
  const cg = SSH_CGROUP
  if (cg !== undefined) fs.mkdirSync(cg, { recursive: true })
  const child = spawn("/bin/sh", ["-c", `${cg === undefined ? "" : `echo $$ > '${cg}/cgroup.procs' || exit 97; `}exec /usr/sbin/sshd -D -e -f '${path.join(ssh.dir, "sshd_config")}' -E '${ssh.log}'`], {
    cwd: "/", detached: true, stdio: "ignore"
  })
  let exited = false
  child.once("exit", () => (exited = true))
  child.unref()
  for (let i = 0; i < 100 && !exited; i++) {
    if (await portOpen(ssh.port)) return child.pid!
    await sleep(100)
  }
  throw new Error(`engine 2's sshd did not listen on 127.0.0.1:${ssh.port}${exited ? " (it exited)" : ""}; ${ssh.log}`)
}

// ---------------------------------------------------------------------------------------------------------------
// Lock

const acquireLock = async (timeoutS: number) => {
  fs.mkdirSync(ENGINE2_HOME, { recursive: true })
  const child = spawn("flock", ["-x", "-w", String(timeoutS), LOCK, "sh", "-c", "echo locked; exec cat >/dev/null"], { stdio: ["pipe", "pipe", "ignore"] })
  const note = setTimeout(() => console.log(`[engine 2] waiting for ${LOCK} (another test file uses engine 2)`), 2000)
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve())
      child.once("exit", () => reject(new Error(`engine 2's lock ${LOCK} was not free within ${timeoutS} s (another test file uses engine 2)`)))
      child.once("error", reject)
    })
  } finally {
    clearTimeout(note)
  }
  // Neither the child nor its pipes keep this process alive; its death closes the pipe, and cat and the lock go.
  child.unref()
  ;(child.stdin as unknown as net.Socket).unref()
  ;(child.stdout as unknown as net.Socket).unref()
  return {
    release: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once("exit", () => resolve())
      child.ref() // this wait keeps the process alive
      child.stdin.end()
    })
  }
}

let current: SecondEngine | undefined

/**
 * Takes the machine's engine 2 (waiting for the lock), stops an engine 2 an earlier, killed run left behind,
 * starts it afresh on the persistent data root with no containers (an earlier holder's are removed; images stay),
 * copies `images` in from the main engine and starts its sshd.
 */
export const startSecondEngine = async (options: SecondEngineOptions = {}): Promise<SecondEngine> => {
  if (current !== undefined) throw new Error("engine 2 is already started in this process: stop() it first")
  const lock = await acquireLock(options.lockTimeoutS ?? 600)
  let sshDir: string | undefined
  try {
    await shutdownEngine()
    await startEngine()
    removeAllContainers()
    for (const image of options.images ?? []) await copyImage(image)
    sshDir = fs.mkdtempSync(path.join(tmpdir(), "dart-engine2-ssh-"))
    const ssh = await prepareSshd(sshDir)
    let sshdPid = await launchSshd(ssh)
    const user = execFileSync("id", ["-un"], { encoding: "utf8" }).trim()
    const sshUrl = `ssh://${user}@127.0.0.1:${ssh.port}`
    // The listener and its sessions: its cgroup, and (without cgroups) its process tree while the pid is still its.
    const listener = () => alive(sshdPid) && (readProc(sshdPid, "cmdline") ?? "").includes(path.join(ssh.dir, "sshd_config"))
    const sshPids = () => [...cgroupPids(SSH_CGROUP), ...(listener() ? [sshdPid, ...descendants(sshdPid)] : [])]
    const sshUp = listener
    let stopped = false
    const engine: SecondEngine = {
      socket: ENGINE2_SOCKET,
      hostConfig: { name: options.name ?? "box2", docker: `${sshUrl}${ENGINE2_SOCKET}`, identity_file: ssh.identityFile },
      sshUrl,
      kill: async () => {
        await killAll("engine 2 (kill)", () => [...sshPids(), ...engine2Processes()])
      },
      cutSsh: async () => {
        await killAll("engine 2's sshd (cutSsh)", sshPids)
      },
      restart: async () => {
        if (stopped) throw new Error("engine 2 was stopped: call startSecondEngine")
        if (!(await ping(ENGINE2_SOCKET))) {
          await shutdownEngine(5_000, true)
          await startEngine()
        }
        if (!sshUp()) {
          await killAll("engine 2's sshd", sshPids)
          sshdPid = await launchSshd(ssh)
        }
      },
      stop: async () => {
        if (stopped) return
        stopped = true
        try {
          if (listener()) {
            process.kill(sshdPid, "SIGTERM")
            await waitGone([sshdPid], 5_000)
          }
          await killAll("engine 2's sshd", sshPids)
          await shutdownEngine()
          fs.rmSync(ssh.dir, { recursive: true, force: true })
        } finally {
          current = undefined
          await lock.release()
        }
      },
      containers: (expId) =>
        execFileSync("docker", ["-H", `unix://${ENGINE2_SOCKET}`, "ps", "-aq", "--filter", `label=dart.exp=${expId}`], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
          .trim().split("\n").filter((l) => l !== ""),
      logins: () => {
        try {
          return (fs.readFileSync(ssh.log, "utf8").match(/Accepted publickey/g) ?? []).length
        } catch {
          return 0
        }
      }
    }
    current = engine
    return engine
  } catch (e) {
    // Leave nothing half-started behind the lock.
    await shutdownEngine(10_000).catch(() => {})
    if (sshDir !== undefined) fs.rmSync(sshDir, { recursive: true, force: true })
    await lock.release()
    throw e
  }
}
