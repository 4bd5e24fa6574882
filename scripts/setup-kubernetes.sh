#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the Kubernetes tests, idempotently: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built from source (the Go modules in scripts/kubernetes/, see
# SOURCES.md), plus kwok, which fakes two GPU nodes (kwok-gpu-0 and kwok-gpu-1, nvidia.com/gpu: 2 each) and serves
# their kubelet API: pod port-forward, exec and logs through the API server reach local targets set by kwok's
# PortForward / Exec / Logs resources (kwok.x-k8s.io/v1alpha1; kwok pods run no containers).
#
#   scripts/setup-kubernetes.sh [--build]  build the binaries into the cache unless they are there (cold: 6 to 10 min
#                                          on 2 cores, 1 GB of Go modules, 3.5 GB of Go build cache; 0.2 s when cached)
#   scripts/setup-kubernetes.sh --start    (re)start the cluster from the cached binaries (built first when missing)
#                                          and wait until it is ready; one line when it is already up and healthy
#   scripts/setup-kubernetes.sh --stop     stop the cluster (the PKI, tokens and kubeconfigs stay)
#   scripts/setup-kubernetes.sh --status   what runs; fails only when the binaries are not built (the set-up was not
#                                          run here), whether the cluster runs or not
#
# Layout: binaries in ${DART_K8S_CACHE:-/var/cache/dart-k8s}/k8s-<v>_etcd-<v>_kwok-<v>/bin (keyed by the versions);
# state in ${DART_K8S_ROOT:-/var/tmp/dart-k8s}: admin.kubeconfig (cluster-admin) and limited.kubeconfig (user
# dart-limited: get/list/watch pods in namespace dart-test, nothing else), both with context dart-test and namespace
# dart-test; pki/ (CA, certificates, keys, tokens.csv with random tokens, the components' kubeconfigs; made once);
# logs/; run/ (pid files); etcd-data/ (wiped at each start: every start is a fresh, empty cluster).
# Ports, all on 127.0.0.1 (plus ${DART_K8S_PORT_OFFSET:-0}): API server 6443, etcd 12379 (client) and 12380 (peer),
# both TLS with client certificates; controller-manager 10257, scheduler 10259 (health), kwok's kubelet API 10250.
# Beware: kwok's kubelet API on 127.0.0.1:10250 takes no credentials and kwok runs as root, so while an Exec resource
# maps a pod, anyone on this machine can run commands as root through it: delete Exec resources after use.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/kubernetes" && pwd)"
K8S_VERSION="$(sed -n 's|^require k8s.io/kubernetes v\(.*\)$|\1|p' "$HERE/k8s/go.mod")"
ETCD_VERSION="$(sed -n 's|^require go.etcd.io/etcd/server/v3 v\(.*\)$|\1|p' "$HERE/etcd/go.mod")"
KWOK_VERSION="$(cat "$HERE/kwok/VERSION")"
CACHE_ROOT="${DART_K8S_CACHE:-/var/cache/dart-k8s}"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
BIN="$CACHE_ROOT/$KEY/bin"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager etcd kwok)

ROOT="${DART_K8S_ROOT:-/var/tmp/dart-k8s}"
PKI="$ROOT/pki"
RUN="$ROOT/run"
LOGS="$ROOT/logs"
ADDR=127.0.0.1
# DART_K8S_PORT_OFFSET moves every port (a second cluster, or a machine where 6443 is taken).
OFFSET="${DART_K8S_PORT_OFFSET:-0}"
API_PORT=$((6443 + OFFSET))
ETCD_PORT=$((12379 + OFFSET))
ETCD_PEER_PORT=$((12380 + OFFSET))
KCM_PORT=$((10257 + OFFSET))
SCHED_PORT=$((10259 + OFFSET))
KWOK_PORT=$((10250 + OFFSET))
API="https://$ADDR:$API_PORT"
NAMESPACE=dart-test
NODES=(kwok-gpu-0 kwok-gpu-1)
GPUS_PER_NODE=2
# The kwok resources enabled (watched by kwok); their CRDs are in scripts/kubernetes/crds/.
KWOK_CRDS=PortForward,ClusterPortForward,Exec,ClusterExec,Logs,ClusterLogs,Attach,ClusterAttach
WAIT_S=60
# Start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

