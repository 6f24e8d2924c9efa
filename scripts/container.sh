#!/usr/bin/env bash
# Builds the repository's Dockerfile with podman and runs the image end to end, offline from
# container registries: the base images are made here from Debian packages.
#
#   1. installs podman, buildah, debootstrap, runc (apt-get, when run as root and they are missing)
#   2. debootstrap --variant=minbase from the Debian mirror apt already uses -> localhost/wsgate-base
#   3. a shell-less runtime base from that system's own .debs (libc6, libgcc-s1, tzdata, CA
#      bundle, passwd like distroless cc) -> localhost/wsgate-runtime-base (stands in for
#      gcr.io/distroless/cc-debian12)
#   4. a builder: the minbase + gcc, libc6-dev, make, pkg-config + the host's Rust toolchain
#      (>= 1.89; `rustc --print sysroot`, or RUST_SYSROOT=dir) -> localhost/wsgate-builder
#      (stands in for docker.io/library/rust:1-bookworm)
#   5. podman build --network host (cargo fetches crates from crates.io) -> localhost/wsgate:0.1.0
#   6. runs it as deploy/kubernetes/deployment.yaml does (uid 10001, read-only root, no
#      capabilities) on the host network, every listener on 127.0.0.1, in front of wsgate-echo,
#      and checks: image config, /healthz, /readyz, the image's HEALTHCHECK, the user, no shell,
#      a real WebSocket client (Python websockets, header token minted with hmac) through it,
#      the state dir, a clean SIGTERM stop.
# Prints PASS/FAIL lines, the wall time of each phase and the disk used; exits non-zero on any
# failure. Everything it made is removed at exit unless KEEP_IMAGES=1 (then a rerun reuses the
# three base images and the build's cache mounts: REBUILD_BASES=1 remakes them).
# Podman setups that cannot run containers with the defaults (cgroup v1/v2 hybrid hosts, no
# CAP_SYS_RESOURCE for rlimits) are detected: the script then uses runc and explicit --ulimit
# values and says so.
# Environment: IMAGE (tag, default localhost/wsgate:0.1.0), KEEP_IMAGES, REBUILD_BASES,
# MIRROR (Debian mirror URL), RUST_SYSROOT, BUILD_TIMEOUT (s, default 2700), WORK_PARENT (temp
# dir parent, default /var/tmp: the toolchain copy alone is about 600 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
IMAGE=${IMAGE:-localhost/wsgate:0.1.0}
BASE=localhost/wsgate-base:bookworm
RUNTIME=localhost/wsgate-runtime-base:bookworm
BUILDER=localhost/wsgate-builder:bookworm
SUITE=bookworm
KEEP_IMAGES=${KEEP_IMAGES:-0}
REBUILD_BASES=${REBUILD_BASES:-0}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2700}
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
die() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); exit 1; }
info() { echo "INFO: $*"; }

WORK=$(mktemp -d "${WORK_PARENT:-/var/tmp}/wsgate-container.XXXXXX")
CTR=wsgate-ct-$$
CTR_STARTED=0
ECHO_PID=
SAMPLER_PID=
PODMAN=(podman)
ULIMITS=()
MADE_IMAGES=()
# buildah keeps RUN --mount=type=cache directories in $TMPDIR/buildah-cache (rootful), one per id.
CACHE_DIRS=("${TMPDIR:-/var/tmp}"/buildah-cache/wsgate-cargo-registry "${TMPDIR:-/var/tmp}"/buildah-cache/wsgate-target)
# podman 4.x without systemd logs an error per container with a HEALTHCHECK (it cannot add the
# periodic timer; `podman healthcheck run` works all the same): kept out of the output.
quiet() { grep -v 'unable to get systemd connection' || true; }

