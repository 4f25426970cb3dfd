#!/usr/bin/env bash
# scripts/services.sh — real PostgreSQL, Redis, RabbitMQ and a Kafka-protocol broker for the test
# suite, on 127.0.0.1 only. Idempotent: a service whose port already answers is reused, so a second
# `up` takes well under a second. Installs what is missing with apt (Debian 12, as root).
#
#   scripts/services.sh up   [pg] [redis] [rabbitmq] [kafka]   start (no names = all), write $STATE/env
#   scripts/services.sh down [pg] [redis] [rabbitmq] [kafka]   stop what this state dir started
#   scripts/services.sh status                                  which ports answer
#   scripts/services.sh env                                     print $STATE/env (KEY=value lines)
#   scripts/services.sh kafka-topic NAME [PARTITIONS]           create a topic in the mock broker
#   scripts/services.sh kafka-ctl COMMAND...                    raw control command (see below)
#
# State dir: ${SIDEKICK_SERVICES_DIR:-/var/tmp/pg-sidekick-services} (data, logs, pid files, env). Ports are fixed,
# so only one state dir can own a service at a time; another state dir reuses what answers.
#
#   service    address                      started with
#   postgres   127.0.0.1:55432 (postgres, trust auth, db postgres; max_connections=200, fsync=off)
#   redis      127.0.0.1:56379 (no persistence)
#   rabbitmq   127.0.0.1:55672 (guest/guest; node sidekick@localhost, dist port 55673, epmd 4369 on
#              127.0.0.1; mnesia kept in the state dir, so durable queues survive down/up)
#   kafka      127.0.0.1:<random> broker + control port 127.0.0.1:59092; topic sidekick-test (4 parts)
#
# `down X` promises that X's port no longer answers afterwards: it stops the instance this state
# dir started and exits non-zero if the port is still answered by some other instance.
#
# Kafka: no real Kafka can be installed on these machines, so the broker is librdkafka 2.0.2's
# in-memory mock cluster wrapped by scripts/kafka-mock.c (built into $STATE/kafka/). Measured with
# kafkajs 2.2.4:
#  - produce (keys, headers, gzip, acks=-1), consume in a group, offsets: work. A consumer group's
#    first join takes ~3 s (the mock's rebalance delay).
#  - The mock implements Metadata only up to v2. AllowAutoTopicCreation exists from v4 on, so it
#    is never sent: `allowAutoTopicCreation: false` on a kafkajs producer or consumer has NO effect
#    and ANY metadata request naming an unknown topic creates it with 4 partitions. librdkafka 2.0.2
#    has no switch to turn that off (the auto-create code is internal and unexported).
#  - To make a topic look missing (so a sink's "unknown topic" path can be tested):
#    `kafka-ctl topic-error NAME UNKNOWN_TOPIC_OR_PART` — every metadata answer for NAME then carries
#    that error (kafkajs: KafkaJSNumberOfRetriesExceeded / type UNKNOWN_TOPIC_OR_PARTITION).
#    Clear it with `kafka-ctl topic-error NAME NO_ERROR`. While set, admin.listTopics() (metadata
#    for all topics) fails for every client of the broker, so clear it in the same test.
#  - No CreateTopics/DeleteTopics (kafkajs admin.createTopics fails "Broker 0 not found in the
#    cached metadata"), no idempotent producer, no transactions. Create topics through the control
#    port: `kafka-topic NAME [PARTITIONS]` or createKafkaTopic() in test/support/services.ts.
#  - The broker port is random and changes on every restart (the address comes from the control
#    port / env file). Everything is in memory: `down kafka` loses all topics and messages.
#  - Control commands (one line each, answer "ok[ data]" or "err message"): ping, bootstrap,
#    create TOPIC [PARTITIONS], topic-error TOPIC ERROR, push-errors API ERROR... (the next requests
#    of API — Produce, Fetch, Metadata… — fail with those errors), broker-down / broker-up
#    (drop connections and refuse new ones / accept again on the same port).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# One state dir per machine, not per checkout: the ports are the machine's, so every clone must find,
# reuse and restart the same instances (a restart test in one clone must be able to stop them).
STATE=${SIDEKICK_SERVICES_DIR:-/var/tmp/pg-sidekick-services}
ALL_SERVICES=(pg redis rabbitmq kafka tools)

