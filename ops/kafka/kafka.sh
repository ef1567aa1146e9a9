#!/usr/bin/env bash
# Single-node Kafka (KRaft, combined broker+controller) for dev and tests, no Docker.
#
#   ops/kafka/kafka.sh fetch    # jars from Maven Central into the cache (once)
#   ops/kafka/kafka.sh start    # format + start in background, wait until it answers
#   ops/kafka/kafka.sh stop     # stop via pid file, wait for exit
#   ops/kafka/kafka.sh status   # exit 0 if running
#   ops/kafka/kafka.sh logs     # tail the broker log
#
# Environment (all optional):
#   KAFKA_PORT             client (PLAINTEXT) port on 127.0.0.1        [9092]
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1           [KAFKA_PORT+1]
#   KAFKA_DATA_DIR         logs/metadata/pid/config dir  [${TMPDIR:-/tmp}/mgw-kafka-$KAFKA_PORT]
#   KAFKA_CLEAN=1          wipe KAFKA_DATA_DIR before start (fresh cluster)
#   KAFKA_HEAP             JVM heap flags                               [-Xms256m -Xmx512m]
#   KAFKA_JVM_OPTS         other JVM flags  [-XX:+UseSerialGC -XX:TieredStopAtLevel=1]
#   KAFKA_LOG4J_CONFIG     log4j2 config for the broker          [ops/kafka/log4j2.xml]
#   KAFKA_CDS=0            don't create/use the AppCDS class archive (faster JVM start)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer     [60]
#   KAFKA_VERSION          broker version to fetch/run      [the kafka.version in pom.xml]
#   MGW_KAFKA_HOME         jar cache root                               [ops/kafka/.jars]
#   JAVA_HOME / JAVA       Java 17+ to run the broker
#   KAFKA_WATCH_PID        stop the broker when this pid exits (tests)
#   PYTHON                 python with confluent_kafka for the readiness check [python3]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
KAFKA_VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -1)}"
CACHE="${MGW_KAFKA_HOME:-$HERE/.jars}"
JAR_DIR="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/mgw-kafka-$KAFKA_PORT}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx512m}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS--XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_LOG4J_CONFIG="${KAFKA_LOG4J_CONFIG:-$HERE/log4j2.xml}"
PYTHON="${PYTHON:-python3}"
if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java; fi

PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_FILE="$KAFKA_DATA_DIR/kafka.log"
PROPS="$KAFKA_DATA_DIR/server.properties"