# --- timing and disk accounting --------------------------------------------------------------
now_ms() { date +%s%3N; }
used_bytes() { df -B1 --output=used "$WORK" | tail -1 | tr -d ' '; }
mb() { echo $(( $1 / 1048576 )); }
T_START=$(now_ms)
DISK_START=$(used_bytes)
PHASE=
PHASE_T0=
PHASE_LINES=()
phase_end() {
  [ -n "$PHASE" ] || return 0
  local ms=$(( $(now_ms) - PHASE_T0 ))
  PHASE_LINES+=("$(printf '  %-46s %6d.%d s   disk %+6d MB' "$PHASE" $((ms / 1000)) $(((ms % 1000) / 100)) "$(mb $(( $(used_bytes) - DISK_START )))")")
  PHASE=
}
phase() {
  phase_end
  PHASE=$1
  PHASE_T0=$(now_ms)
  printf '\n=== %s (%s; %s free)\n' "$1" "$(date -u +%H:%M:%S)" "$(df -h --output=avail "$WORK" | tail -1 | tr -d ' ')"
}
# Peak disk: the used bytes of the filesystem holding WORK (and, here, /var/lib/containers),
# sampled every second. Anything else writing to that filesystem meanwhile counts too.
( while :; do used_bytes; sleep 1; done ) >"$WORK/disk.samples" 2>/dev/null &
SAMPLER_PID=$!

