import { createHash, createHmac, randomBytes } from "node:crypto"
import { readdirSync, readFileSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import * as path from "node:path"

/**
 * A loopback stand-in for the Hugging Face Hub, serving local folders as model repos in the wire format
 * huggingface_hub 2.4.0 reads (hf_api.model_info / list_repo_tree / auth_check, file_download.get_hf_file_metadata
 * and http_get, utils/_http.hf_raise_for_status):
 *
 *   GET  /api/models/{id}[/revision/{rev}]          model info: sha, siblings, gated, private
 *   GET  /api/models/{id}/auth-check                200, or the gated / not-found answers below
 *   GET  /api/models/{id}/tree/{rev}[/{dir}]         ?recursive=&expand=&cursor=, paginated with Link rel="next"
 *   GET  /api/agent-harnesses                        an empty registry (the client's User-Agent detection)
 *   HEAD|GET /{id}/resolve/{rev}/{path}              small files: 200, ETag (git blob id), X-Repo-Commit, Range;
 *                                                    LFS files: 302 to a signed "CDN" url on a second port, with
 *                                                    X-Linked-Etag (sha256), X-Linked-Size, X-Repo-Commit
 *   HEAD|GET {cdn}/repos/{id}/{sha256}?sig=          the LFS bytes, with Range (206, Content-Range) and throttling
 *
 * Errors carry X-Error-Code / X-Error-Message as the Hub's do: an unknown or unreadable private repo is
 * RepoNotFound (401 anonymous, 404 with a token), a gated repo's files without its token are GatedRepo (401
 * anonymous, 403 with another valid token) while its info and file list stay public, an unknown token is 401
 * "Invalid credentials in Authorization header", a bad revision RevisionNotFound, a missing file EntryNotFound.
 * Xet is never advertised (no X-Xet-Hash, no xetHash in listings), so clients use plain HTTP.
 */
export interface HubRepoSpec {
  readonly dir: string
  readonly gated?: boolean
  readonly token?: string
  readonly private?: boolean
}

export interface HubStandInOptions {
  readonly repos: Record<string, HubRepoSpec>
  /** Per-response rate for file bodies; unset serves them at full speed. */
  readonly throttleBytesPerSecond?: number
  /** Tree entries per page (the Hub's is 1000). */
  readonly pageSize?: number
}

export interface HubRequest {
  readonly method: string
  /** Path without the query; CDN requests start with /repos/. */
  readonly path: string
  readonly authorization?: boolean
  readonly range?: string
  status: number
  /** File-body bytes written to the socket (0 for API answers and HEAD). Status is set when the answer ends. */
  bodyBytes: number
}

interface RepoFile {
  readonly path: string
  readonly abs: string
  readonly size: number
  /** Git blob id of what git stores: the file, or for an LFS file its pointer. */
  readonly oid: string
  readonly lfs?: { readonly sha256: string; readonly pointerSize: number }
}

interface Repo {
  readonly id: string
  readonly spec: HubRepoSpec
  readonly sha: string
  readonly files: ReadonlyArray<RepoFile>
  readonly dirs: ReadonlyArray<string>
}

// Extensions the Hub's default .gitattributes sends to LFS; anything from 10 MiB is LFS too.
const LFS_EXT = new Set([".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".model", ".tiktoken", ".zip", ".tar", ".gz"])
const LFS_MIN = 10 * 1024 * 1024
const CREATED = "2026-01-01T00:00:00.000Z"

const gitOid = (content: Buffer) => createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex")

const walk = (root: string, rel = ""): Array<string> =>
  readdirSync(path.join(root, rel), { withFileTypes: true }).flatMap((e) => {
    const p = rel ? `${rel}/${e.name}` : e.name
    return e.isDirectory() ? walk(root, p) : e.isFile() ? [p] : []
  })

const loadRepo = (id: string, spec: HubRepoSpec): Repo => {
  const files = walk(spec.dir).sort().map((p): RepoFile => {
    const abs = path.join(spec.dir, p)
    const content = readFileSync(abs)
    if (!LFS_EXT.has(path.extname(p)) && content.length < LFS_MIN) return { path: p, abs, size: content.length, oid: gitOid(content) }
    const sha256 = createHash("sha256").update(content).digest("hex")
    const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${content.length}\n`)
    return { path: p, abs, size: content.length, oid: gitOid(pointer), lfs: { sha256, pointerSize: pointer.length } }
  })
  const dirs = [...new Set(files.flatMap((f) => f.path.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"))))].sort()
  const sha = createHash("sha1").update(files.map((f) => `${f.path}\0${f.oid}\n`).join("")).digest("hex")
  return { id, spec, sha, files, dirs }
}

const bearerOf = (req: http.IncomingMessage) => /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1]

const parseRange = (header: string | undefined, size: number): { start: number; end: number } | "unsatisfiable" | undefined => {
  const m = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m) return undefined
  const [, a = "", b = ""] = m
  if (a === "" && b === "") return undefined
  const start = a === "" ? Math.max(0, size - Number(b)) : Number(a)
  const end = a === "" || b === "" ? size - 1 : Math.min(Number(b), size - 1)
  return start >= size || start > end ? "unsatisfiable" : { start, end }
}

export const startHubStandIn = async (options: HubStandInOptions) => {
  const repos = new Map(Object.entries(options.repos).map(([id, spec]) => [id, loadRepo(id, spec)]))
  const tokens = new Set(Object.values(options.repos).flatMap((r) => (r.token ? [r.token] : [])))
  const secret = randomBytes(16).toString("hex")
  const pageSize = options.pageSize ?? 1000
  const requests: Array<HubRequest> = []
  const sockets = new Set<Socket>()
  let hubUrl = ""
  let cdnUrl = ""

  const sign = (repo: string, sha256: string) => createHmac("sha256", secret).update(`${repo}/${sha256}`).digest("hex")

  const fail = (res: http.ServerResponse, status: number, code: string | undefined, message: string) => {
    const body = JSON.stringify({ error: message })
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      "x-error-message": message,
      ...(code ? { "x-error-code": code } : {})
    })
    res.end(body)
  }

  const json = (res: http.ServerResponse, value: unknown, headers: Record<string, string> = {}) => {
    const body = JSON.stringify(value)
    res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body), ...headers })
    res.end(body)
  }

  /** Writes a file body (or its range) at the configured rate, counting what actually left. */
  const sendBytes = (req: http.IncomingMessage, res: http.ServerResponse, record: HubRequest, file: RepoFile, headers: Record<string, string>) => {
    const range = parseRange(req.headers.range, file.size)
    if (range === "unsatisfiable") {
      res.writeHead(416, { "content-range": `bytes */${file.size}`, "content-length": 0 })
      return void res.end()
    }
    const { start, end } = range ?? { start: 0, end: file.size - 1 }
    const length = Math.max(0, end - start + 1)
    res.writeHead(range ? 206 : 200, {
      ...headers,
      "accept-ranges": "bytes",
      "content-length": length,
      ...(range ? { "content-range": `bytes ${start}-${end}/${file.size}` } : {})
    })
    if (req.method === "HEAD") return void res.end()
    const body = readFileSync(file.abs).subarray(start, start + length)
    const rate = options.throttleBytesPerSecond
    if (!rate) {
      record.bodyBytes += body.length
      return void res.end(body)
    }
    const slice = Math.max(1, Math.floor(rate / 20))
    let offset = 0
    const tick = () => {
      if (res.destroyed) return
      const part = body.subarray(offset, offset + slice)
      offset += part.length
      record.bodyBytes += part.length
      if (offset >= body.length) return void res.end(part)
      res.write(part)
      setTimeout(tick, 50)
    }
    tick()
  }

  type Access = { ok: true; repo: Repo; token: string | undefined } | { ok: false }

  /** The Hub's answers for who may see what; `content` is file bytes, which gating guards. */
  const access = (res: http.ServerResponse, id: string, token: string | undefined, content: boolean): Access => {
    const repo = repos.get(id)
    if (!repo || (repo.spec.private && token !== repo.spec.token)) {
      fail(res, token ? 404 : 401, "RepoNotFound", "Repository not found")
      return { ok: false }
    }
    if (content && repo.spec.gated && token !== repo.spec.token) {
      if (token) fail(res, 403, "GatedRepo", `Access to model ${id} is restricted and you are not in the authorized list. Visit ${hubUrl}/${id} to ask for access.`)
      else fail(res, 401, "GatedRepo", `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`)
      return { ok: false }
    }
    return { ok: true, repo, token }
  }

  const revisionOk = (res: http.ServerResponse, repo: Repo, rev: string) => {
    if (rev === "main" || rev === repo.sha) return true
    fail(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`)
    return false
  }

  const modelInfo = (repo: Repo) => {
    let config: Record<string, unknown> | undefined
    const configFile = repo.files.find((f) => f.path === "config.json")
    try {
      const c = configFile ? JSON.parse(readFileSync(configFile.abs, "utf8")) : undefined
      if (c) config = { architectures: c.architectures, model_type: c.model_type }
    } catch {
      config = undefined
    }
    return {
      _id: repo.sha.slice(0, 24), id: repo.id, modelId: repo.id, author: repo.id.split("/")[0], sha: repo.sha,
      lastModified: CREATED, createdAt: CREATED, private: repo.spec.private ?? false, disabled: false,
      gated: repo.spec.gated ? "manual" : false, downloads: 0, likes: 0, library_name: "transformers",
      tags: ["transformers", "safetensors"], pipeline_tag: "text-generation", ...(config ? { config } : {}),
      siblings: repo.files.map((f) => ({ rfilename: f.path })), spaces: [],
      usedStorage: repo.files.reduce((n, f) => n + f.size, 0)
    }
  }

  const treeEntries = (repo: Repo, dir: string, recursive: boolean) => {
    const inside = (p: string) => (dir === "" ? true : p.startsWith(`${dir}/`))
    const direct = (p: string) => !p.slice(dir === "" ? 0 : dir.length + 1).includes("/")
    const keep = (p: string) => inside(p) && (recursive || direct(p))
    return [
      ...repo.dirs.filter(keep).map((d) => ({ type: "directory", oid: createHash("sha1").update(`tree ${d}`).digest("hex"), size: 0, path: d })),
      ...repo.files.filter((f) => keep(f.path)).map((f) => ({
        type: "file", oid: f.oid, size: f.size, path: f.path,
        ...(f.lfs ? { lfs: { oid: f.lfs.sha256, size: f.size, pointerSize: f.lfs.pointerSize } } : {})
      }))
    ].sort((a, b) => a.path.localeCompare(b.path))
  }

  const hub = (req: http.IncomingMessage, res: http.ServerResponse, record: HubRequest) => {
    const url = new URL(req.url ?? "/", hubUrl)
    const parts = url.pathname.split("/").filter((s) => s !== "").map(decodeURIComponent)
    const token = bearerOf(req)
    if (token !== undefined && !tokens.has(token)) return fail(res, 401, undefined, "Invalid credentials in Authorization header")

    // huggingface_hub fetches this registry (once a day) to describe its caller in the User-Agent.
    if (url.pathname === "/api/agent-harnesses" && req.method === "GET") return json(res, { standardEnvVars: ["AI_AGENT", "AGENT"], harnesses: {} })

    if (parts[0] === "api" && parts[1] === "models" && parts.length >= 4 && req.method === "GET") {
      const id = `${parts[2]}/${parts[3]}`
      const rest = parts.slice(4)
      if (rest.length === 0 || (rest[0] === "revision" && rest.length === 2)) {
        const a = access(res, id, token, false)
        if (!a.ok || !revisionOk(res, a.repo, rest[1] ?? "main")) return
        return json(res, modelInfo(a.repo))
      }
      if (rest.length === 1 && rest[0] === "auth-check") {
        const a = access(res, id, token, true)
        if (a.ok) json(res, {})
        return
      }
      if (rest[0] === "tree" && rest.length >= 2) {
        const a = access(res, id, token, false)
        if (!a.ok || !revisionOk(res, a.repo, rest[1]!)) return
        const dir = rest.slice(2).join("/")
        if (dir !== "" && !a.repo.dirs.includes(dir)) return fail(res, 404, "EntryNotFound", `${dir} does not exist on "${rest[1]}"`)
        const all = treeEntries(a.repo, dir, url.searchParams.get("recursive") === "true" || url.searchParams.get("recursive") === "True")
        const from = Number(url.searchParams.get("cursor") ?? 0)
        const page = all.slice(from, from + pageSize)
        const next = new URL(url)
        next.searchParams.set("cursor", String(from + pageSize))
        return json(res, page, from + pageSize < all.length ? { link: `<${next.toString()}>; rel="next"` } : {})
      }
    }

    if (parts[2] === "resolve" && parts.length >= 5 && (req.method === "GET" || req.method === "HEAD")) {
      const id = `${parts[0]}/${parts[1]}`
      const a = access(res, id, token, true)
      if (!a.ok || !revisionOk(res, a.repo, parts[3]!)) return
      const file = a.repo.files.find((f) => f.path === parts.slice(4).join("/"))
      if (!file) {
        res.setHeader("x-repo-commit", a.repo.sha)
        return fail(res, 404, "EntryNotFound", "Entry not found")
      }
      const common = { "x-repo-commit": a.repo.sha, etag: `"${file.oid}"` }
      if (file.lfs) {
        const location = `${cdnUrl}/repos/${id}/${file.lfs.sha256}?sig=${sign(id, file.lfs.sha256)}`
        const body = `Found. Redirecting to ${location}`
        res.writeHead(302, {
          ...common, location, "x-linked-etag": `"${file.lfs.sha256}"`, "x-linked-size": String(file.size),
          "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body)
        })
        return void res.end(req.method === "HEAD" ? undefined : body)
      }
      return sendBytes(req, res, record, file, { ...common, "content-type": file.path.endsWith(".json") ? "application/json" : "text/plain; charset=utf-8" })
    }
    fail(res, 404, undefined, "Not Found")
  }

  const cdn = (req: http.IncomingMessage, res: http.ServerResponse, record: HubRequest) => {
    const url = new URL(req.url ?? "/", cdnUrl)
    const parts = url.pathname.split("/").filter((s) => s !== "").map(decodeURIComponent)
    const id = `${parts[1]}/${parts[2]}`
    const file = parts[0] === "repos" && parts.length === 4 ? repos.get(id)?.files.find((f) => f.lfs?.sha256 === parts[3]) : undefined
    // Signed urls are the only way in: the CDN knows nothing of tokens, as the real one.
    if (!file || (req.method !== "GET" && req.method !== "HEAD") || url.searchParams.get("sig") !== sign(id, parts[3]!)) {
      res.writeHead(403, { "content-type": "application/xml", "content-length": 0 })
      return void res.end()
    }
    sendBytes(req, res, record, file, { etag: `"${file.lfs!.sha256}"`, "content-type": "binary/octet-stream" })
  }

  const serve = (handler: (req: http.IncomingMessage, res: http.ServerResponse, record: HubRequest) => void) =>
    (req: http.IncomingMessage, res: http.ServerResponse) => {
      const record: HubRequest = {
        method: req.method ?? "GET",
        path: new URL(req.url ?? "/", "http://x").pathname,
        ...(req.headers.authorization !== undefined ? { authorization: true } : {}),
        ...(req.headers.range !== undefined ? { range: req.headers.range } : {}),
        status: 0,
        bodyBytes: 0
      }
      requests.push(record)
      res.on("close", () => {
        record.status = res.statusCode
      })
      req.resume()
      req.on("end", () => handler(req, res, record))
    }

  const listen = (handler: http.RequestListener) =>
    new Promise<http.Server>((resolve, reject) => {
      const server = http.createServer(handler)
      server.on("connection", (s) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      })
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => resolve(server))
    })

  const hubServer = await listen(serve(hub))
  const cdnServer = await listen(serve(cdn))
  hubUrl = `http://127.0.0.1:${(hubServer.address() as AddressInfo).port}`
  cdnUrl = `http://127.0.0.1:${(cdnServer.address() as AddressInfo).port}`

  return {
    url: hubUrl,
    cdnUrl,
    requests,
    /** The commit every revision of a repo resolves to. */
    commitOf: (id: string) => repos.get(id)?.sha,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        let open = 2
        const done = () => --open === 0 && resolve()
        hubServer.close(done)
        cdnServer.close(done)
      })
  }
}

export type HubStandIn = Awaited<ReturnType<typeof startHubStandIn>>
