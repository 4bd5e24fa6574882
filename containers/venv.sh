#!/usr/bin/env bash
# Shell functions for the set-up scripts (sourced).

# need_free DIR GB WHAT: stop before a long install that cannot fit, rather than after it with ENOSPC half-way.
# DART_SETUP_SKIP_DISK_CHECK=1 skips the check.
need_free() {
  local dir="$1" gb="$2" what="$3" free
  [ "${DART_SETUP_SKIP_DISK_CHECK:-}" = 1 ] && return 0
  free="$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')"
  if [ "$free" -lt $((gb * 1024 * 1024)) ]; then
    echo "not enough disk for $what: it needs about $gb GB free in $dir ($(df -Ph "$dir" | awk 'NR == 2 { print $1 }')), only $((free / 1024 / 1024)) GB are." >&2
    echo "Free some space and run the set-up again (it resumes where it stopped); DART_SETUP_SKIP_DISK_CHECK=1 skips this check." >&2
    exit 1
  fi
}

# Used by containers/*/setup-venv.sh: `ensure_venv ROLE STAMP INSTALL` makes containers/ROLE/.venv a link to a
# Python 3.11 environment kept once per machine, in $DART_VENV_HOME (default ~/.cache/dart/venvs) under a name
# keyed by STAMP (the lock file and whatever else decides the contents). Every clone of the repository shares it,
# as they share the Docker images, so a fresh clone costs no new gigabytes. INSTALL is a function called with the
# new environment's path; it runs under a lock (two set-ups at once install once) and without pip's download
# cache (which would keep a second copy of every wheel). An environment counts only once it is complete; a
# different STAMP replaces the role's older environment.
ensure_venv() {
  local role="$1" stamp="$2" install="$3"
  local home="${DART_VENV_HOME:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/dart/venvs}"
  local key target lock old
  # The interpreter is part of the key: an environment links to the Python that made it.
  stamp="$stamp
$(python3.11 -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version)')"
  key="$(printf '%s' "$stamp" | sha256sum | cut -c1-16)"
  mkdir -p "$home"
  home="$(cd "$home" && pwd)"   # the link must hold an absolute path
  target="$home/$role-$key"
  exec {lock}>"$home/$role.lock"
  flock "$lock"
  if [ ! -f "$target/.dart-complete" ] || ! "$target/bin/python" -c '' 2>/dev/null; then
    for old in "$home/$role"-*; do
      if [ -d "$old" ] && [ "$old" != "$target" ]; then
        echo "$role environment: removing the outdated $old"
        rm -rf "$old"
      fi
    done
    rm -rf "$target"
    # About 6 GB installed, plus the downloaded wheels until they are unpacked.
    need_free "$home" 10 "the $role Python environment"
    python3.11 -m venv "$target"
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$install" "$target"
    printf '%s' "$stamp" >"$target/.dart-complete"
  fi
  exec {lock}>&-
  # An environment made inside the clone by an older set-up: replaced by the link.
  if [ -d .venv ] && [ ! -L .venv ]; then rm -rf .venv; fi
  ln -sfn "$target" .venv
}
