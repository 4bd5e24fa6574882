import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type HubStandIn, startHubStandIn } from "../support/HubStandIn.ts"
import { buildTinyModel, trainerPython } from "../support/Trainer.ts"

// containers/trainer/dart_trainer/hub_fetch.py against a loopback Hub: what DART's fetch task and preflight run.
const TOKEN = "hf_test_ok"
const MiB = 1024 * 1024
// huggingface_hub 2.4 writes a download in 10 MiB pieces, so only a weight file past that leaves a partial to resume.
const BIG_SIZE = 24 * MiB

const scratch = mkdtempSync(path.join(tmpdir(), "dart-hub-fetch-"))
const dirs = {
  tiny: path.join(scratch, "repos/tiny-chat"),
  gated: path.join(scratch, "repos/gated-chat"),
  binOnly: path.join(scratch, "repos/bin-only"),
  big: path.join(scratch, "repos/big")
}
let hub: HubStandIn

type HubEvent = Record<string, unknown> & { event: string; repo: string }
interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly events: Array<HubEvent>
  readonly garbage: Array<string>
  readonly output: string
}

/** Runs the module as the fetch task does; `killWhen` SIGKILLs it on the first event that matches. */
const hubFetch = (args: ReadonlyArray<string>, env: Record<string, string>, killWhen?: (e: HubEvent) => boolean) =>
  new Promise<Run>((resolve, reject) => {
    // Nothing from the developer's own Hugging Face set-up (a token, offline mode, a cache) may leak in.
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(HF_|HUGGING_FACE_|TRANSFORMERS_OFFLINE)/.test(k)))
    const child = spawn(trainerPython(), ["-m", "dart_trainer.hub_fetch", ...args], { cwd: "containers/trainer", env: { ...base, ...env } })
    const events: Array<HubEvent> = []
    const garbage: Array<string> = []
    let output = ""
    let pending = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk
      pending += chunk
      for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
        const line = pending.slice(0, i)
        pending = pending.slice(i + 1)
        try {
          const e = JSON.parse(line) as HubEvent
          events.push(e)
          if (killWhen?.(e) && !child.killed) child.kill("SIGKILL")
        } catch {
          garbage.push(line)
        }
      }
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk
    })
    child.on("error", reject)
    child.on("close", (code, signal) => {
      if (pending !== "") garbage.push(pending)
      resolve({ code, signal, events, garbage, output })
    })
  })

const online = (home: string, extra: Record<string, string> = {}) => ({ HF_ENDPOINT: hub.url, HF_HOME: home, ...extra })
const last = (run: Run) => run.events.at(-1)
const clean = (run: Run) => {
  expect(run.garbage).toEqual([])
  expect(run.output).not.toContain(TOKEN)
}
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")
const snapshotOf = (home: string, repo: string, sha: string) => path.join(home, "hub", `models--${repo.replace("/", "--")}`, "snapshots", sha)
const bodiesServed = (requests: HubStandIn["requests"], from: number) =>
  requests.slice(from).filter((r) => r.method === "GET" && (r.path.includes("/resolve/") || r.path.startsWith("/repos/")))

/** A single-tensor safetensors file of `bytes` bytes: big enough to be written in several 10 MiB pieces. */
const writeSafetensors = (file: string, bytes: number) => {
  const header = Buffer.from(JSON.stringify({ w: { dtype: "U8", shape: [bytes], data_offsets: [0, bytes] } }))
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(header.length))
  writeFileSync(file, Buffer.concat([length, header, randomBytes(bytes)]))
}

beforeAll(async () => {
  buildTinyModel(dirs.tiny)
  cpSync(dirs.tiny, dirs.gated, { recursive: true })
  // What serving never reads and the download must skip.
  writeFileSync(path.join(dirs.tiny, "pytorch_model.bin"), randomBytes(4096))
  mkdirSync(path.join(dirs.tiny, "original"))
  writeFileSync(path.join(dirs.tiny, "original/params.json"), "{}")
  writeFileSync(path.join(dirs.tiny, "original/consolidated.00.pth"), randomBytes(4096))
  writeFileSync(path.join(dirs.tiny, "model.Q4_K_M.gguf"), randomBytes(4096))
  mkdirSync(dirs.binOnly)
  writeFileSync(path.join(dirs.binOnly, "config.json"), JSON.stringify({ model_type: "llama" }))
  writeFileSync(path.join(dirs.binOnly, "pytorch_model.bin"), randomBytes(4096))
  mkdirSync(dirs.big)
  writeFileSync(path.join(dirs.big, "config.json"), JSON.stringify({ model_type: "llama" }))
  writeSafetensors(path.join(dirs.big, "model.safetensors"), BIG_SIZE)
  hub = await startHubStandIn({
    repos: {
      "dart-test/tiny-chat": { dir: dirs.tiny },
      "dart-test/gated-chat": { dir: dirs.gated, gated: true, token: TOKEN },
      "dart-test/bin-only": { dir: dirs.binOnly },
      "dart-test/big": { dir: dirs.big }
    },
    // Small pages make every listing follow the Link header, as a large repo's does on the Hub.
    pageSize: 3
  })
}, 300_000)
afterAll(async () => {
  await hub?.stop()
  rmSync(scratch, { recursive: true, force: true })
})

