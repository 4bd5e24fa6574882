import Docker from "dockerode"
import { Effect, Redacted } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import { Client as SshClient } from "ssh2"
import { ComputeError, dockerMessage } from "./ComputeError.ts"
import { connectSsh, sshTunnel } from "./Ssh.ts"

/** Where a host's engine lives, parsed from `compute.hosts[].docker`. */
export type HostAddress =
  | { readonly kind: "unix"; readonly socket: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
  | { readonly kind: "ssh"; readonly user: string; readonly host: string; readonly port: number; readonly socket: string }

export interface HostConfig {
  readonly name: string
  readonly docker: string
  /** Folder with ca.pem, cert.pem, key.pem for tcp:// (default: DOCKER_CERT_PATH). */
  readonly cert_path?: string | undefined
  /** Private key for ssh:// (default: the agent at SSH_AUTH_SOCK). */
  readonly identity_file?: string | undefined
}

/** Pure: `unix:///path`, `tcp://host:port`, `ssh://user@host[:port][/remote/docker.sock]`. */
export const parseHostAddress = (url: string): HostAddress | string => {
  if (url.startsWith("unix://")) {
    const socket = url.slice("unix://".length)
    return socket.startsWith("/") ? { kind: "unix", socket } : `"${url}": a unix socket needs an absolute path (unix:///var/run/docker.sock)`
  }
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return `"${url}" is not a Docker host address (unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host)`
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1")
  if (u.protocol === "tcp:") {
    return host === "" ? `"${url}": no host name` : { kind: "tcp", host, port: u.port === "" ? 2376 : Number(u.port) }
  }
  if (u.protocol === "ssh:") {
    if (host === "" || u.username === "") return `"${url}": write ssh://user@host[:port]`
    return { kind: "ssh", user: decodeURIComponent(u.username), host, port: u.port === "" ? 22 : Number(u.port), socket: u.pathname.length > 1 ? u.pathname : "/var/run/docker.sock" }
  }
  return `"${url}": unsupported scheme ${u.protocol} (use unix://, tcp:// with TLS, or ssh://)`
}

/** A connected engine plus the way to reach a service port that listens on the host's loopback. */
export interface DockerHost {
  readonly name: string
  readonly address: HostAddress
  readonly docker: Docker
  /** Address the services bind to on that box (they listen there only). */
  readonly listenHost: string
  /** A local host:port that reaches `port` on the box: itself, or an ssh tunnel over the shared connection. */
  readonly reach: (port: number) => Effect.Effect<{ readonly host: string; readonly port: number }, ComputeError, import("effect").Scope.Scope>
  /** SSH only: how many TCP connections and channels the one SSH connection has carried. */
  readonly sshStats: () => { readonly connections: number; readonly channels: number }
}

const readTls = (host: HostConfig) =>
  Effect.try({
    try: () => {
      const dir = host.cert_path ?? process.env.DOCKER_CERT_PATH
      if (dir === undefined || dir === "") throw new Error(`no TLS certificates: set compute.hosts[].cert_path or DOCKER_CERT_PATH to a folder with ca.pem, cert.pem and key.pem`)
      const read = (f: string) => {
        try {
          return fs.readFileSync(path.join(dir, f))
        } catch (cause) {
          throw new Error(`TLS file ${path.join(dir, f)} cannot be read`, { cause })
        }
      }
      return { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") }
    },
    catch: (e) => {
      const cause = (e as Error).cause
      return new ComputeError({ host: host.name, message: (e as Error).message, ...(cause === undefined ? {} : { cause }) })
    }
  })

/** http.Agent whose sockets are channels to the remote Docker socket on one SSH connection. */
class StreamLocalAgent extends http.Agent {
  private readonly conn: SshClient
  private readonly socket: string
  private readonly count: () => void
  constructor(conn: SshClient, socket: string, count: () => void) {
    super({ keepAlive: false })
    this.conn = conn
    this.socket = socket
    this.count = count
  }
  override createConnection(_options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    this.count()
    try {
      this.conn.openssh_forwardOutStreamLocal(this.socket, (err, stream) => {
        if (err) return callback?.(err, undefined as unknown as Duplex)
        // http expects a net.Socket; the channel is a Duplex with the same stream surface; these are what it calls.
        const s = stream as unknown as net.Socket & { setKeepAlive?: unknown; setNoDelay?: unknown; setTimeout?: unknown }
        s.setKeepAlive ??= () => s
        s.setNoDelay ??= () => s
        s.setTimeout ??= () => s
        callback?.(null, s)
      })
    } catch (e) {
      // The SSH connection is gone: thrown ("Not connected") rather than passed to the callback.
      callback?.(e as Error, undefined as unknown as Duplex)
    }
    return undefined
  }
}

/** Connects to one configured host for the scope (no API call yet; `preflight` checks it answers). */
export const connectHost = (host: HostConfig): Effect.Effect<DockerHost, ComputeError, import("effect").Scope.Scope> =>
  Effect.gen(function*() {
    const address = parseHostAddress(host.docker)
    if (typeof address === "string") return yield* new ComputeError({ host: host.name, message: address })
    // No `version`: the engine negotiates (Debian's speaks 1.41, current ones require >= 1.44).
    if (address.kind === "unix") {
      const docker = new Docker({ socketPath: address.socket })
      return { name: host.name, address, docker, listenHost: "127.0.0.1", reach: (port: number) => Effect.succeed({ host: "127.0.0.1", port }), sshStats: () => ({ connections: 0, channels: 0 }) }
    }
    if (address.kind === "tcp") {
      const tls = yield* readTls(host)
      const docker = new Docker({ host: address.host, port: address.port, protocol: "https", ...tls })
      // Services listen on the address we reach the engine by: loopback stays loopback.
      return { name: host.name, address, docker, listenHost: address.host, reach: (port: number) => Effect.succeed({ host: address.host, port }), sshStats: () => ({ connections: 0, channels: 0 }) }
    }
    const conn = yield* connectSsh(host, address)
    const stats = { connections: 1, channels: 0 }
    const agent = new StreamLocalAgent(conn, address.socket, () => stats.channels++)
    const docker = new Docker({ protocol: "http", host: "localhost", port: 80, agent } as Docker.DockerOptions)
    return {
      name: host.name, address, docker, listenHost: "127.0.0.1",
      reach: (port: number) => sshTunnel(host.name, conn, port, () => stats.channels++),
      sshStats: () => ({ ...stats })
    }
  })

/** Owner label value: this machine and process, so a later process can tell whether the owner is gone. */
export const ownerId = (): string => `${os.hostname()}:${process.pid}`

/** True when `owner` names a process on this machine that no longer exists; other machines' owners are never judged. */
export const ownerGone = (owner: string): boolean => {
  const i = owner.lastIndexOf(":")
  if (i < 0 || owner.slice(0, i) !== os.hostname()) return false
  const pid = Number(owner.slice(i + 1))
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH"
  }
}

export const redactedEnv = (name: string): Redacted.Redacted<string> | undefined => {
  const v = process.env[name]
  return v === undefined || v === "" ? undefined : Redacted.make(v)
}

export { dockerMessage }