mode=build
case "${1:-}" in
  "" | --build) ;;
  --start) mode=start ;;
  --stop) mode=stop ;;
  --status) mode=status ;;
  *) echo "usage: $0 [--build|--start|--stop|--status]" >&2; exit 2 ;;
esac

say() { printf '[kubernetes %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf '[kubernetes %s] error: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# --- binaries ----------------------------------------------------------------------------------------------------
cache_ok() {
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$BIN/$b" ] && "$BIN/$b" --version >/dev/null 2>&1 || return 1
  done
}

build() {
  if cache_ok; then
    say "binaries cached: $BIN"
    return 0
  fi
  command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null 2>&1 || fail "no Go toolchain found (go, nor /usr/local/go/bin/go): install Go >= 1.25"
  mkdir -p "$CACHE_ROOT" 2>/dev/null || fail "cannot create $CACHE_ROOT (run as root, or set DART_K8S_CACHE)"
  # One build at a time; a run that waited here finds the binaries built.
  exec 8>"$CACHE_ROOT/.build.lock"
  flock -w 1800 8 || fail "$CACHE_ROOT/.build.lock stayed locked for 30 min"
  if cache_ok; then
    say "binaries cached: $BIN (built by a concurrent run)"
    exec 8>&-
    return 0
  fi
  # Left by a build that was killed: nothing else builds now (the lock).
  rm -rf "$CACHE_ROOT"/.build-*
  local t0 t tmp log ldflags p minor
  t0="$(now)"
  tmp="$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log="$CACHE_ROOT/build-$KEY.log"
  : >"$log"
  mkdir -p "$tmp/$KEY/bin" "$tmp/src"
  # The modules are built in a copy: -mod=mod may rewrite go.mod/go.sum, which must not touch the repository.
  cp -r "$HERE/k8s" "$HERE/etcd" "$tmp/src/"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  ldflags="-s -w -X k8s.io/component-base/version.gitTreeState=clean"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  export CGO_ENABLED=0 GOTOOLCHAIN=local
  say "building Kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION and kwok v$KWOK_VERSION (cold: 6 to 10 min on 2" \
    "cores, 1 GB of Go modules; log: $log)"
  t="$(now)"
  (cd "$tmp/src/k8s" && GOFLAGS="-mod=mod -buildvcs=false" nice go build -trimpath -ldflags "$ldflags" \
    -o "$tmp/$KEY/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-controller-manager) >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "Kubernetes build failed; see $log"; }
  say "kube-apiserver, kube-scheduler, kube-controller-manager built in $(since "$t")"
  t="$(now)"
  (cd "$tmp/src/etcd" && GOFLAGS="-mod=mod -buildvcs=false" nice go build -trimpath -ldflags "-s -w" \
    -o "$tmp/$KEY/bin/etcd" go.etcd.io/etcd/server/v3) >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "etcd build failed; see $log"; }
  say "etcd built in $(since "$t")"
  t="$(now)"
  # kwok needs no wrapper: go install pkg@version builds its own module with its own go.sum.
  (cd "$tmp" && GOFLAGS=-buildvcs=false GOBIN="$tmp/$KEY/bin" nice go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION") >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "kwok build failed; see $log"; }
  say "kwok built in $(since "$t")"
  # Into place in one rename: a killed build leaves no half cache.
  rm -rf "${CACHE_ROOT:?}/$KEY"
  mv -T "$tmp/$KEY" "$CACHE_ROOT/$KEY"
  rm -rf "$tmp"
  trap - EXIT
  exec 8>&-
  cache_ok || fail "the binaries in $BIN do not answer --version"
  say "binaries ready: $BIN ($(du -sh "$BIN" | cut -f1), $(since "$t0") in all)"
}

# --- processes -----------------------------------------------------------------------------------------------------
# pid_of NAME: the pid in run/NAME.pid when that process runs and is NAME (/proc/PID/comm keeps 15 characters);
# not a zombie (an exited daemon stays one until init reaps it, a second or two here).
pid_of() {
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null || true)"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "${1:0:15}" ] &&
    [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)" != Z ] && echo "$pid"
  return 0
}
# stop_one NAME: SIGTERM, SIGKILL after 10 s.
stop_one() {
  local pid
  pid="$(pid_of "$1")"
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -n "$(pid_of "$1")" ] || break; sleep 0.1; done
    if [ -n "$(pid_of "$1")" ]; then
      say "$1 (pid $pid) did not stop within 10s: killed"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/$1.pid"
}
stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_one "${COMPONENTS[$i]}"; done
}
# launch NAME ARGS...: in its own session (it outlives this script and its caller's process group), log rotated,
# without the lock files' descriptors (a daemon holding them would block every later --start).
launch() {
  local name="$1"
  shift
  [ ! -f "$LOGS/$name.log" ] || mv -f "$LOGS/$name.log" "$LOGS/$name.log.1"
  setsid "$BIN/$name" "$@" </dev/null >"$LOGS/$name.log" 2>&1 8>&- 9>&- &
  local pid=$!
  echo "$pid" >"$RUN/$name.pid"
  # Until the forked shell has exec'd setsid and setsid the binary, /proc/PID/comm names those (a while on a
  # loaded machine).
  for _ in $(seq 1 200); do
    [ -z "$(pid_of "$name")" ] || return 0
    [ -d "/proc/$pid" ] && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)" != Z ] || break
    sleep 0.05
  done
  die_with_log "$name" "$name did not start"
}
# die_with_log NAME MESSAGE: fail, showing the end of NAME's log.
die_with_log() {
  {
    echo "--- last lines of $LOGS/$1.log"
    tail -n 25 "$LOGS/$1.log" 2>/dev/null || true
    echo "---"
  } >&2
  stop_all
  fail "$2 (logs in $LOGS)"
}

