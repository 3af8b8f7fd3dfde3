#!/usr/bin/env bash
# Prove the container image and compose.yaml for real (minutes; not part of `make test`/CI):
#
#  1. build the image (scripts/build_image.sh; SKIP_BUILD=1 reuses $IMAGE) and print its size
#  2. its user is not root; `castframe --version`
#  3. against PostgreSQL (host networking): migrate, serve, a key created inside the container,
#     a journey from the host (upload, generate, poll, a signed webhook to a receiver on the
#     host, the images downloaded), the image's health check
#  4. SIGTERM mid-job: the container stops within its grace period, exit 0; restarted, every
#     job completes exactly once (one `completed` webhook each, charged once)
#  5. nothing written outside /data (read-only root for every role; `diff` of the API empty)
#  6. compose.yaml end to end: PostgreSQL, migrate, API, 2 workers; only the API's port is
#     published; the journey; `down` mid-job and `up`: the data kept, every job done once
#
# Where the official images cannot be pulled, make local ones (scripts/make_local_bases.sh)
# and pass them: BASE_IMAGE (the Containerfile's base), POSTGRES_IMAGE (compose's database).
# Other knobs: CONTAINER_ENGINE (podman|docker), COMPOSE ("podman-compose" or "docker
# compose"), IMAGE, CHECK_PORT_BASE (default 18080: uses four ports from it), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
if [ -z "${COMPOSE:-}" ]; then
    if [ "$ENGINE" = podman ]; then COMPOSE=podman-compose; else COMPOSE="docker compose"; fi
fi
export IMAGE=${IMAGE:-localhost/castframe:check}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-docker.io/library/postgres:16-bookworm}
PYTHON=${PYTHON:-python3}
PORT=${CHECK_PORT_BASE:-18080}
API_PORT=$PORT PG_PORT=$((PORT + 1)) HOOK_PORT=$((PORT + 2)) COMPOSE_PORT=$((PORT + 3))
REF=docs/gallery/reference.png
RUN_ID=cfcheck$$
JOURNEY=("$PYTHON" scripts/containers/journey.py)
work=$(mktemp -d)
receiver_pid=""
compose_up=""

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }
quiet() { "$@" 2> >(grep -v -e 'systemd' -e 'syslog' >&2); }  # podman's healthcheck-timer noise
engine() { quiet "$ENGINE" "$@"; }
compose() { (cd "$work/compose" && quiet $COMPOSE "$@"); }

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        echo "-- logs of the failed run (tails) --"
        for name in "$RUN_ID-api" "$RUN_ID-pg"; do
            engine logs --tail 30 "$name" 2>&1 | sed "s/^/[$name] /"
        done
        [ -n "$compose_up" ] && compose logs --tail 30 2>&1 | tail -60
    fi
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
    for name in "$RUN_ID-api" "$RUN_ID-pg"; do engine rm -f -t 0 "$name" >/dev/null 2>&1; done
    engine volume rm -f "$RUN_ID-data" >/dev/null 2>&1
    if [ -n "$compose_up" ]; then
        compose down -v -t 5 >/dev/null 2>&1
        for id in $(engine ps -a -q --filter "label=com.docker.compose.project=$RUN_ID"); do
            if [ "$ENGINE" = podman ]; then engine rm -f -t 0 --depend "$id"; else engine rm -f "$id"; fi
        done >/dev/null 2>&1
        for volume in $(engine volume ls -q --filter "label=com.docker.compose.project=$RUN_ID"); do
            engine volume rm -f "$volume"
        done >/dev/null 2>&1
        [ "$ENGINE" = podman ] && engine pod rm -f "pod_$RUN_ID" >/dev/null 2>&1
        engine network rm "${RUN_ID}_default" >/dev/null 2>&1
    fi
    rm -rf "$work"
    [ $rc -eq 0 ] && printf '\nALL CHECKS PASSED\n' || printf '\nCHECK FAILED (exit %s)\n' "$rc"
}
trap cleanup EXIT

wait_http() {  # URL [seconds]
    local url=$1 deadline=$((SECONDS + ${2:-180}))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "$url did not answer"
        sleep 1
    done
}

step "1. build $IMAGE ($ENGINE)"
if [ -z "${SKIP_BUILD:-}" ]; then
    scripts/build_image.sh 2>&1 | grep -E '^(\+ |built |Successfully|ERROR|error)' || true
fi
engine image exists "$IMAGE" 2>/dev/null || engine image inspect "$IMAGE" >/dev/null \
    || fail "no image $IMAGE"
size=$(engine image inspect "$IMAGE" --format '{{.Size}}')
ok "image $IMAGE: $((size / 1000000)) MB ($size bytes)"

step "2. user and version"
user=$(engine image inspect "$IMAGE" --format '{{.Config.User}}')
uid=$(engine run --rm --entrypoint id "$IMAGE" -u)
[ "$uid" != 0 ] && [ -n "$user" ] || fail "the image runs as root (User=$user, uid $uid)"
ok "runs as uid $uid (User=$user)"
version=$(engine run --rm "$IMAGE" --version)
[[ $version == "castframe "* ]] || fail "--version printed: $version"
ok "$version"