HOST=127.0.0.1
PG_PORT=55432
REDIS_PORT=56379
AMQP_PORT=55672
RABBIT_DIST_PORT=55673
KAFKA_CONTROL_PORT=59092
KAFKA_TOPICS=(sidekick-test:4)
PG_BIN=/usr/lib/postgresql/15/bin

# The daemons and the Erlang CLI want a UTF-8 locale that surely exists; C.UTF-8 is in glibc.
export LC_ALL=C.UTF-8 LANG=C.UTF-8
export DEBIAN_FRONTEND=noninteractive

say() { printf '%s\n' "$*"; }
warn() { printf 'services.sh: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

# ---------------------------------------------------------------------------------------------
# Helpers

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Prints the pid in pid file $1 if that process is alive and its command line matches $2.
# Guards against stale pid files whose number now belongs to another process.
live_pid() {
  local file=$1 pattern=$2 pid=
  [[ -s $file ]] || return 1
  read -r pid <"$file" || [[ -n $pid ]] || return 1 # RabbitMQ writes no trailing newline
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  printf '%s\n' "$pid"
}

# True if process $1 exists and is not a zombie. Daemons are reparented to pid 1, which may reap
# them only after a second or so (measured on these VMs), and `kill -0` succeeds on a zombie.
alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Runs "$@" until it succeeds or $1 seconds have passed (wall clock, whatever each try costs).
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(now_ms) >= deadline)) && return 1
    sleep 0.05
  done
}

# Fails with a clear message when $2 is taken by something that did not answer as service $1.
port_free() {
  port_open "$2" || return 0
  warn "$1: $HOST:$2 is in use by something that does not answer as $1 (see: ss -ltnp | grep $2)"
  return 1
}

# Waits up to $2 seconds for process $1 to exit.
wait_gone() {
  local pid=$1 deadline=$(($(date +%s) + $2))
  while alive "$pid"; do
    (($(date +%s) >= deadline)) && return 1
    sleep 0.05
  done
}

# SIGTERM, then SIGKILL after $2 seconds.
stop_pid() {
  local pid=$1 grace=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  wait_gone "$pid" "$grace" && return 0
  kill -KILL "$pid" 2>/dev/null
  wait_gone "$pid" 5
}

# Run in the subshell that launches a daemon: closes every inherited fd above 2 (our lock on fd 9,
# and whatever pipes the caller leaked to us) so the daemon cannot keep them open.
close_extra_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
  done
  return 0
}

log_tail() { [[ -f $1 ]] && { warn "last lines of $1:"; tail -n "${2:-20}" "$1" | sed 's/^/    /' >&2; }; return 0; }