describe("hub_fetch --download", () => {
  const home = path.join(scratch, "home-download")
  const served = ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]

  it("fills the HF cache layout with what serving reads, and a second run is answered from the cache", async () => {
    const sha = hub.commitOf("dart-test/tiny-chat")!
    const first = await hubFetch(["--download", "dart-test/tiny-chat"], online(home))
    clean(first)
    expect(first.code).toBe(0)
    const snapshot = snapshotOf(home, "dart-test/tiny-chat", sha)
    const bytes = served.reduce((n, f) => n + statSync(path.join(dirs.tiny, f)).size, 0)
    expect(last(first)).toEqual({ event: "ok", repo: "dart-test/tiny-chat", revision: sha, path: snapshot, bytes, cached: false })
    expect(readdirSync(snapshot).sort()).toEqual(served)
    expect(sha256(path.join(snapshot, "model.safetensors"))).toBe(sha256(path.join(dirs.tiny, "model.safetensors")))
    expect(readFileSync(path.join(home, "hub/models--dart-test--tiny-chat/refs/main"), "utf8")).toBe(sha)
    expect(hub.requests.filter((r) => /\.(bin|pth|gguf)$|\/original\//.test(r.path))).toEqual([])
    expect(hub.requests.filter((r) => r.path === `/api/models/dart-test/tiny-chat/tree/${sha}`).length).toBeGreaterThan(3)

    const mark = hub.requests.length
    const second = await hubFetch(["--download", "dart-test/tiny-chat"], online(home))
    clean(second)
    expect(second.code).toBe(0)
    expect(second.events).toEqual([{ event: "ok", repo: "dart-test/tiny-chat", revision: sha, path: snapshot, bytes, cached: true }])
    expect(bodiesServed(hub.requests, mark)).toEqual([])
  })

  it("reads HF_TOKEN for a gated repo and keeps it off the CDN and out of its output", async () => {
    const denied = await hubFetch(["--download", "dart-test/gated-chat"], online(path.join(scratch, "home-gated")))
    clean(denied)
    expect(denied.code).toBe(2)
    expect(last(denied)).toMatchObject({ event: "error", repo: "dart-test/gated-chat", kind: "gated" })

    const mark = hub.requests.length
    const allowed = await hubFetch(["--download", "dart-test/gated-chat"], online(path.join(scratch, "home-gated"), { HF_TOKEN: TOKEN }))
    clean(allowed)
    expect(allowed.code).toBe(0)
    expect(last(allowed)).toMatchObject({ event: "ok", repo: "dart-test/gated-chat", cached: false })
    const seen = hub.requests.slice(mark)
    expect(seen.filter((r) => r.path.includes("/resolve/")).every((r) => r.authorization === true)).toBe(true)
    const cdn = seen.filter((r) => r.path.startsWith("/repos/"))
    expect(cdn.length).toBeGreaterThan(0)
    expect(cdn.every((r) => r.authorization === undefined)).toBe(true)
  })
})

describe("hub_fetch --check", () => {
  const home = path.join(scratch, "home-check")

  it("finds a gated repo closed without a token and open with it, downloading nothing", async () => {
    const mark = hub.requests.length
    const denied = await hubFetch(["--check", "dart-test/gated-chat"], online(home))
    clean(denied)
    expect(denied.code).toBe(2)
    expect(denied.events).toHaveLength(1)
    const error = denied.events[0]!
    expect(error).toMatchObject({ event: "error", repo: "dart-test/gated-chat", kind: "gated" })
    expect(error.message).toMatch(/dart-test\/gated-chat.*licence.*HF_TOKEN/)

    const allowed = await hubFetch(["--check", "dart-test/gated-chat"], online(home, { HF_TOKEN: TOKEN }))
    clean(allowed)
    expect(allowed.code).toBe(0)
    expect(allowed.events).toEqual([{
      event: "ok", repo: "dart-test/gated-chat", revision: hub.commitOf("dart-test/gated-chat"),
      path: snapshotOf(home, "dart-test/gated-chat", hub.commitOf("dart-test/gated-chat")!), bytes: expect.any(Number), cached: false
    }])
    expect(bodiesServed(hub.requests, mark)).toEqual([])
    expect(existsSync(path.join(home, "hub/models--dart-test--gated-chat/blobs"))).toBe(false)
  })

  it("reports every repo's problem in one run: missing id, no safetensors, rejected token, bad revision", async () => {
    const run = await hubFetch(["--check", "dart-test/no-such-model", "dart-test/tiny-chat", "dart-test/bin-only", "not a repo id"], online(home))
    clean(run)
    expect(run.code).toBe(2)
    expect(run.events.map((e) => [e.repo, e.event, e.kind])).toEqual([
      ["dart-test/no-such-model", "error", "not_found"],
      ["dart-test/tiny-chat", "ok", undefined],
      ["dart-test/bin-only", "error", "no_weights"],
      ["not a repo id", "error", "not_found"]
    ])
    expect(run.events[0]!.message).toContain("dart-test/no-such-model")
    expect(run.events[2]!.message).toMatch(/dart-test\/bin-only.*safetensors/)

    const rejected = await hubFetch(["--check", "dart-test/tiny-chat"], online(home, { HF_TOKEN: "hf_not_a_token" }))
    expect(rejected.output).not.toContain("hf_not_a_token")
    expect(rejected.events).toEqual([expect.objectContaining({ repo: "dart-test/tiny-chat", kind: "unauthorized" })])

    const revision = await hubFetch(["--check", "--revision", "v9", "dart-test/tiny-chat"], online(home))
    expect(revision.code).toBe(2)
    expect(revision.events).toEqual([expect.objectContaining({ kind: "revision_not_found", message: expect.stringContaining("v9") })])
  })

  it("exits 1 on bad usage, printing nothing on stdout", async () => {
    for (const args of [["dart-test/tiny-chat"], ["--check", "--download", "dart-test/tiny-chat"], ["--download"], ["--fetch", "x/y"]]) {
      const run = await hubFetch(args, online(home))
      expect(run.code).toBe(1)
      expect(run.events).toEqual([])
      expect(run.garbage).toEqual([])
    }
  })

  it("calls an unreachable or silent endpoint a network error", async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as net.AddressInfo).port
        s.close(() => resolve(port))
      })
    })
    const refused = await hubFetch(["--check", "dart-test/tiny-chat"], { HF_ENDPOINT: `http://127.0.0.1:${closed}`, HF_HOME: home })
    expect(refused.code).toBe(2)
    expect(refused.events).toEqual([expect.objectContaining({ repo: "dart-test/tiny-chat", kind: "network" })])

    // Accepts connections and never answers: only the module's own time limit ends the call.
    const held: Array<net.Socket> = []
    const silent = net.createServer((s) => void held.push(s))
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    try {
      const started = Date.now()
      const run = await hubFetch(["--check", "dart-test/tiny-chat"], {
        HF_ENDPOINT: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, HF_HOME: home, HF_HUB_ETAG_TIMEOUT: "1"
      })
      expect(run.events).toEqual([expect.objectContaining({ kind: "network" })])
      expect(Date.now() - started).toBeLessThan(30_000)
    } finally {
      for (const s of held) s.destroy()
      silent.close()
    }
  })
})

