import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, openSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { freePort } from "../../support/FreePort.ts"

/**
 * A real MLflow tracking server on loopback, from containers/mlflow/.venv (scripts/setup-mlflow.sh): SQLite backend
 * store and proxied artifacts in a temporary folder, one worker. Without the environment the caller fails, saying how
 * to make it: these tests must not pass by not running.
 */

export const MLFLOW_BIN = path.resolve("containers/mlflow/.venv/bin/mlflow")

export interface MlflowServer {
  readonly url: string
  readonly dir: string
  readonly stop: () => Promise<void>
}

export const startMlflowServer = async (timeoutMs = 180_000): Promise<MlflowServer> => {
  if (!existsSync(MLFLOW_BIN)) {
    throw new Error(`no MLflow server environment at ${MLFLOW_BIN}: run ./scripts/setup.sh (or scripts/setup-mlflow.sh alone) to install it`)
  }
  const dir = mkdtempSync(path.join(tmpdir(), "dart-mlflow-"))
  const port = await freePort()
  const log = path.join(dir, "server.log")
  const out = openSync(log, "a")
  const child: ChildProcess = spawn(MLFLOW_BIN, [
    "server", "--host", "127.0.0.1", "--port", String(port), "--workers", "1",
    "--backend-store-uri", `sqlite:///${path.join(dir, "mlflow.db")}`,
    "--serve-artifacts", "--artifacts-destination", path.join(dir, "artifacts")
  ], {
    cwd: dir,
    detached: true,
    stdio: ["ignore", out, out],
    // No job runner: its queue consumers (a handful of processes) serve features the tests never use.
    env: { ...process.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false" }
  })
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const url = `http://127.0.0.1:${port}`
  const stop = async () => {
    if (child.exitCode !== null || child.pid === undefined) return
    // The server runs its worker as a child process: the whole group goes.
    try {
      process.kill(-child.pid, "SIGTERM")
    } catch {
      return
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // gone already
      }
    }, 10_000)
    await exited
    clearTimeout(timer)
    // Whatever of its group outlived it.
    try {
      process.kill(-child.pid, "SIGKILL")
    } catch {
      // none left
    }
  }
  const started = Date.now()
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mlflow server exited with ${child.exitCode}:\n${readFileSync(log, "utf8").slice(-3000)}`)
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false)
    if (ok) return { url, dir, stop }
    if (Date.now() - started > timeoutMs) {
      await stop()
      throw new Error(`mlflow server did not answer on ${url} within ${timeoutMs / 1000} s:\n${readFileSync(log, "utf8").slice(-3000)}`)
    }
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** GET or POST on the server's REST API, the reply as JSON (a non-2xx reply throws with its body). */
export const rest = async (url: string, endpoint: string, query: Record<string, string> = {}, body?: unknown): Promise<any> => {
  const r = await fetch(`${url}/api/2.0/${endpoint}${Object.keys(query).length > 0 ? `?${new URLSearchParams(query)}` : ""}`, body === undefined
    ? {}
    : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
  const text = await r.text()
  if (!r.ok) throw new Error(`${endpoint}: HTTP ${r.status} ${text.slice(0, 300)}`)
  return JSON.parse(text)
}

/** Every point of a metric (`metrics/get-history`, paged). */
export const history = async (url: string, runId: string, key: string): Promise<Array<{ step: number; value: number }>> => {
  const out: Array<{ step: number; value: number }> = []
  let token: string | undefined
  do {
    const page = await rest(url, "mlflow/metrics/get-history", { run_id: runId, metric_key: key, max_results: "25000", ...(token ? { page_token: token } : {}) })
    out.push(...(page.metrics ?? []).map((m: any) => ({ step: Number(m.step ?? 0), value: Number(m.value) })))
    token = page.next_page_token
  } while (token)
  return out
}

/** Artifact paths of a run, walked through `artifacts/list`. */
export const artifactPaths = async (url: string, runId: string, under = ""): Promise<Array<string>> => {
  const page = await rest(url, "mlflow/artifacts/list", { run_id: runId, ...(under ? { path: under } : {}) })
  const out: Array<string> = []
  for (const f of page.files ?? []) out.push(...(f.is_dir ? await artifactPaths(url, runId, f.path) : [f.path]))
  return out.sort()
}
