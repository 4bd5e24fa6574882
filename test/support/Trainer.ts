import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs"
import * as path from "node:path"

/** The sidecar's Python (containers/trainer/setup-venv.sh makes it), or DART_TRAINER_PYTHON. */
export const trainerPython = () => {
  const python = process.env.DART_TRAINER_PYTHON ?? path.resolve("containers/trainer/.venv/bin/python")
  if (!existsSync(python)) throw new Error(`no trainer Python at ${python}: run containers/trainer/setup-venv.sh (CI does)`)
  return python
}

export const buildTinyModel = (dir: string) => {
  const r = spawnSync(trainerPython(), ["containers/trainer/tests/tiny_model.py", dir], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
  if (r.status !== 0) throw new Error(`tiny model build failed: ${r.stderr}`)
  return dir
}

/**
 * Starts the real sidecar on a free loopback port; resolves once it listens. Its output goes to a
 * file, not a pipe: tests run `dart` synchronously, and a full pipe would stall the sidecar.
 */
export const startSidecar = (dataDir: string, maxLoraRank = 16) =>
  new Promise<{ address: string; process: ChildProcess; log: string; stop: () => void }>((resolve, reject) => {
    mkdirSync(dataDir, { recursive: true })
    const log = path.join(dataDir, "sidecar.log")
    const fd = openSync(log, "w")
    const child = spawn(trainerPython(), ["-m", "dart_trainer.server", "--host", "127.0.0.1", "--port", "0", "--data-dir", dataDir, "--max-lora-rank", String(maxLoraRank)], {
      cwd: "containers/trainer",
      env: { ...process.env, HF_HUB_OFFLINE: "1", PYTHONUNBUFFERED: "1", TQDM_DISABLE: "1" },
      stdio: ["ignore", fd, fd]
    })
    closeSync(fd)
    const timer = setInterval(() => {
      const m = /LISTENING (\d+)/.exec(readFileSync(log, "utf8"))
      if (m) {
        clearInterval(timer)
        resolve({ address: `127.0.0.1:${m[1]}`, process: child, log, stop: () => child.kill("SIGTERM") })
      }
    }, 50)
    child.on("exit", (code) => {
      clearInterval(timer)
      reject(new Error(`sidecar exited with ${code}: ${readFileSync(log, "utf8").slice(-2000)}`))
    })
  })
