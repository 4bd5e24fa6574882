import { Effect } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import { Client as SshClient } from "ssh2"
import { ComputeError } from "./ComputeError.ts"

/** An SSH account: ssh://user@host[:port]. */
export interface SshAddress {
  readonly user: string
  readonly host: string
  readonly port: number
}

/**
 * One SSH connection per box, acquired for the scope: every Docker API call is a streamlocal channel to the remote
 * socket on it (dockerode's own ssh mode opens a new connection and `dial-stdio` per request) and so is every tunnel.
 */
export const connectSsh = (host: { readonly name: string; readonly identity_file?: string | undefined }, a: SshAddress, keyHint = "compute.hosts[].identity_file") =>
  Effect.acquireRelease(
    Effect.callback<SshClient, ComputeError>((resume) => {
      const key = host.identity_file
      let privateKey: Buffer | undefined
      if (key !== undefined) {
        try {
          privateKey = fs.readFileSync(key)
        } catch (cause) {
          return resume(Effect.fail(new ComputeError({ host: host.name, message: `ssh key ${key} cannot be read`, cause })))
        }
      }
      const agent = privateKey === undefined ? process.env.SSH_AUTH_SOCK : undefined
      if (privateKey === undefined && agent === undefined) {
        return resume(Effect.fail(new ComputeError({ host: host.name, message: `ssh: no key: set ${keyHint} or run an ssh agent (SSH_AUTH_SOCK)` })))
      }
      const conn = new SshClient()
      conn.once("ready", () => resume(Effect.succeed(conn)))
      conn.once("error", (e) => resume(Effect.fail(new ComputeError({ host: host.name, message: `ssh ${a.user}@${a.host}:${a.port}: ${e.message}`, cause: e }))))
      try {
        conn.connect({
          host: a.host, port: a.port, username: a.user, readyTimeout: 15_000, keepaliveInterval: 15_000, keepaliveCountMax: 4,
          ...(privateKey !== undefined ? { privateKey } : { agent: agent! })
        })
      } catch (e) {
        // ssh2 throws (rather than emitting) for a key it cannot parse.
        return resume(Effect.fail(new ComputeError({ host: host.name, message: `ssh ${a.user}@${a.host}:${a.port}: ${key ?? "agent key"}: ${(e as Error).message}`, cause: e })))
      }
      return Effect.sync(() => conn.end())
    }),
    (conn) => Effect.sync(() => conn.end())
  )

/** Local TCP listener on 127.0.0.1:0 whose every connection is a direct-tcpip channel on the shared SSH connection. */
export const sshTunnel = (hostName: string, conn: SshClient, remotePort: number, count: () => void, remoteHost = "127.0.0.1") =>
  Effect.acquireRelease(
    Effect.callback<{ server: net.Server; sockets: Set<net.Socket> }, ComputeError>((resume) => {
      // Open connections are tracked so the release can end them: `close()` alone waits for every one, and one whose
      // box died (SSH cut, engine gone) would hold the scope open forever.
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        count()
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        socket.on("error", () => socket.destroy())
        try {
          conn.forwardOut("127.0.0.1", 0, remoteHost, remotePort, (err, channel) => {
            if (err) return socket.destroy()
            socket.pipe(channel).pipe(socket)
            socket.on("error", () => channel.destroy())
            channel.on("error", () => socket.destroy())
          })
        } catch {
          // The SSH connection is gone ("Not connected", thrown rather than passed to the callback).
          socket.destroy()
        }
      })
      server.once("error", (e) => resume(Effect.fail(new ComputeError({ host: hostName, message: `tunnel to port ${remotePort}: ${e.message}`, cause: e }))))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const s of sockets) s.destroy()
      })
  ).pipe(Effect.map(({ server }) => ({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })))
