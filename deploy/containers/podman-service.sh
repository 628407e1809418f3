#!/usr/bin/env bash
# podman's Docker-compatible API socket, for testcontainers on machines without Docker.
#
#   eval "$(deploy/containers/podman-service.sh start)"   # starts it (once) and prints the test environment
#   deploy/containers/podman-service.sh stop               # removes the test containers, stops the service
#
# Its images and containers live in a private store under ${XDG_CACHE_HOME:-$HOME/.cache}/meterline/containers,
# apart from /var/lib/containers and from deploy/image/build.sh's store. Needs podman and runc
# (Debian: apt-get install -y podman runc); .ci/run installs them.
set -euo pipefail

dir=${XDG_CACHE_HOME:-$HOME/.cache}/meterline/containers
sock=$dir/podman.sock
pidfile=$dir/podman-service.pid
conf=$dir/containers.conf
runc=$(command -v runc || echo /usr/sbin/runc)

podman_args=(--root "$dir/store/root" --runroot "$dir/store/runroot" --storage-driver overlay
  --runtime "$runc" --cgroup-manager cgroupfs --events-backend file)

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    command -v podman >/dev/null 2>&1 || { echo "podman-service: podman is missing (apt-get install -y podman runc)" >&2; exit 1; }
    mkdir -p "$dir/store/root" "$dir/store/runroot"
    # Without CAP_SYS_RESOURCE the default rlimits cannot be set ("error setting rlimit type 7"); crun does not
    # work with this machine kind's hybrid cgroups, hence runc.
    cat >"$conf" <<EOF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    if ! running; then
      rm -f "$sock"
      # Started directly (not through a function, which would be a subshell), so the recorded pid is podman's.
      CONTAINERS_CONF=$conf podman "${podman_args[@]}" system service --time=0 "unix://$sock" \
        >"$dir/podman-service.log" 2>&1 &
      echo $! >"$pidfile"
      for _ in $(seq 1 100); do
        [ -S "$sock" ] && podman --url "unix://$sock" version >/dev/null 2>&1 && break
        running || { echo "podman-service: the service exited; see $dir/podman-service.log" >&2; exit 1; }
        sleep 0.1
      done
      [ -S "$sock" ] || { echo "podman-service: no socket at $sock after 10 s" >&2; exit 1; }
      echo "podman-service: started pid $(cat "$pidfile") on $sock" >&2
    fi
    # The Ryuk reaper image cannot be had without a registry: the global teardown removes the containers,
    # and `stop` removes what a killed run left.
    echo "export DOCKER_HOST=unix://$sock"
    echo "export TESTCONTAINERS_RYUK_DISABLED=true"
    echo "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
    echo "export METERLINE_TESTCONTAINERS_IMAGES=local"
    ;;
  stop)
    # Through the store itself, not the socket: a run killed with its service leaves containers running too.
    if command -v podman >/dev/null 2>&1 && [ -d "$dir/store/root" ]; then
      ids=$(CONTAINERS_CONF=$conf podman "${podman_args[@]}" ps -aq --filter label=org.testcontainers=true 2>/dev/null || true)
      # shellcheck disable=SC2086 # one id per word
      [ -z "$ids" ] || CONTAINERS_CONF=$conf podman "${podman_args[@]}" rm -f $ids >/dev/null 2>&1 || true
    fi
    if running; then
      kill "$(cat "$pidfile")"
      echo "podman-service: stopped pid $(cat "$pidfile")" >&2
    fi
    rm -f "$pidfile"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