report() {
  phase_end
  echo
  echo "=== summary"
  echo "phases (wall time; disk = used space on $(df --output=target "$WORK" | tail -1) relative to the start):"
  printf '%s\n' "${PHASE_LINES[@]}"
  local total=$(( $(now_ms) - T_START ))
  printf '  %-46s %6d.%d s\n' "total" $((total / 1000)) $(((total % 1000) / 100))
  if [ -s "$WORK/disk.samples" ]; then
    local peak
    peak=$(sort -n "$WORK/disk.samples" | tail -1)
    echo "peak disk above the start: $(mb $(( peak - DISK_START ))) MB"
  fi
  if command -v podman >/dev/null; then
    echo "images:"
    podman images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' 2>/dev/null | grep -E 'wsgate' || true
    echo "podman storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
    local cache
    for cache in "${CACHE_DIRS[@]}"; do
      [ -d "$cache" ] && echo "build cache mount $cache: $(du -sh "$cache" | cut -f1)"
    done
    echo "work dir ($WORK): $(du -sh "$WORK" 2>/dev/null | cut -f1)"
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [ "$CTR_STARTED" = 1 ]; then
    "${PODMAN[@]}" rm -f -v -t 2 "$CTR" >/dev/null 2>&1
  fi
  [ -n "$ECHO_PID" ] && kill "$ECHO_PID" 2>/dev/null
  report
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null
  if [ "$KEEP_IMAGES" != 1 ] && command -v podman >/dev/null; then
    local img
    for img in "${MADE_IMAGES[@]}"; do podman rmi -f "$img" >/dev/null 2>&1; done
    # The Dockerfile's cache mounts (ids wsgate-cargo-registry, wsgate-target).
    rm -rf "${CACHE_DIRS[@]}"
    rmdir "${TMPDIR:-/var/tmp}"/buildah-cache 2>/dev/null
    echo "removed: ${MADE_IMAGES[*]:-nothing}, the build cache mounts, $WORK"
  else
    echo "kept (KEEP_IMAGES=1): ${MADE_IMAGES[*]:-nothing}; removed $WORK"
  fi
  rm -rf "$WORK"
  if [ "$rc" != 0 ] || [ "$FAILS" != 0 ]; then
    echo "FAIL: scripts/container.sh ($FAILS failed checks, exit $rc)"
    exit 1
  fi
  echo "PASS: scripts/container.sh"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

image_exists() { podman image exists "$1" 2>/dev/null; }

# --- 1. packages -----------------------------------------------------------------------------
phase "install packages"
need=()
for cmd in podman:podman buildah:buildah debootstrap:debootstrap runc:runc crun:crun \
  conmon:conmon fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns curl:curl; do
  command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
[ -x /usr/lib/podman/netavark ] || command -v netavark >/dev/null || need+=(netavark aardvark-dns)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing ${need[*]} (run as root on Debian, or install them)"
  info "apt-get install ${need[*]}"
  if ! timeout 900 apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates uidmap iptables >"$WORK/apt.log" 2>&1; then
    timeout 600 apt-get update -q >>"$WORK/apt.log" 2>&1
    timeout 900 apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates uidmap iptables >>"$WORK/apt.log" 2>&1 ||
      { tail -20 "$WORK/apt.log"; die "apt-get install ${need[*]}"; }
  fi
fi
[ "$(id -u)" = 0 ] || die "rootful podman is needed here (debootstrap, chroot): run as root"
info "$(podman --version); $(runc --version 2>/dev/null | head -1); $(crun --version 2>/dev/null | head -1)"
info "podman: $(podman info --format 'storage {{.Store.GraphDriverName}} on {{index .Store.GraphStatus "Backing Filesystem"}}, cgroups {{.Host.CgroupsVersion}} ({{.Host.CgroupManager}}), network backend {{.Host.NetworkBackend}}, runtime {{.Host.OCIRuntime.Name}}' 2>/dev/null)"

# --- 2. minbase --------------------------------------------------------------------------------
# The Debian mirror apt uses (deb822 .sources first, then one-line .list files).
mirror() {
  local m
  m=$(awk '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == s) {print u; exit}}' s="$SUITE" \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  if [ -z "$m" ]; then
    m=$(awk '$1 == "deb" {for (i = 2; i < NF; i++) if ($i ~ /^(https?|file):/ && $(i + 1) == s) {print $i; exit}}' s="$SUITE" \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(mirror)}
ROOT=$WORK/minbase
bases_present() { image_exists "$BASE" && image_exists "$RUNTIME" && image_exists "$BUILDER"; }
if [ "$REBUILD_BASES" != 1 ] && bases_present; then
  info "reusing $BASE, $RUNTIME, $BUILDER (REBUILD_BASES=1 remakes them)"
  MADE_IMAGES+=("$BASE" "$RUNTIME" "$BUILDER")
  SKIP_BASES=1
else
  SKIP_BASES=0
fi

if [ "$SKIP_BASES" = 0 ]; then
  phase "debootstrap minbase ($SUITE)"
  info "mirror $MIRROR"
  timeout 900 debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; die "debootstrap --variant=minbase $SUITE $ROOT $MIRROR"; }
  # The builder gets its packages in a chroot of a copy, before the copy is trimmed.
  cp -a "$ROOT" "$WORK/builder"
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* \
    "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/*
  mv "$ROOT"/var/cache/apt/archives "$WORK/debs"
  mkdir -p "$ROOT"/var/cache/apt/archives/partial
  phase "import $BASE"
  tar -C "$ROOT" -c . | timeout 300 podman import -q - "$BASE" >/dev/null
  MADE_IMAGES+=("$BASE")
fi

# --- 3. can containers run here? ---------------------------------------------------------------
phase "probe the container runtime"
probe() { timeout 60 "$@" --rm --network none "$BASE" /bin/true 2>&1; }
if out=$(probe podman run); then
  info "podman run works with the defaults"
else
  info "podman run $BASE /bin/true with the defaults failed: $out"
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  ULIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
  if out2=$(probe podman run "${ULIMITS[@]}"); then
    info "works with ${ULIMITS[*]} (the sandbox cannot raise rlimits: no CAP_SYS_RESOURCE)"
  else
    info "with ${ULIMITS[*]}: $out2"
    if command -v runc >/dev/null && out3=$(probe podman --runtime runc run "${ULIMITS[@]}"); then
      PODMAN=(podman --runtime runc)
      info "works with --runtime runc ${ULIMITS[*]}"
    else
      die "containers cannot run here. Command: podman run --rm --network none $BASE /bin/true -> $out; with ${ULIMITS[*]} -> $out2; with --runtime runc ${ULIMITS[*]} -> ${out3:-runc not installed}"
    fi
  fi
fi
pass "containers run here: ${PODMAN[*]} run ${ULIMITS[*]}"

if [ "$SKIP_BASES" = 0 ]; then
  # --- 4. runtime base: no shell, like distroless cc -------------------------------------------
  phase "runtime base (no shell)"
  RT=$WORK/runtime
  mkdir -p "$RT"
  for p in libc6 libgcc-s1 gcc-12-base tzdata base-files netbase; do
    for deb in "$WORK"/debs/"${p}"_*.deb; do [ -e "$deb" ] && dpkg-deb -x "$deb" "$RT"; done
  done
  rm -rf "$RT"/usr/share/doc "$RT"/usr/share/man "$RT"/usr/share/info "$RT"/usr/share/lintian \
    "$RT"/usr/share/locale "$RT"/usr/bin "$RT"/usr/sbin "$RT"/bin "$RT"/sbin "$RT"/usr/libexec \
    "$RT"/etc/profile* "$RT"/etc/skel "$RT"/etc/update-motd.d "$RT"/etc/dot.bashrc
  for p in libc6 libgcc-s1; do [ -n "$(find "$RT" -name "${p%%[0-9-]*}*.so*" -print -quit)" ] || die "runtime base: $p not unpacked"; done
  mkdir -p "$RT"/etc/ssl/certs "$RT"/tmp "$RT"/home/nonroot "$RT"/var/lib "$RT"/run
  chmod 1777 "$RT"/tmp
  chown 65532:65532 "$RT"/home/nonroot
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$RT"/etc/passwd
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$RT"/etc/group
  [ -x "$RT"/bin/sh ] && die "runtime base has a shell"

  # --- 5. builder --------------------------------------------------------------------------------
  phase "builder: gcc, libc6-dev, make (chroot apt)"
  B=$WORK/builder
  cp /etc/resolv.conf "$B"/etc/resolv.conf 2>/dev/null || true
  timeout 900 chroot "$B" apt-get install -y -q --no-install-recommends gcc libc6-dev make pkg-config ca-certificates \
    >"$WORK/apt-builder.log" 2>&1 || { tail -20 "$WORK/apt-builder.log"; die "chroot apt-get install gcc libc6-dev make pkg-config"; }
  chroot "$B" apt-get clean
  rm -rf "$B"/var/lib/apt/lists/* "$B"/usr/share/doc/* "$B"/usr/share/man/*
  # The runtime base gets Debian's CA bundle (as distroless has); the builder also trusts the
  # CAs this host added locally (a TLS-inspecting egress proxy in front of crates.io, say),
  # or cargo inside the build cannot fetch crates.
  cp "$B"/etc/ssl/certs/ca-certificates.crt "$RT"/etc/ssl/certs/ca-certificates.crt
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$B"/usr/local/share/ca-certificates/
    chroot "$B" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the builder"
    info "builder trusts this host's local CAs too: $(cd /usr/local/share/ca-certificates && echo *.crt)"
  fi
  phase "import $RUNTIME"
  tar -C "$RT" -c . | timeout 300 podman import -q \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' - "$RUNTIME" >/dev/null
  MADE_IMAGES+=("$RUNTIME")

  phase "builder: copy the Rust toolchain, import"
  SYSROOT=${RUST_SYSROOT:-$(PATH="$HOME/.cargo/bin:$PATH" rustc --print sysroot)}
  "$SYSROOT"/bin/rustc --version >/dev/null || die "no rustc in $SYSROOT"
  ver=$("$SYSROOT"/bin/rustc --version | awk '{print $2}')
  [ "$(printf '%s\n' 1.89.0 "${ver%%-*}" | sort -V | head -1)" = 1.89.0 ] || die "rustc $ver in $SYSROOT is older than 1.89 (Cargo.toml rust-version)"
  [ -x "$SYSROOT"/bin/cargo ] || die "no cargo in $SYSROOT"
  info "toolchain $SYSROOT: rustc $ver, $("$SYSROOT"/bin/cargo --version)"
  mkdir -p "$B"/usr/local/rust "$B"/usr/local/cargo
  # Docs are most of a rustup toolchain (about 800 MB) and a build needs none of them.
  tar -C "$SYSROOT" --exclude=./share/doc --exclude=./share/man -c . | tar -C "$B"/usr/local/rust -x
  tar -C "$B" -c . | timeout 600 podman import -q \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' - "$BUILDER" >/dev/null
  MADE_IMAGES+=("$BUILDER")
  rm -rf "$B" "$RT" "$ROOT" "$WORK/debs"
fi

# --- 6. the Dockerfile ---------------------------------------------------------------------------
phase "podman build $IMAGE"
# --layers=false: no intermediate images are left behind; the cache mounts carry what a rebuild
# reuses (crates and the target dir).
MADE_IMAGES+=("$IMAGE")
if ! timeout "$BUILD_TIMEOUT" "${PODMAN[@]}" build --format docker --network host --pull=never --layers=false \
  "${ULIMITS[@]}" --build-arg BUILDER_IMAGE="$BUILDER" --build-arg RUNTIME_IMAGE="$RUNTIME" \
  -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log"
  die "podman build (log above)"
fi
grep -E '^(STEP|COMMIT)|Finished|Compiling wsgate ' "$WORK/build.log" | cut -c1-160
pass "podman build -t $IMAGE (wsgate:0.1.0) from the Dockerfile with local base images"

# --- 7. image configuration ---------------------------------------------------------------------
phase "image checks"
cfg() { podman image inspect --format "$1" "$IMAGE"; }
[ "$(cfg '{{.Config.User}}')" = 10001:10001 ] && pass "image user 10001:10001" || fail "image user: $(cfg '{{.Config.User}}')"
[ "$(cfg '{{json .Config.Entrypoint}}')" = '["/usr/local/bin/wsgate"]' ] && pass "ENTRYPOINT [\"/usr/local/bin/wsgate\"]" || fail "entrypoint: $(cfg '{{json .Config.Entrypoint}}')"
[ "$(cfg '{{json .Config.Cmd}}')" = '["serve","--config","/etc/wsgate/wsgate.toml"]' ] && pass "CMD serve --config /etc/wsgate/wsgate.toml" || fail "cmd: $(cfg '{{json .Config.Cmd}}')"
ports=$(cfg '{{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}')
[[ "$ports" == *8443/tcp* && "$ports" == *9090/tcp* ]] && pass "EXPOSE $ports" || fail "exposed ports: $ports"
vols=$(cfg '{{range $p, $v := .Config.Volumes}}{{$p}} {{end}}')
[[ "$vols" == *"/var/lib/wsgate"* ]] && pass "VOLUME $vols" || fail "volumes: $vols"
hc=$(cfg '{{json .Config.Healthcheck}}')
[[ "$hc" == *'"CMD","/usr/local/bin/wsgate","healthcheck"'* ]] && pass "HEALTHCHECK exec form, no shell: $hc" || fail "healthcheck: $hc"
if "${PODMAN[@]}" run --rm "${ULIMITS[@]}" --network none --no-healthcheck --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
  fail "the image has a working /bin/sh"
else
  pass "no /bin/sh in the image (the runtime needs none)"
fi
ver_out=$("${PODMAN[@]}" run --rm "${ULIMITS[@]}" --network none --no-healthcheck --read-only "$IMAGE" --version 2>&1) &&
  pass "wsgate --version in the image: $ver_out" || fail "wsgate --version: $ver_out"

# --- 8. run it --------------------------------------------------------------------------------
phase "run the container"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
VENV=$WORK/venv
if ! { timeout 120 python3 -m venv "$VENV" && timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'; } >"$WORK/pip.log" 2>&1; then
  tail -5 "$WORK/pip.log"; die "python venv with websockets"
fi
ECHO_BIN=
for b in "$REPO"/target/debug/wsgate-echo "$REPO"/target/release/wsgate-echo; do [ -x "$b" ] && ECHO_BIN=$b && break; done
if [ -n "$ECHO_BIN" ]; then
  "$ECHO_BIN" --listen 127.0.0.1:0 >"$WORK/echo.out" 2>&1 &
else
  # No built echo backend (CI runs this after its build dirs are gone): the same behaviour in
  # Python -- /whoami greets with the request's headers, then every message is echoed.
  cat >"$WORK/echo.py" <<'PY'
import asyncio, json
from websockets.asyncio.server import serve

async def handle(ws):
    if ws.request.path.startswith("/whoami"):
        seen = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        seen["path"] = ws.request.path
        await ws.send(json.dumps(seen))
    async for m in ws:
        await ws.send(m)

async def main():
    async with serve(handle, "127.0.0.1", 0) as server:
        print("echo listening ws://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

asyncio.run(main())
PY
  "$VENV/bin/python" -u "$WORK/echo.py" >"$WORK/echo.out" 2>&1 &
fi
ECHO_PID=$!
for _ in $(seq 1 100); do grep -q 'echo listening' "$WORK/echo.out" && break; sleep 0.1; done
ECHO_ADDR=$(sed -n 's|^echo listening ws://||p' "$WORK/echo.out")
[ -n "$ECHO_ADDR" ] || die "the echo backend did not start: $(cat "$WORK/echo.out")"
GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
mkdir -p "$WORK/conf"
cat >"$WORK/conf/wsgate.toml" <<TOML
# Written by scripts/container.sh: the container on the host network, everything on loopback.
[server]
listen = "127.0.0.1:$GW_PORT"
state_dir = "/var/lib/wsgate"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[[auth.keys]]
kid = "ct"
algorithm = "HS256"
secret_env = "WSGATE_JWT_SECRET"
[[routes]]
path = "/ws"
upstream = "ws://$ECHO_ADDR/whoami"
allow_missing_origin = true
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes.messages]]
type = "chat.read"
scope = "chat:read"
TOML
chmod 755 "$WORK/conf"; chmod 644 "$WORK/conf/wsgate.toml"
WSGATE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export WSGATE_JWT_SECRET
# As deploy/kubernetes/deployment.yaml runs it: read-only root, no capabilities, no privilege
# escalation; the default CMD; the HEALTHCHECK pointed at this run's admin port.
CTR_STARTED=1
run_out=$("${PODMAN[@]}" run -d --name "$CTR" --network host "${ULIMITS[@]}" \
  --read-only --cap-drop ALL --security-opt no-new-privileges \
  -v "$WORK/conf:/etc/wsgate:ro" -e WSGATE_JWT_SECRET -e "WSGATE_HEALTHCHECK_ADDR=127.0.0.1:$ADMIN_PORT" \
  "$IMAGE" 2>&1) || die "podman run: $run_out"
printf '%s\n' "$run_out" | grep -v '^[0-9a-f]\{64\}$' | quiet | sed 's/^/  podman run: /'
[ -S /run/systemd/private ] || info "no systemd here: podman sets up no periodic health timer (its error lines are filtered); checked with podman healthcheck run"
up=0
for _ in $(seq 1 300); do
  if curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1; then up=1; break; fi
  [ "$(podman inspect --format '{{.State.Running}}' "$CTR" 2>/dev/null)" = true ] || break
  sleep 0.1
done
if [ "$up" != 1 ]; then
  podman logs "$CTR" 2>&1 | tail -20
  die "the container did not answer /healthz on 127.0.0.1:$ADMIN_PORT"
fi
pass "container up: GET /healthz -> $(curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/healthz")"

# --- 9. checks against the running container ------------------------------------------------------
phase "checks"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$ADMIN_PORT/readyz")
[ "$code" = 200 ] && pass "GET /readyz -> 200" || fail "GET /readyz -> $code"
# Read whole, then searched: `curl | grep -q` under pipefail fails once the body outgrows the
# pipe buffer (grep exits at the first match and curl gets SIGPIPE).
metrics=$(curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
grep -q '^wsgate_' <<<"$metrics" && pass "GET /metrics has wsgate_ series" || fail "GET /metrics"
if hc_out=$(timeout 30 "${PODMAN[@]}" healthcheck run "$CTR" 2>&1); then
  pass "podman healthcheck run (the image's HEALTHCHECK, no shell): ${hc_out:-exit 0}"
else
  fail "podman healthcheck run: $hc_out"
fi
hc_bin() { timeout 20 "${PODMAN[@]}" run --rm "${ULIMITS[@]}" --network host --no-healthcheck "$IMAGE" healthcheck --admin "$@" 2>&1 | quiet; }
closed=$(free_port)
if out=$(hc_bin "127.0.0.1:$closed"; exit "${PIPESTATUS[0]}"); then
  fail "wsgate healthcheck against a closed port exited 0: $out"
else
  pass "wsgate healthcheck against a closed port fails: $out"
fi
out=$(hc_bin "127.0.0.1:$ADMIN_PORT") && [ "$out" = healthy ] && pass "wsgate healthcheck --admin 127.0.0.1:$ADMIN_PORT: $out" || fail "wsgate healthcheck: $out"
status=$(podman inspect --format '{{.State.Health.Status}}' "$CTR" 2>/dev/null || podman inspect --format '{{.State.Healthcheck.Status}}' "$CTR" 2>/dev/null)
[ "$status" = healthy ] && pass "health status: $status" || fail "health status: ${status:-none}"
top=$(podman top "$CTR" user huser group args 2>&1)
if printf '%s\n' "$top" | awk 'NR > 1 && /wsgate/ {found = 1; if ($1 != "10001" || $2 != "10001" || $3 != "10001") bad = 1} END {exit !(found && !bad)}'; then
  pass "runs as uid 10001, gid 10001 (podman top: $(printf '%s\n' "$top" | tail -n +2 | head -1 | tr -s ' '))"
else
  fail "process user: $top"
fi
pid=$(podman inspect --format '{{.State.Pid}}' "$CTR")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
[ "$uids" = "10001 10001 10001 10001" ] && [ "$caps" = 0000000000000000 ] &&
  pass "host /proc/$pid/status: Uid $uids, CapEff $caps" || fail "host /proc/$pid/status: Uid $uids, CapEff $caps"
state_src=$(podman inspect --format '{{range .Mounts}}{{if eq .Destination "/var/lib/wsgate"}}{{.Source}}{{end}}{{end}}' "$CTR")
if [ -n "$state_src" ] && [ "$(stat -c %u "$state_src/revocations.jsonl" 2>/dev/null)" = 10001 ]; then
  pass "state_dir volume writable by 10001 under a read-only root (revocations.jsonl created)"
else
  fail "state_dir: ${state_src:-no volume} $(ls -ln "$state_src" 2>&1)"
fi

cat >"$WORK/client.py" <<'PY'
"""A real WebSocket client through the containerised gateway: token refusal, identity headers
upstream, echo of an allowed message, refusal of one the token's scopes do not allow."""
import asyncio, base64, hashlib, hmac, json, os, sys, time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret: str, sub: str, scope: str) -> str:
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ct"}).encode())
    body = b64(json.dumps({"sub": sub, "scope": scope, "iat": now, "exp": now + 300}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def main(url: str) -> int:
    fails = 0

    def check(ok: bool, what: str) -> None:
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    try:
        async with connect(url, open_timeout=5):
            check(False, "handshake without a token refused")
    except InvalidStatus as e:
        check(e.response.status_code == 401, f"handshake without a token -> {e.response.status_code}")
    tok = token(os.environ["WSGATE_JWT_SECRET"], "container-check", "chat:write")
    async with connect(url, additional_headers={"Authorization": "Bearer " + tok}, open_timeout=5) as ws:
        seen = json.loads(await asyncio.wait_for(ws.recv(), 5))
        check(seen.get("x-wsgate-subject") == "container-check", f"upstream saw X-Wsgate-Subject: {seen.get('x-wsgate-subject')}")
        msg = {"type": "chat.send", "payload": {"text": "hi"}}
        await ws.send(json.dumps(msg))
        echo = json.loads(await asyncio.wait_for(ws.recv(), 5))
        check(echo == msg, f"chat.send through the container echoed: {json.dumps(echo)}")
        await ws.send(json.dumps({"type": "chat.read", "payload": {}, "id": "r1"}))
        err = json.loads(await asyncio.wait_for(ws.recv(), 5))
        code = err.get("payload", {}).get("code")
        check(err.get("type") == "error" and code == "forbidden", f"chat.read without scope chat:read -> error {code}")
    check(ws.close_code == 1000, f"client close -> {ws.close_code}")
    return 1 if fails else 0


sys.exit(asyncio.run(main(sys.argv[1])))
PY
if client_out=$(timeout 60 "$VENV/bin/python" "$WORK/client.py" "ws://127.0.0.1:$GW_PORT/ws" 2>&1); then
  printf '%s\n' "$client_out"
else
  printf '%s\n' "$client_out"
  fail "WebSocket client through the container"
fi
# FAIL lines printed by the client are counted once above (its exit status).
logs=$(podman logs "$CTR" 2>&1)
if grep -qF -- "$WSGATE_JWT_SECRET" <<<"$logs"; then fail "the HMAC secret appears in the container log"; else pass "the secret is not in the container log"; fi

# --- 10. stop ----------------------------------------------------------------------------------------
phase "stop (SIGTERM, drain)"
t0=$(now_ms)
timeout 60 "${PODMAN[@]}" stop -t 40 "$CTR" >/dev/null 2>&1 || true
t=$(( $(now_ms) - t0 ))
ec=$(podman inspect --format '{{.State.ExitCode}}' "$CTR")
[ "$ec" = 0 ] && pass "SIGTERM: wsgate (PID 1, no init) drained and exited 0 in ${t} ms" ||
  { podman logs "$CTR" 2>&1 | tail -10; fail "stop: exit code $ec after ${t} ms"; }
