import * as http from "node:http"
import type * as net from "node:net"

/**
 * A loopback stand-in for an MLflow tracking server: the REST calls `dart run`'s tracking makes, with the real
 * server's wire format (request and reply bodies as MLflow 3 sends them, its error replies, its refusal of a changed
 * param and of a POST without `application/json`), kept in memory. It records every request, and `fail` lets a test
 * answer any request with an error of its choice.
 */

export interface StandInRequest {
  readonly method: string
  readonly path: string
  readonly authorization: string | undefined
  readonly body: string
}

interface Metric {
  readonly key: string
  readonly value: number
  readonly step: number
  readonly timestamp: number
}

export interface StandInRun {
  readonly run_id: string
  readonly experiment_id: string
  readonly run_name: string
  status: string
  start_time: number
  end_time: number | undefined
  lifecycle_stage: string
  readonly params: Map<string, string>
  readonly tags: Map<string, string>
  readonly metrics: Array<Metric>
  readonly artifacts: Map<string, Buffer>
}

export interface MlflowStandIn {
  readonly url: string
  readonly requests: Array<StandInRequest>
  readonly experiments: Map<string, { id: string; name: string; lifecycle_stage: string }>
  readonly runs: Map<string, StandInRun>
  /** Answer a request with `{status, body}` instead of serving it (undefined: serve it). */
  fail: ((r: StandInRequest) => { status: number; body: string } | undefined) | undefined
  /** Replace a reply before it is sent (a hostile or broken server). */
  mangle: ((r: StandInRequest, reply: { status: number; body: string }) => { status: number; body: string }) | undefined
  readonly history: (runId: string, key: string) => Array<Metric>
  readonly close: () => Promise<void>
}

const error = (status: number, code: string, message: string) => ({ status, body: JSON.stringify({ error_code: code, message }) })

