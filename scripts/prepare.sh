# Sourced by scripts/test, .ci/run, scripts/reliability and scripts/bench:
# installs what a fresh machine lacks (idempotently; nothing when all is
# there) and exports the environment the tests and harnesses expect.
#
#   source scripts/prepare.sh
#
# Installs, when missing:
#   Debian packages  a C toolchain, pkg-config, libsqlite3-dev, zlib (rdkafka
#                    and sqlx build from source), prometheus (promtool for the
#                    alert tests), postgresql-client (psql), Java 17 and Maven
#                    (Apache Kafka from Maven Central), chromium and
#                    chromium-driver (the console's browser tests)
#   servers          PostgreSQL and RabbitMQ, started (scripts/servers)
#   Python           a virtual environment with the pinned packages of
#                    tests/requirements.txt (confluent-kafka,
#                    opentelemetry-sdk, grpcio, schemathesis, …)
#   Apache Kafka     the pinned broker's jars from Maven Central
#                    (scripts/kafka fetch)
# Exports: PATH (the virtual environment first), KAUSAL_TEST_DATABASE_URL,
# CARGO_TARGET_DIR (default ~/.cache/kausal/target, outside the clone).

_kausal_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAUSAL_CACHE="${KAUSAL_CACHE:-$HOME/.cache/kausal}"
export KAUSAL_CACHE

_prepare_log() { printf '\n== %s\n' "$*" >&2; }

# --- Debian packages ---------------------------------------------------------
_need=()
command -v cc >/dev/null || _need+=(build-essential)
command -v make >/dev/null || _need+=(make)
command -v pkg-config >/dev/null || _need+=(pkg-config)
[ -e /usr/include/sqlite3.h ] || _need+=(libsqlite3-dev)
[ -e /usr/include/zlib.h ] || _need+=(zlib1g-dev)
command -v promtool >/dev/null || _need+=(prometheus)
command -v psql >/dev/null || _need+=(postgresql-client)
command -v java >/dev/null || _need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || _need+=(maven)
command -v python3 >/dev/null || _need+=(python3 python3-venv)
# Headless Chromium and its WebDriver for the console's browser tests
# (tests/browser.rs). Pinned by the Debian release: whatever version this
# release's `chromium` and `chromium-driver` carry (one source package, so
# the driver always matches the browser); never a downloaded browser build.
command -v chromium >/dev/null || _need+=(chromium)
command -v chromedriver >/dev/null || _need+=(chromium-driver)
if [ ${#_need[@]} -gt 0 ]; then
  _prepare_log "installing ${_need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${_need[@]}" >&2
fi

# --- servers -------------------------------------------------------------------
"$_kausal_root/scripts/servers" start
export KAUSAL_TEST_DATABASE_URL="${KAUSAL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

# --- Python: one virtual environment, pinned ------------------------------------
# Rebuilt when tests/requirements.txt changes (its hash is kept inside).
_venv="$KAUSAL_CACHE/venv"
_req="$_kausal_root/tests/requirements.txt"
_req_hash=$(sha256sum "$_req" | cut -d' ' -f1)
if [ "$(cat "$_venv/.requirements-sha256" 2>/dev/null)" != "$_req_hash" ]; then
  _prepare_log "Python environment $_venv from tests/requirements.txt"
  rm -rf "$_venv"
  python3 -m venv "$_venv"
  "$_venv/bin/pip" install -q --disable-pip-version-check -r "$_req" >&2
  echo "$_req_hash" >"$_venv/.requirements-sha256"
fi
export PATH="$_venv/bin:$PATH"

# --- Apache Kafka ------------------------------------------------------------------
"$_kausal_root/scripts/kafka" fetch

# --- build cache ---------------------------------------------------------------------
# A cold build takes 20-30 minutes on 2 cores; the target directory lives
# outside the clone so that warm runs take minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KAUSAL_CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"
unset _need _venv _req _req_hash
