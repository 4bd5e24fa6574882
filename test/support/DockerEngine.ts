import { Effect } from "effect"
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { buildImage, imagePresent } from "../../src/compute/DockerBackend.ts"
import { connectHost } from "../../src/compute/DockerHost.ts"
import type { ServiceSpec } from "../../src/compute/ServiceSpec.ts"
import { freePort } from "./FreePort.ts"

export { freePort }

/** Test doubles for compute: a tiny service image, TLS and recording proxies in front of the engine, an sshd. */

export const SOCKET = "/var/run/docker.sock"
export const BASE_IMAGE = "dart-debian:bookworm"
// Declares a VOLUME, like the trainer image: removing its containers must remove their anonymous volumes too.
export const TEST_IMAGE = "dart-test-svc:4"

// An HTTP server in perl (perl-base is in every Debian): `/health` 200 once `--host/--port` are bound (other
// vLLM flags ignored), a `curl -fsS URL` stand-in so the real specs' health checks run, and a clean SIGTERM.
const serverPl = String.raw`use strict; use IO::Socket::INET; $| = 1;
my %a; for (my $i = 0; $i < @ARGV; $i++) { if ($ARGV[$i] =~ /^--(host|port)$/) { $a{$1} = $ARGV[++$i] } }
my $s = IO::Socket::INET->new(LocalAddr => ($a{host} // "127.0.0.1"), LocalPort => ($a{port} // 8000), Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "serving on $a{host}:$a{port}\n";
$SIG{TERM} = sub { print "stopping\n"; exit 0 };
exit 3 if $ENV{DART_TEST_EXIT};
while (my $c = $s->accept) { my $l = <$c>; print "request $l"; while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
  print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n"; close $c }
`
const curlPl = String.raw`#!/usr/bin/perl
use strict; use IO::Socket::INET; my ($url) = grep { !/^-/ } @ARGV;
my ($h, $p, $path) = $url =~ m{^http://\[?([^\]/]+?)\]?:(\d+)(/.*)?$} or exit 3;
my $c = IO::Socket::INET->new(PeerAddr => $h, PeerPort => $p, Timeout => 3) or exit 7;
print $c "GET " . ($path // "/") . " HTTP/1.0\r\n\r\n"; my $st = <$c>; exit(($st // "") =~ m{^HTTP/\S+ 2} ? 0 : 22);
`

/** Builds the test image through DART's own build path (tar context streamed to the engine), once. */
export const ensureTestImage = async () => {
  const program = Effect.scoped(Effect.gen(function*() {
    const host = yield* connectHost({ name: "local", docker: `unix://${SOCKET}` })
    if (yield* imagePresent(host, TEST_IMAGE)) return
    if (!(yield* imagePresent(host, BASE_IMAGE))) {
      return yield* Effect.die(new Error(`${BASE_IMAGE} is missing: run containers/base/make-base.sh`))
    }
    const ctx = mkdtempSync(path.join(tmpdir(), "dart-img-"))
    writeFileSync(path.join(ctx, "server.pl"), serverPl)
    writeFileSync(path.join(ctx, "curl"), curlPl, { mode: 0o755 })
    writeFileSync(path.join(ctx, "Dockerfile"), `FROM ${BASE_IMAGE}\nCOPY server.pl /srv/server.pl\nCOPY curl /usr/local/bin/curl\nWORKDIR /srv\nVOLUME /srv/data\nENTRYPOINT ["perl", "/srv/server.pl"]\n`)
    yield* buildImage(host, { context: ctx, dockerfile: "Dockerfile", tag: TEST_IMAGE }, () => {})
  }))
  await Effect.runPromise(program)
}

/** A spec for the test image; the real specs' shape with the test server's entrypoint. */
export const testSpec = (port: number, overrides: Partial<ServiceSpec> = {}): ServiceSpec => ({
  role: "vllm", name: "svc", image: TEST_IMAGE, cmd: ["--host", "127.0.0.1", "--port", String(port)], env: {}, secretEnv: {}, port,
  protocol: "http",
  health: { shell: `curl -fsS http://127.0.0.1:${port}/health || exit 1`, intervalS: 1, timeoutS: 2, startPeriodS: 5, retries: 2 },
  gpus: null, shmBytes: null, ipcHost: false, volumes: [], binds: [], filesDir: "/adapters", hubModels: [],
  ...overrides
})