export const startMlflowStandIn = async (): Promise<MlflowStandIn> => {
  const requests: Array<StandInRequest> = []
  const experiments = new Map<string, { id: string; name: string; lifecycle_stage: string }>()
  const runs = new Map<string, StandInRun>()
  let nextExperiment = 1
  let nextRun = 1

  const runJson = (r: StandInRun) => {
    const latest = new Map<string, Metric>()
    for (const m of r.metrics) {
      const l = latest.get(m.key)
      if (l === undefined || m.step > l.step || (m.step === l.step && m.timestamp >= l.timestamp)) latest.set(m.key, m)
    }
    return {
      info: {
        run_uuid: r.run_id, experiment_id: r.experiment_id, run_name: r.run_name, user_id: "", status: r.status, start_time: r.start_time,
        ...(r.end_time === undefined ? {} : { end_time: r.end_time }),
        artifact_uri: `mlflow-artifacts:/${r.experiment_id}/${r.run_id}/artifacts`, lifecycle_stage: r.lifecycle_stage, run_id: r.run_id
      },
      data: {
        ...(latest.size > 0 ? { metrics: [...latest.values()] } : {}),
        ...(r.params.size > 0 ? { params: [...r.params].map(([key, value]) => ({ key, value })) } : {}),
        tags: [...r.tags].map(([key, value]) => ({ key, value }))
      },
      inputs: {},
      outputs: {}
    }
  }

  const serve = (req: StandInRequest, url: URL, contentType: string | undefined, raw: Buffer): { status: number; body: string } => {
    const q = url.searchParams
    const artifacts = "/api/2.0/mlflow-artifacts/artifacts/"
    if (req.method === "PUT" && url.pathname.startsWith(artifacts)) {
      const parts = decodeURIComponent(url.pathname.slice(artifacts.length)).split("/")
      const run = runs.get(parts[1] ?? "")
      if (run === undefined || parts[2] !== "artifacts") return error(400, "INVALID_PARAMETER_VALUE", "Invalid path")
      run.artifacts.set(parts.slice(3).join("/"), raw)
      return { status: 200, body: "{}" }
    }
    if (req.method === "POST" && contentType?.split(";")[0] !== "application/json") {
      return error(400, "INVALID_PARAMETER_VALUE", "Bad Request. Content-Type must be one of ['application/json'].")
    }
    const body = req.method === "POST" ? JSON.parse(req.body || "{}") : {}
    const route = url.pathname.replace(/^\/api\/2\.0\/mlflow\//, "")
    switch (`${req.method} ${route}`) {
      case "GET experiments/get-by-name": {
        const e = [...experiments.values()].find((x) => x.name === q.get("experiment_name"))
        if (e === undefined) return error(404, "RESOURCE_DOES_NOT_EXIST", `Could not find experiment with name '${q.get("experiment_name")}'`)
        return { status: 200, body: JSON.stringify({ experiment: { experiment_id: e.id, name: e.name, artifact_location: `mlflow-artifacts:/${e.id}`, lifecycle_stage: e.lifecycle_stage } }) }
      }
      case "POST experiments/create": {
        if ([...experiments.values()].some((x) => x.name === body.name)) return error(400, "RESOURCE_ALREADY_EXISTS", `Experiment '${body.name}' already exists.`)
        const id = String(nextExperiment++)
        experiments.set(id, { id, name: body.name, lifecycle_stage: "active" })
        return { status: 200, body: JSON.stringify({ experiment_id: id }) }
      }
      case "POST runs/create": {
        if (!experiments.has(body.experiment_id)) return error(404, "RESOURCE_DOES_NOT_EXIST", `No Experiment with id=${body.experiment_id} exists`)
        const id = `run${String(nextRun++).padStart(29, "0")}`
        const run: StandInRun = {
          run_id: id, experiment_id: body.experiment_id, run_name: body.run_name ?? "", status: "RUNNING", start_time: body.start_time, end_time: undefined,
          lifecycle_stage: "active", params: new Map(), tags: new Map([["mlflow.runName", body.run_name ?? ""]]), metrics: [], artifacts: new Map()
        }
        for (const t of body.tags ?? []) run.tags.set(t.key, t.value)
        runs.set(id, run)
        return { status: 200, body: JSON.stringify({ run: runJson(run) }) }
      }
      case "GET runs/get": {
        const run = runs.get(q.get("run_id") ?? "")
        if (run === undefined) return error(404, "RESOURCE_DOES_NOT_EXIST", `Run with id=${q.get("run_id")} not found`)
        return { status: 200, body: JSON.stringify({ run: runJson(run) }) }
      }
      case "POST runs/search": {
        const m = /^tags\.`([^`]+)` = '([^']*)'$/.exec(body.filter ?? "")
        const found = [...runs.values()].filter((r) =>
          body.experiment_ids.includes(r.experiment_id) && r.lifecycle_stage === "active" && (m === null || r.tags.get(m[1]!) === m[2]))
        return { status: 200, body: JSON.stringify(found.length === 0 ? {} : { runs: found.map(runJson) }) }
      }
      case "POST runs/log-batch": {
        const run = runs.get(body.run_id)
        if (run === undefined) return error(404, "RESOURCE_DOES_NOT_EXIST", `Run with id=${body.run_id} not found`)
        const metrics = body.metrics ?? []
        const params = body.params ?? []
        const tags = body.tags ?? []
        if (metrics.length > 1000 || params.length > 100 || tags.length > 100 || metrics.length + params.length + tags.length > 1000) {
          return error(400, "INVALID_PARAMETER_VALUE", "A batch logging request can contain at most 1000 metrics, 100 params, 100 tags.")
        }
        for (const x of [...metrics, ...params]) {
          if (!/^[/\w.\- :]*$/.test(x.key)) return error(400, "INVALID_PARAMETER_VALUE", `Invalid value "${x.key}": Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/).`)
        }
        const changed = params.filter((p: { key: string; value: string }) => run.params.has(p.key) && run.params.get(p.key) !== p.value)
        if (changed.length > 0) return error(400, "INVALID_PARAMETER_VALUE", `Changing param values is not allowed. Params were already logged='${JSON.stringify(changed)}' for run ID='${run.run_id}'.`)
        for (const p of params) run.params.set(p.key, p.value)
        for (const t of tags) run.tags.set(t.key, t.value)
        for (const m of metrics) run.metrics.push({ key: m.key, value: m.value, step: m.step ?? 0, timestamp: m.timestamp })
        return { status: 200, body: "{}" }
      }
      case "POST runs/update": {
        const run = runs.get(body.run_id)
        if (run === undefined) return error(404, "RESOURCE_DOES_NOT_EXIST", `Run with id=${body.run_id} not found`)
        run.status = body.status ?? run.status
        if (body.end_time !== undefined) run.end_time = body.end_time
        return { status: 200, body: JSON.stringify({ run_info: runJson(run).info }) }
      }
      default:
        return error(404, "ENDPOINT_NOT_FOUND", `no ${req.method} ${url.pathname}`)
    }
  }

  const standIn: MlflowStandIn = {
    url: "",
    requests,
    experiments,
    runs,
    fail: undefined,
    mangle: undefined,
    history: (runId, key) => (runs.get(runId)?.metrics ?? []).filter((m) => m.key === key),
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }

  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const raw = Buffer.concat(chunks)
      const url = new URL(req.url ?? "/", "http://127.0.0.1")
      const entry: StandInRequest = { method: req.method ?? "GET", path: url.pathname + url.search, authorization: req.headers.authorization, body: raw.toString("utf8") }
      requests.push(entry)
      const reply = standIn.fail?.(entry) ?? serve(entry, url, req.headers["content-type"], raw)
      const sent = standIn.mangle?.(entry, reply) ?? reply
      res.writeHead(sent.status, { "content-type": "application/json" })
      res.end(sent.body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  ;(standIn as { url: string }).url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  return standIn
}