log() { echo "kafka.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- fetch
fetch() {
  [[ -f "$JAR_DIR/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION jars)"
  mkdir -p "$CACHE"
  # Serialise concurrent fetches (parallel test sessions) on a lock file.
  exec 9>"$CACHE/.fetch.lock"
  command -v flock >/dev/null && flock 9
  if [[ ! -f "$JAR_DIR/.complete" ]]; then
    local tmp="$CACHE/.tmp-$KAFKA_VERSION-$$"
    rm -rf "$tmp"
    log "fetching Kafka $KAFKA_VERSION jars into $JAR_DIR (Maven Central)"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
      cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; die "maven fetch failed"
    fi
    rm -f "$tmp.log"
    ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"
    touch "$tmp/.complete"
    rm -rf "$JAR_DIR"
    mv "$tmp" "$JAR_DIR"
  fi
  exec 9>&-
}

# ---------------------------------------------------------------- helpers
# Alive = exists and is not a zombie (PID 1 in some sandboxes reaps exited
# children only after a delay, and kill -0 succeeds on zombies).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 0
  [[ "$st" != Z && "$st" != X ]]
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && alive "$pid" && echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_cluster_id() {
  # Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
  local id
  while :; do
    id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

java_opts() {
  # Startup-oriented JVM flags; fine for test throughput on a 2-core box.
  echo "$KAFKA_HEAP $KAFKA_JVM_OPTS -XX:+ExitOnOutOfMemoryError \
-Djava.awt.headless=true -Dlog4j2.configurationFile=$KAFKA_LOG4J_CONFIG \
-Dlog4j2.disable.jmx=true -Dkafka.logs.dir=$KAFKA_DATA_DIR"
}

# AppCDS: the first start dumps the loaded classes into an archive when the
# broker exits (kafka.sh stop); later starts map it (~0.6 s faster start).
# A stale/mismatched archive is ignored by the JVM (-Xshare:auto).
CDS_OPTS=""
setup_cds() {
  [[ "${KAFKA_CDS:-1}" == 1 ]] || return 0
  local key jsa
  key="$("$JAVA" -version 2>&1 | cksum | cut -d' ' -f1)"
  jsa="$JAR_DIR/kafka-$key.jsa"
  if [[ -s "$jsa" ]]; then
    CDS_OPTS="-XX:SharedArchiveFile=$jsa -Xlog:cds=off -Xlog:cds+dynamic=off"
  else
    rm -f "$KAFKA_DATA_DIR/kafka.jsa.tmp"
    echo "$jsa" >"$KAFKA_DATA_DIR/cds-target"
    CDS_OPTS="-XX:ArchiveClassesAtExit=$KAFKA_DATA_DIR/kafka.jsa.tmp -Xlog:cds=off -Xlog:cds+dynamic=off"
  fi
}

publish_cds() {   # after a clean exit: move the dumped archive into the jar cache
  local target="$KAFKA_DATA_DIR/cds-target" tmp="$KAFKA_DATA_DIR/kafka.jsa.tmp"
  if [[ "${1:-}" == clean && -f "$target" && -s "$tmp" ]]; then
    local jsa; jsa="$(cat "$target")"
    # copy next to the target, then rename: readers never see a partial file
    if [[ ! -s "$jsa" ]] && cp "$tmp" "$jsa.tmp.$$" 2>/dev/null; then
      mv -f "$jsa.tmp.$$" "$jsa" 2>/dev/null || rm -f "$jsa.tmp.$$"
    fi
  fi
  rm -f "$target" "$tmp"
}

write_props() {
  cat >"$PROPS" <<EOF
# Written by ops/kafka/kafka.sh — single combined broker+controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR/logs

# test-friendly defaults
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
min.insync.replicas=1

# fast single-node startup
controller.quorum.election.timeout.ms=200
controller.quorum.fetch.timeout.ms=400
broker.heartbeat.interval.ms=200
broker.session.timeout.ms=3000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  if "$PYTHON" -c 'import confluent_kafka' 2>/dev/null; then
    # Ready = admin API answers with this broker in the metadata.
    "$PYTHON" - "$KAFKA_PORT" "$pid" "$KAFKA_START_TIMEOUT" <<'PY' && return 0
import os, socket, sys, time
from confluent_kafka.admin import AdminClient
port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        if os.path.isdir("/proc/self"):
            return False
        try:                                        # no procfs (macOS)
            os.kill(pid, 0); return True
        except OSError:
            return False
while time.monotonic() < deadline:              # 1) wait for the listener
    if not alive(): sys.exit(2)
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit(3)
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}",
                     "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})
while time.monotonic() < deadline:              # 2) wait for metadata with a broker
    if not alive(): sys.exit(2)
    try:
        md = admin.list_topics(timeout=1)
        if md.brokers:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
sys.exit(3)
PY
    return 1
  fi
  # Fallback without confluent_kafka: the broker logs this once it is serving.
  while ((SECONDS < deadline)); do
    alive "$pid" || return 1
    grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null && port_in_use "$KAFKA_PORT" && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- start/stop
start() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT, data $KAFKA_DATA_DIR"; return 0
  fi
  fetch
  "$JAVA" -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || die "Kafka $KAFKA_VERSION needs Java 17+ ($JAVA)"
  port_in_use "$KAFKA_PORT" && die "port $KAFKA_PORT already in use"
  port_in_use "$KAFKA_CONTROLLER_PORT" && die "controller port $KAFKA_CONTROLLER_PORT already in use"
  [[ "${KAFKA_CLEAN:-0}" == 1 ]] && rm -rf "$KAFKA_DATA_DIR"
  mkdir -p "$KAFKA_DATA_DIR/logs"
  write_props
  local t0=$SECONDS cp="$JAR_DIR/*" fmt_cds=""
  setup_cds
  [[ "$CDS_OPTS" == -XX:SharedArchiveFile* ]] && fmt_cds="$CDS_OPTS"
  if [[ ! -f "$KAFKA_DATA_DIR/logs/meta.properties" ]]; then
    # shellcheck disable=SC2086
    "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC $fmt_cds \
      -Dlog4j2.configurationFile="$HERE/log4j2.xml" -cp "$cp" \
      kafka.tools.StorageTool format --config "$PROPS" --cluster-id "$(random_cluster_id)" \
      --ignore-formatted >"$KAFKA_DATA_DIR/format.log" 2>&1 \
      || { cat "$KAFKA_DATA_DIR/format.log" >&2; die "storage format failed"; }
  fi
  # shellcheck disable=SC2046
  nohup "$JAVA" $(java_opts) $CDS_OPTS -cp "$cp" kafka.Kafka "$PROPS" >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  if ! wait_ready "$pid"; then
    if alive "$pid"; then
      log "broker did not become ready within ${KAFKA_START_TIMEOUT}s (pid $pid); last log lines of $LOG_FILE:"
    else
      log "broker process $pid exited during startup; last log lines of $LOG_FILE:"
    fi
    tail -n 40 "$LOG_FILE" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    exit 1
  fi
  if [[ -n "${KAFKA_WATCH_PID:-}" ]]; then
    # Watchdog: stop the broker when the owning process (e.g. pytest) goes away,
    # even if it was SIGKILLed and never ran its teardown.
    ( trap '' HUP
      while alive "$KAFKA_WATCH_PID" && alive "$pid"; do sleep 1; done
      alive "$pid" && kill "$pid"
    ) </dev/null >/dev/null 2>&1 &
    disown
  fi
  log "Kafka $KAFKA_VERSION ready on 127.0.0.1:$KAFKA_PORT (pid $pid, data $KAFKA_DATA_DIR, $((SECONDS - t0))s)"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"; log "not running (no live pid in $PID_FILE)"; return 0
  fi
  kill "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 600; i++)); do           # up to 30 s for a clean shutdown
    alive "$pid" || break
    sleep 0.05
  done
  local how=clean
  if alive "$pid"; then
    log "pid $pid did not exit after SIGTERM, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    sleep 0.2
    how=killed
  fi
  rm -f "$PID_FILE"
  publish_cds "$how"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  fetch) fetch; log "jars in $JAR_DIR" ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if pid="$(running_pid)"; then echo "running pid=$pid bootstrap=127.0.0.1:$KAFKA_PORT data=$KAFKA_DATA_DIR"; else echo "not running"; exit 1; fi ;;
  logs) tail -n "${2:-100}" "$LOG_FILE" ;;
  *) echo "usage: $0 {fetch|start|stop|restart|status|logs [N]}" >&2; exit 2 ;;
esac
