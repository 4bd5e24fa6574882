#!/usr/bin/env bash
# A real single-node Slurm cluster (Debian 12: Slurm 22.05) for the Slurm tests, on loopback, idempotently:
# munged, slurmctld, slurmd (this machine as node `hostname -s`, 16 CPUs and four fake GPUs declared on a 2-core
# machine), and slurmrestd on 127.0.0.1:6820 with JWT auth (tokens for the normal user dart-slurm). Pitfalls met:
# slurmrestd refuses to run as root and needs SLURM_JWT=daemon; Slurm rejects tokens for root; 22.05 knows no
# CgroupPlugin=disabled (so no cgroup.conf); a gres gpu count without File= leaves the node INVALID.
#
#   scripts/setup-slurm.sh          install the packages when missing, write the config, start what is down, wait
#                                   until the node is idle; one line when all was already done (scripts/setup.sh).
#   scripts/setup-slurm.sh --start  the same without installing (missing packages are an error): what the tests run
#                                   before each Slurm test file; silent and cheap when all is up.
#
# Layout: /etc/slurm/slurm.conf and gres.conf (so sbatch, squeue, scancel, scontrol work without SLURM_CONF),
# /etc/slurm/jwt.key; state, spool and pid files under /var/lib/dart-slurm; logs in /var/log/dart-slurm;
# the tests' shared folders under /var/tmp/dart-slurm (mode 1777). No systemd: the daemons are started here.
set -euo pipefail

MARKER="# written by dart scripts/setup-slurm.sh"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
GRES_CONF="$CONF_DIR/gres.conf"
JWT_KEY="$CONF_DIR/jwt.key"
HOME_DIR=/var/lib/dart-slurm
RUN_DIR="$HOME_DIR/run"
LOG_DIR=/var/log/dart-slurm
SHARED=/var/tmp/dart-slurm
USER_NAME=dart-slurm
REST_ADDR=127.0.0.1
REST_PORT=6820
WAIT_S=60

mode=full
case "${1:-}" in
  "") ;;
  --start) mode=start ;;
  *) echo "usage: $0 [--start]" >&2; exit 2 ;;
esac

say() { echo "slurm: $*"; }
fail() { echo "slurm: $*" >&2; exit 1; }
logs_hint="see $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd.log, $LOG_DIR/slurmrestd.log"

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts the Slurm daemons)"

# A machine with a Slurm of its own (a cluster's login node): its configuration is left alone, nothing is installed,
# and the Slurm tests, which need dart's one-node test cluster, skip themselves here.
if [ -f "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARKER" ]; then
  [ "$mode" = full ] || fail "$CONF belongs to this machine's own Slurm (its first line is not '$MARKER'): the test cluster is not set up here"
  say "$CONF belongs to this machine's own Slurm: left alone; the Slurm tests (they need dart's one-node test cluster) skip here"
  exit 0
fi