# --- API helpers -----------------------------------------------------------------------------------------------------
token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "$PKI/tokens.csv"; }
kapi() { curl -sS --max-time 10 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }
code() { kapi -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }
api_ready() { [ "$(code "$API/readyz")" = 200 ]; }
etcd_healthy() {
  curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/etcd-client.crt" --key "$PKI/etcd-client.key" \
    "https://$ADDR:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}
PY="$(command -v /usr/bin/python3 || command -v python3 || true)"
kwok_healthy() { [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$ADDR:$KWOK_PORT/healthz" 2>/dev/null)" = 200 ]; }
nodes_ready() {
  kapi "$API/api/v1/nodes" 2>/dev/null | "$PY" -c '
import json, sys
try:
    items = json.load(sys.stdin)["items"]
except Exception:
    sys.exit(1)
ready = {n["metadata"]["name"] for n in items
         if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions") or [])}
sys.exit(0 if set(sys.argv[1:]) <= ready else 1)' "${NODES[@]}"
}
# create PATH: POSTs the YAML on stdin to PATH; an object that already exists is fine.
create() {
  local body status
  body="$(mktemp)"
  status="$(kapi -o "$body" -w '%{http_code}' -X POST -H 'Content-Type: application/yaml' --data-binary @- "$API$1")" || true
  case "$status" in
    201 | 200 | 409) rm -f "$body" ;;
    *) cat "$body" >&2; rm -f "$body"; die_with_log kube-apiserver "creating $1 failed (HTTP $status)" ;;
  esac
}
healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do [ -n "$(pid_of "$c")" ] || return 1; done
  [ -s "$PKI/tokens.csv" ] || return 1
  ADMIN_TOKEN="$(token_of dart-admin)"
  api_ready && kwok_healthy && nodes_ready
}

