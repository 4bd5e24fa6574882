/** RunDatasetFiles: where `dart init` writes the out-of-distribution inputs inside a run (paths relative to the run directory). */

/** The original's export of an external suite (docs/external-suites.md). */
export const externalSuiteFile = (suite: string) => `datasets/external/${suite}.jsonl`
export const EXTERNAL_MANIFEST = "datasets/external/manifest.json"
/** The configured open-ended query set (ood.open_ended.file), checked and limited. */
export const OPEN_ENDED_FILE = "datasets/open_ended.jsonl"
