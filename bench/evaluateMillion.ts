// Child process of the bench: evaluates a dart predictions file and reports time and peak memory.
import { Effect } from "effect"
import { evaluateDart } from "../src/evaluation/Evaluator.ts"
import { readPredictions } from "../src/evaluation/PredictionReader.ts"

const file = process.argv[2]!
const t0 = performance.now()
const data = await Effect.runPromise(readPredictions(file, ["M0", "DART_H"], { refusals: [] }))
const t1 = performance.now()
evaluateDart(data, { seed: 42, alpha: 0.05, bootstrapResamples: 2000, clusterBootstrap: false, mcResamples: 9999 })
const t2 = performance.now()
process.stdout.write(JSON.stringify({ rows: data.rows, read_s: (t1 - t0) / 1000, evaluate_s: (t2 - t1) / 1000, max_rss_mib: process.resourceUsage().maxRSS / 1024 }) + "\n")