# --- packages ------------------------------------------------------------------------------------------------
need=()
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] || need+=(slurm-wlm)
[ -x /usr/sbin/slurmrestd ] || need+=(slurmrestd)
[ -x /usr/sbin/munged ] || need+=(munge)
ls /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so /usr/lib/*/slurm-wlm/auth_jwt.so >/dev/null 2>&1 \
  || need+=(slurm-wlm-jwt-plugin)
if [ ${#need[@]} -gt 0 ]; then
  [ "$mode" = full ] || fail "packages missing (${need[*]}): run scripts/setup-slurm.sh (or scripts/setup.sh) first"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# --- configuration -------------------------------------------------------------------------------------------
if [ -f "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARKER" ]; then
  fail "$CONF exists and was not written by this script (its first line is not '$MARKER'):" \
    "it looks like a real cluster's configuration, so it is left alone. Move it away to set up the test cluster."
fi

host="$(hostname -s)"
mkdir -p "$CONF_DIR" "$HOME_DIR/state" "$HOME_DIR/spool" "$RUN_DIR" "$LOG_DIR"
chmod 0755 "$HOME_DIR"
install -d -m 1777 "$SHARED"
chmod 1777 "$SHARED"

changed=0
# write_if_changed FILE MODE: stdin becomes FILE when its content differs.
write_if_changed() {
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
    changed=1
  fi
}

write_if_changed "$CONF" 0644 <<EOF
$MARKER
# A single-node test cluster on loopback: this machine as node $host with 16 CPUs, 16000 MB and four fake GPUs
# declared (more than the hardware: SlurmdParameters=config_overrides), so that the tests' ~6 jobs run at once.
ClusterName=dart
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$HOME_DIR/state
SlurmdSpoolDir=$HOME_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Quick scancel (SIGTERM, then SIGKILL 5 s later); finished jobs stay visible in squeue for 30 s.
KillWait=5
MinJobAge=30
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=16 Sockets=1 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

write_if_changed "$GRES_CONF" 0644 <<EOF
$MARKER
# Four fake GPUs backed by device files, so that Slurm hands out indices (CUDA_VISIBLE_DEVICES=0..3).
AutoDetect=off
NodeName=$host Name=gpu File=/dev/tty[0-3]
EOF

if [ ! -s "$JWT_KEY" ]; then
  (umask 077; head -c 32 /dev/urandom >"$JWT_KEY")
  changed=1
fi
chown root:root "$JWT_KEY"
chmod 0600 "$JWT_KEY"

# The normal user the REST tests mint tokens for (Slurm rejects tokens for root).
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$HOME_DIR/home" --create-home --shell /bin/bash "$USER_NAME"
fi

# --- daemons -------------------------------------------------------------------------------------------------
# pid_of NAME PIDFILE: the pid in PIDFILE when that process runs and is NAME.
pid_of() {
  local pid
  pid="$(cat "$2" 2>/dev/null || true)"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$1" ] && echo "$pid"
  return 0
}
# stop NAME PIDFILE: SIGTERM to that one process, SIGKILL after 10 s.
stop() {
  local pid
  pid="$(pid_of "$1" "$2")"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -n "$(pid_of "$1" "$2")" ] || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
rest_up() { (exec 3<>"/dev/tcp/$REST_ADDR/$REST_PORT") 2>/dev/null; }
munge_up() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

started=()
if ! munge_up; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null || mungekey -c -f; }
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  # A socket left by a munged that died keeps a new one from starting.
  [ -n "$(pgrep -x munged || true)" ] || rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do munge_up && break; sleep 0.1; done
  munge_up || fail "munged did not start; see /var/log/munge/munged.log"
  started+=(munged)
fi

if [ "$changed" = 1 ]; then
  stop slurmrestd "$RUN_DIR/slurmrestd.pid"
  stop slurmd "$RUN_DIR/slurmd.pid"
  stop slurmctld "$RUN_DIR/slurmctld.pid"
fi

if [ -z "$(pid_of slurmctld "$RUN_DIR/slurmctld.pid")" ]; then
  /usr/sbin/slurmctld || fail "slurmctld did not start; $logs_hint"
  started+=(slurmctld)
fi
if [ -z "$(pid_of slurmd "$RUN_DIR/slurmd.pid")" ]; then
  /usr/sbin/slurmd || fail "slurmd did not start; $logs_hint"
  started+=(slurmd)
fi
if [ -z "$(pid_of slurmrestd "$RUN_DIR/slurmrestd.pid")" ] || ! rest_up; then
  stop slurmrestd "$RUN_DIR/slurmrestd.pid"
  # slurmrestd refuses to run as root; SLURM_JWT=daemon makes it pass each request's token on to slurmctld.
  # Listens on 127.0.0.1 only.
  SLURM_JWT=daemon nohup /usr/sbin/slurmrestd -u nobody -g nogroup -a rest_auth/jwt -s openapi/v0.0.38 \
    "$REST_ADDR:$REST_PORT" </dev/null >>"$LOG_DIR/slurmrestd.log" 2>&1 &
  echo $! >"$RUN_DIR/slurmrestd.pid"
  started+=(slurmrestd)
fi

# --- wait until the node is idle -------------------------------------------------------------------------------
node_state() { sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1; }
deadline=$((SECONDS + WAIT_S))
resumed=
while :; do
  if scontrol ping 2>/dev/null | grep -q 'is UP'; then
    state="$(node_state)"
    case "$state" in
      idle | mixed | allocated | completing) rest_up && break ;;
      down* | drain* | drained* | fail*)
        # Left down or drained by an earlier run (a killed slurmd, a reboot): back to service.
        if [ -z "$resumed" ]; then
          scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
          resumed="$state"
        fi ;;
      invalid*) fail "node $host is INVALID ($(scontrol show node "$host" | grep -o 'Reason=.*')); $logs_hint" ;;
    esac
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    fail "the cluster did not come up within ${WAIT_S}s (scontrol ping: $(scontrol ping 2>&1 | head -n 1);" \
      "node state: ${state:-unknown}; REST on $REST_ADDR:$REST_PORT: $(rest_up && echo up || echo down)); $logs_hint"
  fi
  sleep 0.2
done

if [ ${#started[@]} -gt 0 ] || [ -n "$resumed" ] || [ "$mode" = full ]; then
  say "up: node $host $(node_state), gpu:4, partition debug, REST http://$REST_ADDR:$REST_PORT" \
    "(v0.0.38, JWT for user $USER_NAME)${started[*]:+; started ${started[*]}}${resumed:+; node resumed (was $resumed)}"
fi