describe("hub_fetch offline (HF_HUB_OFFLINE=1)", () => {
  const home = path.join(scratch, "home-offline")

  it("--check passes for a complete cached repo and fails for an absent or damaged one, asking nothing of the Hub", async () => {
    const sha = hub.commitOf("dart-test/tiny-chat")!
    expect((await hubFetch(["--download", "dart-test/tiny-chat"], online(home))).code).toBe(0)
    const mark = hub.requests.length
    const offline = { ...online(home), HF_HUB_OFFLINE: "1" }

    const ok = await hubFetch(["--check", "dart-test/tiny-chat", "dart-test/gated-chat"], offline)
    clean(ok)
    expect(ok.code).toBe(2)
    expect(ok.events[0]).toEqual({ event: "ok", repo: "dart-test/tiny-chat", revision: sha, path: snapshotOf(home, "dart-test/tiny-chat", sha), bytes: expect.any(Number), cached: true })
    expect(ok.events[1]).toMatchObject({ event: "error", repo: "dart-test/gated-chat", kind: "not_found" })

    // A weight blob lost from the shared volume: the snapshot's link dangles.
    const blobs = path.join(home, "hub/models--dart-test--tiny-chat/blobs")
    rmSync(path.join(blobs, sha256(path.join(dirs.tiny, "model.safetensors"))))
    const damaged = await hubFetch(["--check", "dart-test/tiny-chat"], offline)
    expect(damaged.events).toEqual([expect.objectContaining({ kind: "not_found", message: expect.stringContaining("model.safetensors") })])
    expect(hub.requests.length).toBe(mark)

    // A download while offline cannot repair it, and says why.
    const download = await hubFetch(["--download", "dart-test/tiny-chat"], offline)
    expect(download.events).toEqual([expect.objectContaining({ kind: "network", message: expect.stringContaining("HF_HUB_OFFLINE") })])
    expect(hub.requests.length).toBe(mark)
  })
})