need_root() {
  ((EUID == 0)) || { warn "$1: must run as root to install/start it (apt, runuser)"; return 1; }
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# Installs the packages a service needs; `apt-get update` only when something is missing.
APT_UPDATED=0
ensure_packages() {
  local what=$1 missing=() p
  shift
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  need_root "$what" || return 1
  local t0 log=$STATE/apt.log
  t0=$(now_ms)
  say "$what: installing ${missing[*]} (apt)…"
  if ((APT_UPDATED == 0)); then
    apt-get -o DPkg::Lock::Timeout=300 update -q >>"$log" 2>&1 || { warn "$what: apt-get update failed"; log_tail "$log"; return 1; }
    APT_UPDATED=1
  fi
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
    { warn "$what: apt-get install ${missing[*]} failed"; log_tail "$log"; return 1; }
  say "$what: installed ${missing[*]} in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15

pg_answers() {
  if [[ -x $PG_BIN/pg_isready ]]; then
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2
  else
    port_open "$PG_PORT"
  fi
}

pg_up() {
  local dir=$STATE/pg data=$STATE/pg/data run=$STATE/pg/run log=$STATE/pg/postgres.log t0
  t0=$(now_ms)
  if pg_answers; then say "postgres: reused $HOST:$PG_PORT"; return 0; fi
  if port_open "$PG_PORT"; then # maybe a server still starting up
    if wait_until 30 pg_answers; then say "postgres: reused $HOST:$PG_PORT"; return 0; fi
    port_free postgres "$PG_PORT" || return 1
  fi
  need_root postgres || return 1
  ensure_packages postgres postgresql-15 || return 1
  id postgres >/dev/null 2>&1 || { warn "postgres: system user 'postgres' missing after install"; return 1; }

  mkdir -p "$dir" "$run" && chown postgres:postgres "$dir" "$run" || return 1
  if [[ ! -s $data/PG_VERSION ]]; then
    rm -rf "$data"
    # initdb refuses to run as root; --no-locale keeps it independent of the machine's locales.
    (cd / && runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
      -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1) ||
      { warn "postgres: initdb failed"; log_tail "$dir/initdb.log"; return 1; }
  fi
  # A pid file left by a killed server (or a reboot) whose pid is not a live postgres.
  if [[ -f $data/postmaster.pid ]] && ! live_pid "$data/postmaster.pid" postgres >/dev/null; then
    rm -f "$data/postmaster.pid" "$run/.s.PGSQL.$PG_PORT.lock"
  fi
  # Settings go on the command line (not postgresql.conf) so a moved state dir still works.
  local opts="-c listen_addresses=$HOST -p $PG_PORT -k $run -c max_connections=200"
  opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  (cd / && close_extra_fds && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "$opts" start \
    </dev/null >"$dir/pg_ctl.log" 2>&1) ||
    { warn "postgres: pg_ctl start failed"; log_tail "$dir/pg_ctl.log" 5; log_tail "$log"; return 1; }
  pg_answers || { warn "postgres: started but $HOST:$PG_PORT does not answer"; log_tail "$log"; return 1; }
  say "postgres: started on $HOST:$PG_PORT in $(elapsed "$t0")"
}

pg_down() {
  local data=$STATE/pg/data
  if [[ -f $data/postmaster.pid ]] && live_pid "$data/postmaster.pid" postgres >/dev/null; then
    (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop \
      </dev/null >"$STATE/pg/pg_ctl.log" 2>&1 9>&-) ||
      { warn "postgres: pg_ctl stop failed"; log_tail "$STATE/pg/pg_ctl.log" 5; return 1; }
    say "postgres: stopped"
  else
    say "postgres: not running from $STATE"
  fi
  if pg_answers; then warn "postgres: $HOST:$PG_PORT still answers (an instance not started from $STATE)"; return 1; fi
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$REDIS_PORT && printf 'PING\r\n' >&3 && read -r l <&3 && [[ \$l == +PONG* ]]" 2>/dev/null
}

redis_up() {
  local dir=$STATE/redis t0
  t0=$(now_ms)
  if redis_answers; then say "redis: reused $HOST:$REDIS_PORT"; return 0; fi
  port_free redis "$REDIS_PORT" || return 1
  ensure_packages redis redis-server || return 1
  mkdir -p "$dir" || return 1
  local pid
  if pid=$(live_pid "$dir/redis.pid" redis-server); then stop_pid "$pid" 5; fi
  (cd / && close_extra_fds && redis-server --bind "$HOST" --port "$REDIS_PORT" --protected-mode no --save '' \
    --appendonly no --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --dir "$dir" </dev/null >>"$dir/redis.log" 2>&1) ||
    { warn "redis: redis-server failed to start"; log_tail "$dir/redis.log"; return 1; }
  if wait_until 10 redis_answers; then say "redis: started on $HOST:$REDIS_PORT in $(elapsed "$t0")"; return 0; fi
  warn "redis: no PONG from $HOST:$REDIS_PORT within 10 s"; log_tail "$dir/redis.log"; return 1
}

redis_down() {
  local pid
  if pid=$(live_pid "$STATE/redis/redis.pid" redis-server); then
    stop_pid "$pid" 10 || { warn "redis: pid $pid did not exit"; return 1; }
    rm -f "$STATE/redis/redis.pid"
    say "redis: stopped"
  else
    say "redis: not running from $STATE"
  fi
  if redis_answers; then warn "redis: $HOST:$REDIS_PORT still answers (an instance not started from $STATE)"; return 1; fi
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ 3.10 — the Debian wrappers in /usr/sbin switch to user rabbitmq (HOME /var/lib/rabbitmq,
# where the Erlang cookie lives) and keep the environment, so server and CLI see the same settings.

rabbit_env() {
  local dir=$STATE/rabbitmq
  export RABBITMQ_NODENAME=sidekick@localhost
  export RABBITMQ_NODE_IP_ADDRESS=$HOST RABBITMQ_NODE_PORT=$AMQP_PORT RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT
  export ERL_EPMD_ADDRESS=$HOST
  export RABBITMQ_SERVER_START_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
}

# The AMQP 0-9-1 handshake: the server answers our protocol header with a Connection.Start
# frame (type 1). Much faster than `rabbitmqctl status` (which boots an Erlang VM, ~1 s).
rabbit_answers() {
  local first
  first=$(timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$AMQP_PORT && printf 'AMQP\x00\x00\x09\x01' >&3 && head -c 1 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [[ ${first// /} == 01 ]]
}

# Prints the pid of the RabbitMQ node (beam.smp, user rabbitmq) that uses this state dir, if any.
# Its command line does not name the node; its environment does.
rabbit_node_pid() {
  local p
  for p in $(pgrep -u rabbitmq -x beam.smp); do
    { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia" &&
      { printf '%s\n' "$p"; return 0; }
  done
  return 1
}

rabbit_up() {
  local dir=$STATE/rabbitmq t0 deadline
  t0=$(now_ms)
  if rabbit_answers; then say "rabbitmq: reused $HOST:$AMQP_PORT"; return 0; fi
  need_root rabbitmq || return 1
  ensure_packages rabbitmq rabbitmq-server || return 1
  rabbit_env
  mkdir -p "$dir/mnesia" "$dir/log" || return 1
  [[ -f $dir/enabled_plugins ]] || echo '[].' >"$dir/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$dir" || return 1

  local pid
  if pid=$(live_pid "$RABBITMQ_PID_FILE" beam); then
    # A node of ours is alive but AMQP does not answer: booting, or wedged. Give it a moment.
    warn "rabbitmq: node pid $pid alive but AMQP silent; waiting for it"
  else
    port_free rabbitmq "$AMQP_PORT" || return 1
    (cd / && close_extra_fds && setsid -w rabbitmq-server -detached </dev/null >>"$dir/log/startup.log" 2>&1) ||
      { warn "rabbitmq: rabbitmq-server -detached failed"; log_tail "$dir/log/startup.log"; return 1; }
  fi
  # `await_startup` fails at once while the node is not yet registered with epmd, hence the loop.
  : >"$dir/log/await.log"
  deadline=$(($(date +%s) + 90))
  until rabbitmqctl -q await_startup --timeout 10 </dev/null >>"$dir/log/await.log" 2>&1; do
    if ((deadline - $(date +%s) < 85)) && ! rabbit_node_pid >/dev/null; then
      warn "rabbitmq: the node exited during startup"; log_tail "$dir/log/startup.log" 10
      log_tail "$dir/log/$RABBITMQ_NODENAME.log"; return 1
    fi
    if (($(date +%s) >= deadline)); then
      warn "rabbitmq: not started within 90 s"; log_tail "$dir/log/startup.log" 10
      log_tail "$dir/log/$RABBITMQ_NODENAME.log"; return 1
    fi
    sleep 0.5
  done
  if wait_until 10 rabbit_answers; then say "rabbitmq: started on $HOST:$AMQP_PORT in $(elapsed "$t0")"; return 0; fi
  warn "rabbitmq: node is up but $HOST:$AMQP_PORT does not answer AMQP"; log_tail "$dir/log/$RABBITMQ_NODENAME.log"; return 1
}

rabbit_down() {
  local dir=$STATE/rabbitmq pid
  rabbit_env
  if pid=$(live_pid "$RABBITMQ_PID_FILE" beam); then
    # With the pid file, `stop` returns only once the OS process has exited.
    if ! timeout 60 rabbitmqctl -q stop "$RABBITMQ_PID_FILE" </dev/null >>"$dir/log/stop.log" 2>&1; then
      warn "rabbitmq: rabbitmqctl stop failed; killing pid $pid"; log_tail "$dir/log/stop.log" 5
      stop_pid "$pid" 10 || { warn "rabbitmq: pid $pid did not exit"; return 1; }
    fi
    rm -f "$RABBITMQ_PID_FILE"
    say "rabbitmq: stopped"
  else
    say "rabbitmq: not running from $STATE"
  fi
  if rabbit_answers; then warn "rabbitmq: $HOST:$AMQP_PORT still answers (an instance not started from $STATE)"; return 1; fi
}

# ---------------------------------------------------------------------------------------------
# Kafka-protocol mock broker (scripts/kafka-mock.c)

# Sends one control line to $1 (host:port) and prints the answer line.
kafka_ctl_at() {
  local addr=$1 host port
  shift
  host=${addr%:*} port=${addr##*:}
  KCTL_LINE="$*" timeout 5 bash -c \
    "exec 3<>/dev/tcp/$host/$port && printf '%s\n' \"\$KCTL_LINE\" >&3 && IFS= read -r l <&3 && printf '%s\n' \"\$l\"" 2>/dev/null
}

kafka_control_addr() {
  local v
  if [[ -n ${KAFKA_CONTROL:-} ]]; then printf '%s\n' "$KAFKA_CONTROL"; return; fi
  if [[ -f $STATE/env ]] && v=$(grep -m1 '^KAFKA_CONTROL=' "$STATE/env"); then printf '%s\n' "${v#*=}"; return; fi
  printf '%s\n' "$HOST:$KAFKA_CONTROL_PORT"
}

kafka_answers() { [[ $(kafka_ctl_at "$HOST:$KAFKA_CONTROL_PORT" ping) == ok ]]; }

kafka_up() {
  local dir=$STATE/kafka src=$ROOT/scripts/kafka-mock.c bin t0 out boot args=() t
  bin=$dir/kafka-mock
  t0=$(now_ms)
  mkdir -p "$dir" || return 1
  if kafka_answers; then
    boot=$(kafka_ctl_at "$HOST:$KAFKA_CONTROL_PORT" bootstrap) && [[ $boot == ok\ * ]] ||
      { warn "kafka: control port answers but 'bootstrap' failed: $boot"; return 1; }
    printf 'KAFKA_BROKERS=%s\nKAFKA_CONTROL=%s\n' "${boot#ok }" "$HOST:$KAFKA_CONTROL_PORT" >"$dir/addr"
    say "kafka: reused ${boot#ok } (control $HOST:$KAFKA_CONTROL_PORT)"
    return 0
  fi
  port_free kafka "$KAFKA_CONTROL_PORT" || return 1
  if [[ ! -x $bin || $src -nt $bin ]]; then
    ensure_packages kafka librdkafka-dev gcc libc6-dev || return 1
    gcc -O2 "$src" -lrdkafka -o "$bin.tmp" 2>"$dir/build.log" && mv -f "$bin.tmp" "$bin" ||
      { warn "kafka: building kafka-mock failed"; log_tail "$dir/build.log"; return 1; }
  fi
  local pid
  if pid=$(live_pid "$dir/kafka-mock.pid" kafka-mock); then stop_pid "$pid" 5; fi
  for t in "${KAFKA_TOPICS[@]}"; do args+=(--topic "$t"); done
  # The daemon reports its addresses on stdout once it is ready, or an error and exit 1.
  out=$(cd / && close_extra_fds && "$bin" --daemon --control "$HOST:$KAFKA_CONTROL_PORT" "${args[@]}" \
    --pidfile "$dir/kafka-mock.pid" --logfile "$dir/kafka-mock.log" </dev/null 2>"$dir/start.err") ||
    { warn "kafka: kafka-mock failed to start: $(cat "$dir/start.err")"; log_tail "$dir/kafka-mock.log" 5; return 1; }
  printf '%s\n' "$out" | grep -E '^KAFKA_(BROKERS|CONTROL)=' >"$dir/addr"
  kafka_answers || { warn "kafka: started but control port $HOST:$KAFKA_CONTROL_PORT does not answer"; return 1; }
  boot=$(grep -m1 '^KAFKA_BROKERS=' "$dir/addr")
  say "kafka: started on ${boot#*=} (control $HOST:$KAFKA_CONTROL_PORT, mock broker) in $(elapsed "$t0")"
}

kafka_down() {
  local dir=$STATE/kafka pid
  if pid=$(live_pid "$dir/kafka-mock.pid" kafka-mock); then
    stop_pid "$pid" 10 || { warn "kafka: pid $pid did not exit"; return 1; }
    rm -f "$dir/kafka-mock.pid"
    say "kafka: stopped"
  else
    say "kafka: not running from $STATE"
  fi
  rm -f "$dir/addr"
  if kafka_answers; then warn "kafka: control port $HOST:$KAFKA_CONTROL_PORT still answers (an instance not started from $STATE)"; return 1; fi
}

# ---------------------------------------------------------------------------------------------

write_env() {
  {
    printf 'DATABASE_URL=postgres://postgres@%s:%s/postgres\n' "$HOST" "$PG_PORT"
    printf 'REDIS_URL=redis://%s:%s\n' "$HOST" "$REDIS_PORT"
    printf 'AMQP_URL=amqp://guest:guest@%s:%s\n' "$HOST" "$AMQP_PORT"
    if [[ -s $STATE/kafka/addr ]]; then cat "$STATE/kafka/addr"; fi
  } >"$STATE/env.tmp" && mv -f "$STATE/env.tmp" "$STATE/env"
}

# Normalises service names into the global NAMES array (default: all).
parse_names() {
  NAMES=()
  local n
  (($# == 0)) && { NAMES=("${ALL_SERVICES[@]}"); return 0; }
  for n in "$@"; do
    case $n in
      pg | postgres | postgresql) NAMES+=(pg) ;;
      redis) NAMES+=(redis) ;;
      rabbitmq | rabbit | amqp) NAMES+=(rabbitmq) ;;
      kafka) NAMES+=(kafka) ;;
      tools) NAMES+=(tools) ;;
      *) die "unknown service '$n' (expected: ${ALL_SERVICES[*]})" ;;
    esac
  done
}

prepare_state() {
  # Paths end up in command lines (postgres -k, RabbitMQ env), so keep them boring.
  [[ $STATE =~ ^[A-Za-z0-9/._-]+$ ]] || die "state dir '$STATE' must match [A-Za-z0-9/._-]+"
  mkdir -p "$STATE" || die "cannot create state dir $STATE"
  STATE=$(cd "$STATE" && pwd -P)
  # The postgres and rabbitmq users must be able to reach their subdirectories.
  chmod 755 "$STATE" 2>/dev/null
  # One up/down at a time per state dir. Daemons are started via close_extra_fds, never holding it.
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "timed out waiting for $STATE/.lock (another services.sh running?)"
}

# ---------------------------------------------------------------------------------------------
# Tools the tests use that are not services: docker-compose (v1, Debian) validates
# docker-compose.yml offline — no engine needed for `docker-compose config -q`; promtool (Debian's
# prometheus package, which starts no daemon without systemd) checks the real /metrics output with
# `promtool check metrics`.

tools_up() {
  local missing=()
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if ((${#missing[@]} == 0)); then say "tools: docker-compose, promtool present"; return 0; fi
  ensure_packages tools "${missing[@]}"
}

# The fixed ports lie inside Linux's ephemeral range (32768-60999), so any client connection may
# be given one as its local port — e.g. the Erlang CLI's connections to epmd, which take ports one
# after another. Such a socket (even in TIME-WAIT, for 60 s) makes a server's listen on that port fail
# with EADDRINUSE, SO_REUSEADDR or not: RabbitMQ restarted by a test failed this way. Reserving the
# ports keeps the kernel from handing them out. Best effort (needs root and a writable /proc/sys).
reserve_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports current port wanted=()
  [[ -w $file ]] || return 0
  current=$(<"$file")
  for port in "$PG_PORT" "$REDIS_PORT" "$AMQP_PORT" "$RABBIT_DIST_PORT" "$KAFKA_CONTROL_PORT"; do
    port_reserved "$port" "$current" || wanted+=("$port")
  done
  ((${#wanted[@]} == 0)) && return 0
  local list
  list=$(IFS=,; echo "${wanted[*]}")
  echo "${current:+$current,}$list" >"$file" 2>/dev/null || warn "could not reserve ports $list (ip_local_reserved_ports)"
}

# Whether port $1 is in the reserved list $2 ("55432,55672-55673").
port_reserved() {
  local range lo hi ranges
  IFS=, read -ra ranges <<<"$2"
  for range in "${ranges[@]}"; do
    lo=${range%-*} hi=${range#*-}
    ((lo <= $1 && $1 <= hi)) && return 0
  done
  return 1
}

cmd_up() {
  parse_names "$@"
  prepare_state
  reserve_ports
  local n failed=()
  for n in "${NAMES[@]}"; do
    case $n in
      pg) pg_up ;;
      redis) redis_up ;;
      rabbitmq) rabbit_up ;;
      kafka) kafka_up ;;
      tools) tools_up ;;
    esac || failed+=("$n")
  done
  write_env
  ((${#failed[@]} == 0)) || die "failed to start: ${failed[*]} (logs in $STATE)"
}

cmd_down() {
  parse_names "$@"
  prepare_state
  local n failed=()
  for n in "${NAMES[@]}"; do
    case $n in
      pg) pg_down ;;
      redis) redis_down ;;
      rabbitmq) rabbit_down ;;
      kafka) kafka_down ;;
      tools) : ;;
    esac || failed+=("$n")
  done
  write_env
  ((${#failed[@]} == 0)) || die "not stopped: ${failed[*]}"
}

cmd_status() {
  local rc=0
  if pg_answers; then say "postgres: up $HOST:$PG_PORT"; else say "postgres: down"; rc=1; fi
  if redis_answers; then say "redis: up $HOST:$REDIS_PORT"; else say "redis: down"; rc=1; fi
  if rabbit_answers; then say "rabbitmq: up $HOST:$AMQP_PORT"; else say "rabbitmq: down"; rc=1; fi
  if kafka_answers; then
    say "kafka: up $(kafka_ctl_at "$HOST:$KAFKA_CONTROL_PORT" bootstrap | sed 's/^ok //') (control $HOST:$KAFKA_CONTROL_PORT)"
  else say "kafka: down"; rc=1; fi
  return $rc
}

cmd_kafka_ctl() {
  (($# > 0)) || die "usage: services.sh kafka-ctl COMMAND [ARGS...] (try: kafka-ctl help)"
  local addr reply
  addr=$(kafka_control_addr)
  reply=$(kafka_ctl_at "$addr" "$@") || die "kafka: no answer from control port $addr (is it up? services.sh up kafka)"
  say "$reply"
  [[ $reply == ok || $reply == ok\ * ]]
}

usage() {
  sed -n '/^#   scripts\/services.sh up /,/^#   scripts\/services.sh kafka-ctl/p' "${BASH_SOURCE[0]}" | sed 's/^#   //'
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    env)
      [[ -f $STATE/env ]] || die "no env file at $STATE/env — run: scripts/services.sh up"
      cat "$STATE/env" ;;
    kafka-topic)
      (($# >= 1 && $# <= 2)) || die "usage: services.sh kafka-topic NAME [PARTITIONS]"
      cmd_kafka_ctl create "$1" "${2:-1}" ;;
    kafka-ctl) cmd_kafka_ctl "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
