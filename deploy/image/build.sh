#!/usr/bin/env bash
# Builds the meterline image without Docker and without an image registry:
#
#   1. a slim base image, localhost/meterline-base:node24: the Node 24 binary of the npm `node` package
#      (node_modules/node/bin/node, a devDependency), the shared libraries it links, CA certificates and a
#      non-root user (65532), imported with `podman import`;
#   2. the production node_modules, `npm ci --omit=dev` on this host into deploy/image/.deps/ (the base
#      has neither npm nor a shell, so the Dockerfile's npm stage cannot run in it; see DEPS there);
#   3. `podman build` of the repository's Dockerfile on that base: localhost/meterline:<package version>;
#   4. proof: `meterline --help` runs, and `meterline processor` without configuration lists the
#      missing keys and exits 2, both on a read-only root filesystem as a non-root user.
#
# Usage: deploy/image/build.sh [--save <file.tar>] [--tag <tag>]
#   --save  also writes the image with `podman save` (for `ctr -n k8s.io images import`)
#   --tag   the image tag (default: the version in package.json)
#
# podman keeps its images in a private store under ${XDG_CACHE_HOME:-$HOME/.cache}/meterline/podman, so
# nothing collides with other users of /var/lib/containers. `podman` with the same flags reads it:
#   deploy/image/build.sh --print-podman      prints that command line
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

save=''
tag=''
print_podman=0
while (($#)); do
  case "$1" in
    --save) save=${2:?--save needs a file}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --print-podman) print_podman=1; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cache=${XDG_CACHE_HOME:-$HOME/.cache}/meterline
store=$cache/podman
mkdir -p "$store/root" "$store/runroot" "$cache/image"

# podman and runc from Debian when missing. crun does not work with this machine's hybrid cgroups, hence runc.
if ! command -v podman >/dev/null 2>&1 || ! [ -x "$(command -v runc || echo /usr/sbin/runc)" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: podman and runc are missing: apt-get install -y podman runc (as root)" >&2
    exit 1
  fi
  echo "build.sh: installing podman and runc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi
runc=$(command -v runc || echo /usr/sbin/runc)

pm() {
  podman --root "$store/root" --runroot "$store/runroot" --storage-driver overlay \
    --runtime "$runc" --cgroup-manager cgroupfs --events-backend file "$@"
}
if ((print_podman)); then
  echo "podman --root $store/root --runroot $store/runroot --storage-driver overlay --runtime $runc --cgroup-manager cgroupfs --events-backend file"
  exit 0
fi
# Without CAP_SYS_RESOURCE the default rlimits cannot be set: give podman ones it may keep.
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# One build at a time (the staging dir and the base are shared): a second run waits for the first.
exec 9>"$cache/image/build.lock"
flock 9

nodebin=$repo/node_modules/node/bin/node
if ! [ -x "$nodebin" ]; then
  echo "build.sh: node_modules/node/bin/node is missing: running npm ci"
  npm ci --no-audit --no-fund
fi
version=$("$nodebin" -p "require('./package.json').version")
tag=${tag:-$version}
image=localhost/meterline:$tag
base=localhost/meterline-base:node24
started=$(date +%s)

# --- 1. the base ------------------------------------------------------------------------------------------
node_version=$("$nodebin" --version)
case "$node_version" in v24.*) ;; *) echo "build.sh: $nodebin is $node_version, not Node 24" >&2; exit 1 ;; esac
libs=$(ldd "$nodebin" | grep -o '/[^ ]*' | sort -u)
# The base is made again only when its inputs change.
base_key=$(
  {
    echo "base-v1 $node_version"
    sha256sum "$nodebin" /etc/ssl/certs/ca-certificates.crt
    for l in $libs; do sha256sum "$(readlink -f "$l")"; done
  } | sha256sum | cut -c1-16
)
current_key=$(pm image inspect --format '{{ index .Labels "meterline.base-key" }}' "$base" 2>/dev/null || true)
if [ "$current_key" != "$base_key" ]; then
  echo "build.sh: making $base (Node $node_version)"
  rootfs=$cache/image/rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
  chmod 1777 "$rootfs/tmp"
  cp "$nodebin" "$rootfs/usr/local/bin/node"
  strip "$rootfs/usr/local/bin/node" 2>/dev/null || true # drops the debug info: 127 MB → 109 MB
  for l in $libs; do
    mkdir -p "$rootfs$(dirname "$l")"
    cp -L "$l" "$rootfs$l"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' \
    >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"
  echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  chown 65532:65532 "$rootfs/home/nonroot"
  chroot "$rootfs" /usr/local/bin/node -e 'process.exit(process.version.startsWith("v24.") ? 0 : 1)'
  tar --numeric-owner -C "$rootfs" -cf "$cache/image/rootfs.tar" .
  pm rmi -f "$base" >/dev/null 2>&1 || true
  pm import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' \
    --change "LABEL meterline.base-key=$base_key" \
    "$cache/image/rootfs.tar" "$base" >/dev/null
  rm -rf "$rootfs" "$cache/image/rootfs.tar"
fi

# --- 2. production node_modules ---------------------------------------------------------------------------
deps=$repo/deploy/image/.deps
lock_key=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ "$(cat "$deps/.key" 2>/dev/null || true)" != "$lock_key" ]; then
  echo "build.sh: npm ci --omit=dev into deploy/image/.deps"
  rm -rf "$deps"
  mkdir -p "$deps"
  cp package.json package-lock.json "$deps/"
  # npm runs on Node 24 (the project's own), so it resolves exactly as for the app.
  (cd "$deps" && PATH=$(dirname "$nodebin"):$PATH npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$lock_key" >"$deps/.key"
fi

# --- 3. the image -----------------------------------------------------------------------------------------
echo "build.sh: podman build $image"
build_started=$(date +%s)
pm build --isolation chroot "${limits[@]}" --pull=never \
  --build-arg BASE_IMAGE="$base" --build-arg DEPS=staged \
  --label org.opencontainers.image.version="$version" \
  -f Dockerfile -t "$image" . >"$cache/image/build.log" 2>&1 || {
  cat "$cache/image/build.log" >&2
  exit 1
}
build_seconds=$(($(date +%s) - build_started))

# --- 4. proof ---------------------------------------------------------------------------------------------
run() { pm run --rm "${limits[@]}" --read-only --tmpfs /tmp --network none "$image" "$@"; }
help=$(run --help)
grep -q 'processor' <<<"$help" || { echo "build.sh: meterline --help did not list the processor" >&2; exit 1; }
set +e
errors=$(run processor 2>&1)
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q 'KAFKA_BROKERS' <<<"$errors"; then
  echo "build.sh: meterline processor without configuration exited $code (expected 2):" >&2
  echo "$errors" >&2
  exit 1
fi
user=$(pm image inspect --format '{{ .Config.User }}' "$image")
size=$(pm image inspect --format '{{ .Size }}' "$image")

if [ -n "$save" ]; then
  rm -f "$save"
  pm save --format docker-archive -o "$save" "$image"
  echo "build.sh: saved $image to $save ($(du -m "$save" | cut -f1) MB)"
fi

echo "build.sh: $image ready: $((size / 1000000)) MB, user $user, podman build ${build_seconds}s, total $(($(date +%s) - started))s"
echo "build.sh: --help ok; 'processor' without configuration exits 2 with:"
sed 's/^/  /' <<<"$errors" | head -8