step "3. one container against PostgreSQL (host network)"
for port in "$API_PORT" "$PG_PORT" "$HOOK_PORT" "$COMPOSE_PORT"; do
    ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
        || fail "port $port is in use: set CHECK_PORT_BASE to a free range of four ports"
done
engine run -d --name "$RUN_ID-pg" --network host -e POSTGRES_USER=castframe \
    -e POSTGRES_PASSWORD=check -e POSTGRES_DB=castframe "$POSTGRES_IMAGE" \
    postgres -c port="$PG_PORT" >/dev/null
deadline=$((SECONDS + 120))
until engine exec "$RUN_ID-pg" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U castframe 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "PostgreSQL did not start"
    sleep 1
done
ok "PostgreSQL ($POSTGRES_IMAGE) on 127.0.0.1:$PG_PORT"
engine volume create "$RUN_ID-data" >/dev/null
readonly_args=(--read-only)
[ "$ENGINE" = podman ] && readonly_args+=(--read-only-tmpfs=false)  # /data: the only writable path
common=(--network host -v "$RUN_ID-data:/data"
    -e "CASTFRAME_DATABASE_URL=postgresql+psycopg://castframe:check@127.0.0.1:$PG_PORT/castframe"
    -e "CASTFRAME_PORT=$API_PORT" -e "CASTFRAME_PUBLIC_URL=http://127.0.0.1:$API_PORT"
    -e CASTFRAME_ALLOW_PRIVATE_URLS=true)  # the webhook receiver is on the host's loopback
engine run --rm "${readonly_args[@]}" "${common[@]}" "$IMAGE" migrate --wait 60 | tail -1
# The API (with its worker) runs with a writable root, so that `diff` below shows any write
# outside /data; every other role here and in compose runs with a read-only root.
engine run -d --name "$RUN_ID-api" --stop-timeout 60 "${common[@]}" "$IMAGE" serve >/dev/null
wait_http "http://127.0.0.1:$API_PORT/readyz"
logline=$(engine logs "$RUN_ID-api" 2>&1 | head -1)
$PYTHON -c 'import json,sys; json.loads(sys.argv[1])' "$logline" || fail "log is not JSON: $logline"
ok "serving on 127.0.0.1:$API_PORT; logs are JSON lines: $logline"
if [ "$ENGINE" = podman ]; then
    engine healthcheck run "$RUN_ID-api" && ok "health check (/healthz) passes"
else
    sleep 12; [ "$(engine inspect -f '{{.State.Health.Status}}' "$RUN_ID-api")" = healthy ] \
        && ok "health check (/healthz) passes" || fail "health check"
fi
key=$(engine exec "$RUN_ID-api" castframe keys create --account check --credits 100000 | tail -1)
[[ $key == afk_live_* ]] || fail "keys create printed: $key"
ok "key created inside the container: ${key:0:12}..."
"$PYTHON" scripts/containers/journey.py receiver --port "$HOOK_PORT" --log "$work/hooks.jsonl" &
receiver_pid=$!
base=http://127.0.0.1:$API_PORT hook=http://127.0.0.1:$HOOK_PORT/hook
first=$("${JOURNEY[@]}" submit --base "$base" --key "$key" --ref "$REF" --hook "$hook" --images 2)
ok "$("${JOURNEY[@]}" settle --base "$base" --key "$key" --log "$work/hooks.jsonl" \
    --credits 100000 $first)"

metrics=$(curl -fsS "$base/metrics")
missing=""
for name in $(grep -ohE 'castframe_[a-z_]+' deploy/prometheus/castframe-alerts.yml \
        deploy/grafana/castframe-dashboard.json | sed -E 's/_(bucket|count|sum)$//' | sort -u); do
    grep -qE "^# TYPE ($name|${name%_total}) " <<<"$metrics" || missing+=" $name"
done
[ -z "$missing" ] || fail "the dashboard or alert rules use metrics /metrics lacks:$missing"
ok "every metric the dashboard and the alert rules use is exported"
if command -v promtool >/dev/null; then
    (cd deploy/prometheus && promtool check config prometheus.yml >/dev/null \
        && promtool test rules castframe-alerts.test.yml >/dev/null) || fail "promtool"
    ok "promtool: prometheus.yml valid, alert rules' tests pass"
fi

step "4. SIGTERM mid-job, then a restart"
ids=$("${JOURNEY[@]}" submit --base "$base" --key "$key" --ref "$REF" --hook "$hook" \
    --count 4 --images 4)