/** CA, server (SAN IP:127.0.0.1) and client (clientAuth) certificates made with openssl. */
export const makeCerts = (dir: string, name = "ca") => {
  mkdirSync(dir, { recursive: true })
  const run = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", `/CN=${name}`)
  writeFileSync(path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
  writeFileSync(path.join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n")
  for (const who of ["server", "client"]) {
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${who === "client" ? "key" : "server-key"}.pem`, "-out", `${who}.csr`, "-subj", `/CN=${who}`)
    run("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", `${who === "client" ? "cert" : "server-cert"}.pem`, "-days", "2", "-extfile", `${who}.ext`)
  }
  return dir
}

/**
 * TLS front for the engine socket with a required client certificate (the engine's own --tlsverify behaviour)
 * instead of a second dockerd: it shares the one engine and its images, so tests need no second image store.
 */
export const tlsProxy = (certDir: string) =>
  new Promise<{ port: number; close: () => Promise<void> }>((resolve) => {
    const read = (f: string) => readFileSync(path.join(certDir, f))
    const server = tls.createServer({ key: read("server-key.pem"), cert: read("server-cert.pem"), ca: read("ca.pem"), requestCert: true, rejectUnauthorized: true }, (client) => {
      const upstream = net.connect(SOCKET)
      client.pipe(upstream).pipe(client)
      client.on("error", () => upstream.destroy())
      upstream.on("error", () => client.destroy())
    })
    server.on("tlsClientError", () => {})
    server.listen(0, "127.0.0.1", () =>
      resolve({ port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) }))
  })

/** A unix-socket proxy to the engine that records every byte the client sends (request lines, headers, bodies). */
export const recordingProxy = (dir: string) =>
  new Promise<{ socket: string; sent: () => string; close: () => Promise<void> }>((resolve) => {
    const socket = path.join(dir, "docker.sock")
    const chunks: Array<Buffer> = []
    const server = net.createServer((client) => {
      const upstream = net.connect(SOCKET)
      client.on("data", (d) => chunks.push(Buffer.from(d)))
      client.pipe(upstream).pipe(client)
      client.on("error", () => upstream.destroy())
      upstream.on("error", () => client.destroy())
    })
    server.listen(socket, () => resolve({ socket, sent: () => Buffer.concat(chunks).toString("latin1"), close: () => new Promise((r) => server.close(() => r())) }))
  })

/** An sshd on a free loopback port with generated host and user keys, socket and TCP forwarding allowed. */
export const startSshd = async (dir: string) => {
  mkdirSync(dir, { recursive: true })
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "host_key")])
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "user_key")])
  writeFileSync(path.join(dir, "authorized_keys"), readFileSync(path.join(dir, "user_key.pub")))
  const port = await freePort()
  const log = path.join(dir, "sshd.log")
  writeFileSync(path.join(dir, "sshd_config"), [
    `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${path.join(dir, "host_key")}`, `PidFile ${path.join(dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`, "PasswordAuthentication no", "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "AllowTcpForwarding yes", "AllowStreamLocalForwarding yes",
    "LogLevel VERBOSE", ""
  ].join("\n"))
  mkdirSync("/run/sshd", { recursive: true })
  const proc: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(dir, "sshd_config"), "-E", log], { stdio: "ignore" })
  // Ready when the port accepts connections.
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1", () => { s.destroy(); r(true) })
      s.on("error", () => r(false))
    })
    if (ok) break
    await new Promise((r) => setTimeout(r, 100))
  }
  const user = execFileSync("id", ["-un"], { encoding: "utf8" }).trim()
  return {
    url: `ssh://${user}@127.0.0.1:${port}`,
    identityFile: path.join(dir, "user_key"),
    /** SSH logins sshd accepted so far. */
    logins: () => (readFileSync(log, "utf8").match(/Accepted publickey/g) ?? []).length,
    stop: () => new Promise<void>((r) => { proc.once("exit", () => r()); proc.kill("SIGTERM") })
  }
}

/** Ids of containers carrying `dart.exp=expId` (all states), straight from the engine. */
export const containersOf = (expId: string) =>
  execFileSync("docker", ["ps", "-aq", "--filter", `label=dart.exp=${expId}`], { encoding: "utf8" }).trim().split("\n").filter((l) => l !== "")

export const uniqueExp = (what: string) => `t${what}${process.pid}${Math.random().toString(36).slice(2, 7)}`
