/**
 * Credentials belong in the environment, never in a config that is snapshotted into runs/.
 * Every configured URL or address (teacher/judge base URLs, vLLM and classifier endpoints,
 * the trainer's host:port, Docker hosts) is checked here.
 */

const sensitiveParam = /key|token|secret|password|passwd|auth|signature|sig|credential/i

/** Why `value` carries a credential, or undefined when it does not. */
export const credentialProblem = (value: string): string | undefined => {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value)
  let url: URL
  try {
    url = new URL(withScheme ? value : `tcp://${value}`)
  } catch {
    return undefined // not URL-shaped: the field's own check reports it
  }
  if (url.password !== "") return "must not carry credentials (a user:password@ part); use the environment"
  // ssh://user@host names an account, not a secret; anywhere else a user part is a credential.
  if (url.username !== "" && url.protocol !== "ssh:") return "must not carry credentials (a user@ part); use the environment"
  for (const name of url.searchParams.keys()) {
    if (sensitiveParam.test(name)) return `must not carry credentials in its query string (${name}=…); use the environment`
  }
  if (url.hash !== "") return "must not carry a #fragment (credentials are sometimes hidden there); remove it"
  return undefined
}