describe("hub_fetch after a killed download", () => {
  const home = path.join(scratch, "home-resume")
  let slow: HubStandIn

  beforeAll(async () => {
    slow = await startHubStandIn({ repos: { "dart-test/big": { dir: dirs.big } }, throttleBytesPerSecond: 3 * MiB })
  })
  afterAll(() => slow?.stop())

  it("continues the partial weight file with a Range request and reports what was already there", async () => {
    const env = { HF_ENDPOINT: slow.url, HF_HOME: home }
    const weights = path.join(dirs.big, "model.safetensors")
    const size = statSync(weights).size
    const killed = await hubFetch(["--download", "dart-test/big"], env, (e) => e.event === "progress" && Number(e.done_bytes) >= 10 * MiB)
    expect(killed.events.some((e) => e.event === "ok"), "the download finished before it could be killed").toBe(false)
    expect(killed.signal).toBe("SIGKILL")
    const blobs = path.join(home, "hub/models--dart-test--big/blobs")
    const partials = readdirSync(blobs).filter((f) => f.endsWith(".incomplete"))
    expect(partials).toHaveLength(1)
    const had = statSync(path.join(blobs, partials[0]!)).size
    expect(had).toBeGreaterThanOrEqual(10 * MiB)

    const mark = slow.requests.length
    const resumed = await hubFetch(["--download", "dart-test/big"], env)
    clean(resumed)
    expect(resumed.code).toBe(0)
    expect(resumed.events[0]).toMatchObject({ event: "progress", total_bytes: size + statSync(path.join(dirs.big, "config.json")).size })
    expect(Number(resumed.events[0]!.done_bytes)).toBeGreaterThanOrEqual(had)
    expect(last(resumed)).toMatchObject({ event: "ok", repo: "dart-test/big", cached: false })
    const bodies = bodiesServed(slow.requests, mark)
    expect(bodies.map((r) => [r.range, r.status])).toEqual([[`bytes=${had}-`, 206]])
    expect(bodies[0]!.bodyBytes).toBe(size - had)
    expect(readdirSync(blobs).filter((f) => f.endsWith(".incomplete"))).toEqual([])
    expect(sha256(path.join(snapshotOf(home, "dart-test/big", slow.commitOf("dart-test/big")!), "model.safetensors"))).toBe(sha256(weights))
  })

  it("drops a partial whose bytes do not check out and downloads the file whole", async () => {
    const weights = path.join(dirs.big, "model.safetensors")
    const other = path.join(scratch, "home-bad-partial")
    const blobs = path.join(other, "hub/models--dart-test--big/blobs")
    mkdirSync(blobs, { recursive: true })
    writeFileSync(path.join(blobs, `${sha256(weights)}.0badf00d.incomplete`), randomBytes(11 * MiB))
    const mark = hub.requests.length
    const run = await hubFetch(["--download", "dart-test/big"], online(other))
    clean(run)
    expect(run.code).toBe(0)
    expect(bodiesServed(hub.requests, mark).filter((r) => r.path.startsWith("/repos/")).map((r) => [r.range, r.status]))
      .toEqual([[`bytes=${11 * MiB}-`, 206], [undefined, 200]])
    expect(readdirSync(blobs).filter((f) => f.endsWith(".incomplete"))).toEqual([])
    expect(sha256(path.join(snapshotOf(other, "dart-test/big", hub.commitOf("dart-test/big")!), "model.safetensors"))).toBe(sha256(weights))
  })
})