running=$("${JOURNEY[@]}" wait-running --base "$base" --key "$key" $ids)
start=$SECONDS
engine stop -t 60 "$RUN_ID-api" >/dev/null
took=$((SECONDS - start))
code=$(engine inspect "$RUN_ID-api" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "the container exited $code after SIGTERM (137: killed at the grace)"
ok "SIGTERM while job $running ran: drained and stopped in ${took}s of 60, exit 0"
engine start "$RUN_ID-api" >/dev/null
wait_http "$base/readyz"
ok "$("${JOURNEY[@]}" settle --base "$base" --key "$key" --log "$work/hooks.jsonl" \
    --credits 100000 $first $ids)"

step "5. nothing written outside /data"
changes=$(engine diff "$RUN_ID-api" | grep -v -E \
    ' /(etc/(hosts|hostname|resolv\.conf)|run|run/\.containerenv|run/secrets|dev|proc|sys)$' \
    | grep -v -E '^[ACD] /(run|etc)$' || true)
[ -z "$changes" ] || fail "the API wrote outside /data: $changes"
ok "the API's root filesystem is unchanged after its jobs (diff empty)"
ok "migrate ran with a read-only root; compose runs every role read-only (below)"
for name in "$RUN_ID-api" "$RUN_ID-pg"; do engine rm -f -t 0 "$name" >/dev/null; done
kill "$receiver_pid"; wait "$receiver_pid" 2>/dev/null || true; receiver_pid=""

step "6. compose.yaml ($COMPOSE): PostgreSQL, migrate, API, 2 workers"
mkdir -p "$work/compose"
cp compose.yaml "$work/compose/"
cp -r deploy "$work/compose/"
export COMPOSE_PROJECT_NAME=$RUN_ID CASTFRAME_IMAGE=$IMAGE POSTGRES_IMAGE
export CASTFRAME_PORT=$COMPOSE_PORT CASTFRAME_BIND=127.0.0.1
export CASTFRAME_PUBLIC_URL=http://127.0.0.1:$COMPOSE_PORT
export CASTFRAME_TRUSTED_HOSTS=host.containers.internal  # the receiver, on this host
export CASTFRAME_WORKERS=2
if [ "$ENGINE" = docker ]; then
    cat > "$work/compose/compose.override.yaml" <<'YAML'
x-host: &host
  extra_hosts: ["host.containers.internal:host-gateway"]
services:
  api: *host
  worker: *host
YAML
fi
compose_up=1
compose up -d --scale worker=2 >"$work/compose-up.log" 2>&1 || { cat "$work/compose-up.log"; fail "compose up"; }
base=http://127.0.0.1:$COMPOSE_PORT
wait_http "$base/readyz" 240
running_names=$(engine ps --filter "label=com.docker.compose.project=$RUN_ID" --format '{{.Names}}' | sort)
workers=$(grep -c worker <<<"$running_names" || true)
[ "$workers" = 2 ] || fail "expected 2 workers, running: $running_names"
ok "containers: $(tr '\n' ' ' <<<"$running_names")"
published=$(engine ps --filter "label=com.docker.compose.project=$RUN_ID" --format '{{.Names}} {{.Ports}}' \
    | awk 'NF > 1 && $2 != "" {print}')
[ "$(wc -l <<<"$published")" = 1 ] && grep -q "api" <<<"$published" \
    && grep -q ":$COMPOSE_PORT->8000" <<<"$published" || fail "published ports: $published"
ok "only the API's port is published: $published"
key=$(compose exec -T api castframe keys create --account check --credits 100000 | tail -1 | tr -d '\r')
ok "key created inside the api container: ${key:0:12}..."
"$PYTHON" scripts/containers/journey.py receiver --port "$HOOK_PORT" --log "$work/hooks2.jsonl" &
receiver_pid=$!
hook=http://host.containers.internal:$HOOK_PORT/hook
first=$("${JOURNEY[@]}" submit --base "$base" --key "$key" --ref "$REF" --hook "$hook" --images 2)
ok "$("${JOURNEY[@]}" settle --base "$base" --key "$key" --log "$work/hooks2.jsonl" \
    --credits 100000 $first)"

step "7. compose down mid-job, up again: the data kept, every job done once"
ids=$("${JOURNEY[@]}" submit --base "$base" --key "$key" --ref "$REF" --hook "$hook" \
    --count 3 --images 4)
running=$("${JOURNEY[@]}" wait-running --base "$base" --key "$key" $ids)
start=$SECONDS
# The API and workers first, as docker compose orders it (podman-compose stops every service
# at once: a database going down under draining workers would stall their last writes).
compose stop api worker >/dev/null 2>&1
took=$((SECONDS - start))
exits=$(engine ps -a --filter "label=com.docker.compose.project=$RUN_ID" \
    --format '{{.Names}} {{.Status}}' | grep -E '_(api|worker)_' || true)
grep -q . <<<"$exits" || fail "no api or worker containers found after stop"
! grep -v -E 'Exited \(0\)' <<<"$exits" || fail "not every container exited 0 on SIGTERM: $exits"
ok "stop (SIGTERM) while job $running ran: API and workers exited 0 in ${took}s"
compose down >/dev/null 2>&1
ok "down (volumes kept)"
compose up -d --scale worker=2 >"$work/compose-up2.log" 2>&1 || { cat "$work/compose-up2.log"; fail "compose up again"; }
wait_http "$base/readyz" 240
ok "$("${JOURNEY[@]}" settle --base "$base" --key "$key" --log "$work/hooks2.jsonl" \
    --credits 100000 $first $ids)"
ok "the job from before down (and its images) still served after up: data kept"
printf '\nimage %s: %s MB\n' "$IMAGE" "$((size / 1000000))"