# --- PKI, tokens, kubeconfigs --------------------------------------------------------------------------------------
# cert DIR NAME SUBJECT EXTENSIONS: DIR/NAME.key and DIR/NAME.crt, signed by DIR/ca.* (10 years).
cert() {
  local dir="$1" name="$2" subject="$3" ext="$4"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "$subject" |
    openssl x509 -req -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" -days 3650 \
      -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$ext") \
      -out "$dir/$name.crt"
}
# pki_files DIR: the CA, the certificates, the service-account key pair and tokens.csv.
pki_files() {
  local dir="$1"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=dart-k8s-ca" -days 3650 -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  cert "$dir" apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # etcd serves and peers with this one; the API server is its only client (etcd-client).
  cert "$dir" etcd "/CN=etcd" "extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  cert "$dir" etcd-client "/CN=kube-apiserver-etcd-client" "extendedKeyUsage=clientAuth"
  # The API server's client certificate towards the kubelet API (kwok), and kwok's serving certificate, which the
  # API server checks against the CA (--kubelet-certificate-authority).
  cert "$dir" kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  cert "$dir" kwok "/CN=kwok-kubelet" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/sa.key"
  openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub"
  # token,user,uid,"groups": random tokens.
  {
    echo "$(openssl rand -hex 24),dart-admin,dart-admin,\"system:masters\""
    echo "$(openssl rand -hex 24),dart-limited,dart-limited"
    echo "$(openssl rand -hex 24),system:kube-controller-manager,system:kube-controller-manager"
    echo "$(openssl rand -hex 24),system:kube-scheduler,system:kube-scheduler"
    echo "$(openssl rand -hex 24),dart-kwok,dart-kwok,\"system:masters\""
  } >"$dir/tokens.csv"
  chmod 0600 "$dir"/*
}
make_pki() {
  [ -f "$PKI/.complete" ] && return 0
  local tmp t
  t="$(now)"
  tmp="$(mktemp -d "$ROOT/.pki.XXXXXX")"
  chmod 0700 "$tmp"
  # In the background so that set -e holds inside (it would not on the left of ||); openssl's chatter to a log.
  (pki_files "$tmp") >"$tmp.log" 2>&1 &
  wait $! || { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; fail "making the PKI in $PKI failed (openssl)"; }
  rm -f "$tmp.log"
  touch "$tmp/.complete"
  rm -rf "$PKI"
  mv -T "$tmp" "$PKI"
  say "PKI and tokens made in $PKI ($(since "$t"))"
}
# write_if_changed FILE: stdin becomes FILE (mode 0600) when its content differs.
write_if_changed() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"
  chmod 0600 "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
# kubeconfig FILE USER NAMESPACE
kubeconfig() {
  write_if_changed "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dart-k8s
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    token: $(token_of "$2")
contexts:
- name: dart-test
  context:
    cluster: dart-k8s
    user: $2
    namespace: $3
current-context: dart-test
EOF
}
make_kubeconfigs() {
  kubeconfig "$ROOT/admin.kubeconfig" dart-admin "$NAMESPACE"
  kubeconfig "$ROOT/limited.kubeconfig" dart-limited "$NAMESPACE"
  kubeconfig "$PKI/kcm.kubeconfig" system:kube-controller-manager kube-system
  kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler kube-system
  kubeconfig "$PKI/kwok.kubeconfig" dart-kwok default
}

# --- cluster objects -------------------------------------------------------------------------------------------------
node_yaml() {
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
  phase: Running
EOF
}
create_objects() {
  create /api/v1/namespaces <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
EOF
  create "/apis/rbac.authorization.k8s.io/v1/namespaces/$NAMESPACE/roles" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: dart-limited-pod-reader
  namespace: $NAMESPACE
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
EOF
  create "/apis/rbac.authorization.k8s.io/v1/namespaces/$NAMESPACE/rolebindings" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: dart-limited-pod-reader
  namespace: $NAMESPACE
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: dart-limited-pod-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: dart-limited
EOF
  local n
  for n in "${NODES[@]}"; do node_yaml "$n" | create /api/v1/nodes; done
}

# --- modes -----------------------------------------------------------------------------------------------------------
status() {
  local c pid any=0
  if cache_ok; then
    say "binaries built: $BIN"
  else
    say "binaries not built (in $BIN): run scripts/setup-kubernetes.sh --build (or scripts/setup.sh)"
    return 1
  fi
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c")"
    if [ -n "$pid" ]; then
      any=1
      printf '  %-24s running (pid %s, %s MB)\n' "$c" "$pid" "$(($(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0) / 1024))"
    else
      printf '  %-24s down\n' "$c"
    fi
  done
  [ "$any" = 1 ] || { say "cluster not running (state in $ROOT; scripts/setup-kubernetes.sh --start starts it)"; return 0; }
  ADMIN_TOKEN="$(token_of dart-admin)"
  if api_ready; then
    say "API server $API ready; nodes:"
    kapi "$API/api/v1/nodes" | "$PY" -c '
import json, sys
for n in json.load(sys.stdin)["items"]:
    ready = [c["status"] for c in n["status"].get("conditions") or [] if c["type"] == "Ready"]
    print("  %-24s Ready=%s gpu=%s" % (n["metadata"]["name"], (ready or ["?"])[0], n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")))'
  else
    say "API server $API not ready"
  fi
  if healthy; then say "cluster up and healthy"; else say "cluster not healthy: scripts/setup-kubernetes.sh --start restarts it"; fi
  say "kubeconfigs: $ROOT/admin.kubeconfig, $ROOT/limited.kubeconfig; logs in $LOGS"
}

# One start or stop at a time (test files may call --start concurrently); a cold build happens under this lock.
lock_root() {
  exec 9>"$ROOT/.lock"
  flock -w 900 9 || fail "$ROOT/.lock stayed locked for 15 min (holders: $(fuser "$ROOT/.lock" 2>&1 | tr -s ' ' || true))"
}

start() {
  mkdir -p "$ROOT" 2>/dev/null || fail "cannot create $ROOT (run as root, or set DART_K8S_ROOT)"
  mkdir -p "$RUN" "$LOGS"
  lock_root
  if healthy; then
    say "already up: $API ready, nodes ${NODES[*]} Ready (kubeconfig $ROOT/admin.kubeconfig)"
    return 0
  fi
  build
  local t0 port owner
  t0="$(now)"
  stop_all
  for port in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"; do
    owner="$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1)"
    [ -z "$owner" ] || fail "port $port is taken by another process ($owner): stop it (a cluster started with another DART_K8S_ROOT?)"
  done
  make_pki
  make_kubeconfigs
  ADMIN_TOKEN="$(token_of dart-admin)"
  local deadline=$((SECONDS + WAIT_S))
  # wait_for NAME WHAT CHECK...: polls CHECK until it passes; fails with NAME's log when NAME died or time ran out.
  wait_for() {
    local name="$1" what="$2"
    shift 2
    until "$@"; do
      [ -n "$(pid_of "$name")" ] || die_with_log "$name" "$name exited while waiting for $what"
      [ "$SECONDS" -lt "$deadline" ] || die_with_log "$name" "$what: not within ${WAIT_S}s"
      sleep 0.2
    done
  }

  rm -rf "$ROOT/etcd-data"
  launch etcd --name dart --data-dir "$ROOT/etcd-data" \
    --listen-client-urls "https://$ADDR:$ETCD_PORT" --advertise-client-urls "https://$ADDR:$ETCD_PORT" \
    --listen-peer-urls "https://$ADDR:$ETCD_PEER_PORT" --initial-advertise-peer-urls "https://$ADDR:$ETCD_PEER_PORT" \
    --initial-cluster "dart=https://$ADDR:$ETCD_PEER_PORT" \
    --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" --client-cert-auth --trusted-ca-file "$PKI/ca.crt" \
    --peer-cert-file "$PKI/etcd.crt" --peer-key-file "$PKI/etcd.key" --peer-client-cert-auth \
    --peer-trusted-ca-file "$PKI/ca.crt" --unsafe-no-fsync --log-level warn
  wait_for etcd "etcd healthy" etcd_healthy
  say "etcd healthy ($(since "$t0"))"

  launch kube-apiserver --bind-address=$ADDR --advertise-address=$ADDR --secure-port=$API_PORT \
    --etcd-servers="https://$ADDR:$ETCD_PORT" --etcd-cafile="$PKI/ca.crt" \
    --etcd-certfile="$PKI/etcd-client.crt" --etcd-keyfile="$PKI/etcd-client.key" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --profiling=false
  wait_for kube-apiserver "API server /readyz" api_ready
  say "API server ready on $API ($(since "$t0"))"

  launch kube-controller-manager --kubeconfig="$PKI/kcm.kubeconfig" \
    --authentication-kubeconfig="$PKI/kcm.kubeconfig" --authorization-kubeconfig="$PKI/kcm.kubeconfig" \
    --bind-address=$ADDR --secure-port=$KCM_PORT --cert-dir="$ROOT/kcm-certs" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false --profiling=false \
    --controllers='*,-nodeipam,-cloud-node-lifecycle'
  launch kube-scheduler --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --bind-address=$ADDR --secure-port=$SCHED_PORT --cert-dir="$ROOT/scheduler-certs" \
    --leader-elect=false --profiling=false

  # kwok's resources (PortForward, Exec, Logs, ...) must be served before kwok starts watching them.
  local f plural
  for f in "$HERE"/crds/*.yaml; do sed '1{/^---$/d}' "$f" | create /apis/apiextensions.k8s.io/v1/customresourcedefinitions; done
  crds_served() {
    local f plural
    for f in "$HERE"/crds/*.yaml; do
      plural="$(sed -n 's/^    plural: //p' "$f")"
      [ "$(code "$API/apis/kwok.x-k8s.io/v1alpha1/$plural?limit=1")" = 200 ] || return 1
    done
  }
  wait_for kube-apiserver "kwok CRDs served" crds_served
  create_objects

  launch kwok --config="$HERE/kwok-stages.yaml" --kubeconfig="$PKI/kwok.kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector= --node-ip=$ADDR --node-port=$KWOK_PORT \
    --server-address="$ADDR:$KWOK_PORT" --tls-cert-file="$PKI/kwok.crt" --tls-private-key-file="$PKI/kwok.key" \
    --enable-crds="$KWOK_CRDS" --node-lease-duration-seconds=40 --cidr=10.0.1.0/24

  sa_present() {
    [ "$(code "$API/api/v1/namespaces/default/serviceaccounts/default")" = 200 ] &&
      [ "$(code "$API/api/v1/namespaces/$NAMESPACE/serviceaccounts/default")" = 200 ] &&
      [ "$(code "$API/api/v1/namespaces/$NAMESPACE/configmaps/kube-root-ca.crt")" = 200 ]
  }
  wait_for kube-controller-manager "service accounts default in default and $NAMESPACE" sa_present
  [ -n "$(pid_of kube-scheduler)" ] || die_with_log kube-scheduler "kube-scheduler exited"
  wait_for kwok "kwok's kubelet API on $ADDR:$KWOK_PORT" kwok_healthy
  wait_for kwok "nodes ${NODES[*]} Ready" nodes_ready
  local c
  for c in "${COMPONENTS[@]}"; do [ -n "$(pid_of "$c")" ] || die_with_log "$c" "$c exited"; done
  say "up in $(since "$t0"): API $API, nodes ${NODES[*]} Ready (nvidia.com/gpu: $GPUS_PER_NODE each), namespace" \
    "$NAMESPACE; kubeconfigs $ROOT/admin.kubeconfig (admin), $ROOT/limited.kubeconfig (dart-limited); logs $LOGS"
}

case "$mode" in
  build) build ;;
  start) start ;;
  stop)
    if [ -d "$RUN" ]; then
      lock_root
      stop_all
    fi
    say "stopped (PKI, tokens and kubeconfigs kept in $ROOT)"
    ;;
  status) status ;;
esac
