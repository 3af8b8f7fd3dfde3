#!/usr/bin/env bash
# Make local base images where the official ones cannot be pulled (only Debian's and PyPI's
# package mirrors reachable): a Debian bookworm Python (for the Containerfile's BASE_IMAGE)
# and a Debian PostgreSQL (for compose.yaml's POSTGRES_IMAGE), both with mmdebstrap.
#
#   sudo apt-get install -y podman runc mmdebstrap
#   scripts/make_local_bases.sh            # prints the two variables to export
#   BASE_IMAGE=localhost/python-base:bookworm POSTGRES_IMAGE=localhost/postgres:bookworm \
#     scripts/check_image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${CONTAINER_ENGINE:-podman}
SUITE=${DEBIAN_SUITE:-bookworm}
PY_TAG=${LOCAL_PYTHON_BASE:-localhost/python-base:$SUITE}
PG_TAG=${LOCAL_POSTGRES_IMAGE:-localhost/postgres:$SUITE}
import=(import)
[ "$ENGINE" = podman ] && import+=(--quiet)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! "$ENGINE" image exists "$PY_TAG" 2>/dev/null || [ -n "${REBUILD:-}" ]; then
    echo "== $PY_TAG: Debian $SUITE minbase + python3, python3-venv"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$work/python.tar"
    "$ENGINE" "${import[@]}" --change 'CMD ["python3"]' "$work/python.tar" "$PY_TAG" >/dev/null
fi

if ! "$ENGINE" image exists "$PG_TAG" 2>/dev/null || [ -n "${REBUILD:-}" ]; then
    echo "== $PG_TAG: Debian $SUITE minbase + postgresql"
    mmdebstrap --quiet --variant=minbase --include=postgresql,ca-certificates \
        --customize-hook='rm -rf "$1"/var/lib/postgresql/*/main "$1"/etc/postgresql/*/main' \
        --customize-hook='copy-in scripts/containers/postgres-entrypoint.sh /usr/local/bin' \
        "$SUITE" "$work/postgres.tar"
    bin=$(tar -tf "$work/postgres.tar" | grep -E '^\./usr/lib/postgresql/[0-9]+/bin/postgres$' | head -1)
    bin=$(dirname "${bin#.}")
    "$ENGINE" "${import[@]}" \
        --change "ENV PATH=$bin:/usr/local/bin:/usr/bin:/bin" \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' \
        --change 'CMD ["postgres"]' \
        --change 'STOPSIGNAL SIGINT' \
        --change 'EXPOSE 5432' \
        "$work/postgres.tar" "$PG_TAG" >/dev/null
fi
echo "export BASE_IMAGE=$PY_TAG POSTGRES_IMAGE=$PG_TAG"
