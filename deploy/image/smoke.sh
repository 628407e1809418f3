#!/usr/bin/env bash
# Runs the whole pipeline from the image built by build.sh, the way the Helm chart runs it: a read-only root
# filesystem with /tmp as a tmpfs, the non-root user, one container per role, the metering emulator of the
# same image standing in for AWS. Uses your Kafka and Redis (e.g. `npm run stack:up`, then the exports of
# `npm run stack:status`), on topics and a key prefix of its own, which it deletes at the end.
#
# Usage: KAFKA_BROKERS=host:port REDIS_URL=redis://host:port deploy/image/smoke.sh [--tag <tag>]
#          [--otlp <OTLP/HTTP endpoint> --jaeger <Jaeger query URL>]
#
# It checks, and exits non-zero when one fails:
#   1. the topics Job's script (deploy/image/create-topics.ts) creates the topics, and refuses a usage
#      retention below the 72 h floor;
#   2. `meterline processor` and `meterline worker` answer /healthz and /readyz;
#   3. `meterline produce` sends 20 events for one tenant, and one record for its hour reaches the emulator,
#      through BatchMeterUsage, with /metrics counting 20 applied events and 1 accepted record;
#   4. with --otlp/--jaeger: `meterline trace <record id>` finds the record's trace (finalize → worker → AWS);
#   5. on SIGTERM both roles stop cleanly (exit 0) well within the chart's grace period.
# Containers use the host network, so the endpoints must be reachable from this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

tag=''
otlp=''
jaeger=''
while (($#)); do
  case "$1" in
    --tag) tag=${2:?}; shift 2 ;;
    --otlp) otlp=${2:?}; shift 2 ;;
    --jaeger) jaeger=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "smoke.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${KAFKA_BROKERS:?set KAFKA_BROKERS (npm run stack:status prints it)}"
: "${REDIS_URL:?set REDIS_URL (npm run stack:status prints it)}"

node=$repo/node_modules/node/bin/node
image=localhost/meterline:${tag:-$("$node" -p "require('./package.json').version")}
read -r -a pm <<<"$(deploy/image/build.sh --print-podman)"
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
work=$(mktemp -d)
chmod 755 "$work"
run_id=smoke$$
containers=()
failures=0

free_port() { "$node" -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
check() { # check <description> <command...>
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1" >&2; failures=$((failures + 1)); fi
}
cleanup() {
  for c in "${containers[@]}"; do "${pm[@]}" rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
  KAFKA_BROKERS=$KAFKA_BROKERS REDIS_URL=$REDIS_URL PREFIX=$run_id "$node" --disable-warning=TimeoutNegativeWarning --input-type=module -e "
    import kafkajs from 'kafkajs'; import { Redis } from 'ioredis';
    const admin = new kafkajs.Kafka({ brokers: process.env.KAFKA_BROKERS.split(','), logLevel: kafkajs.logLevel.NOTHING }).admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(process.env.PREFIX + '-'));
    if (topics.length) await admin.deleteTopics({ topics });
    await admin.disconnect();
    const redis = new Redis(process.env.REDIS_URL.split(',')[0]);
    for await (const keys of redis.scanStream({ match: process.env.PREFIX + ':*', count: 500 })) if (keys.length) await redis.del(...keys);
    redis.disconnect();
  " || echo "smoke.sh: cleanup of topics ${run_id}-* and keys ${run_id}:* failed" >&2
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/plan.json" <<'EOF'
{ "productCode": "prod-smoke", "dimensions": [{ "name": "api_calls", "aggregation": "sum" }] }
EOF
cat >"$work/customers.json" <<'EOF'
{ "acme": { "customerAwsAccountId": "111111111111", "licenseArn": "arn:aws:license-manager::111111111111:license:l-smoke00000000000000000000000001" } }
EOF
chmod 644 "$work"/*.json

common=(--network host --read-only --tmpfs /tmp "${limits[@]}" -v "$work:/etc/meterline:ro")
emulator_port=$(free_port)
processor_port=$(free_port)
worker_port=$(free_port)
tracing=()
[ -n "$otlp" ] && tracing=(-e "OTEL_EXPORTER_OTLP_ENDPOINT=$otlp")
env=(
  -e "KAFKA_BROKERS=$KAFKA_BROKERS" -e "REDIS_URL=$REDIS_URL" -e METERLINE_PLAN=/etc/meterline/plan.json
  -e METERLINE_CUSTOMERS=/etc/meterline/customers.json -e AWS_REGION=us-east-1
  -e "AWS_ENDPOINT_URL_MARKETPLACE_METERING=http://127.0.0.1:$emulator_port"
  # The emulator checks no signature, but the SDK signs: dummy keys for the emulator only.
  -e AWS_ACCESS_KEY_ID=test -e AWS_SECRET_ACCESS_KEY=test
  -e "METERLINE_TOPIC_USAGE=$run_id-usage" -e "METERLINE_TOPIC_SUBMISSIONS=$run_id-submissions"
  -e "METERLINE_TOPIC_FAILED=$run_id-failed" -e METERLINE_TOPIC_PARTITIONS=2 -e "METERLINE_REDIS_PREFIX=$run_id"
  -e "METERLINE_PROCESSOR_GROUP=$run_id-processor" -e "METERLINE_WORKER_GROUP=$run_id-worker"
  # Hours close on idleness within seconds.
  -e METERLINE_IDLE_TIMEOUT=5s -e METERLINE_COMMIT_INTERVAL=1s "${tracing[@]}"
)
topics_args=(--brokers "$KAFKA_BROKERS" --usage "$run_id-usage" --submissions "$run_id-submissions"
  --failed "$run_id-failed" --partitions 2)
create_topics() { "${pm[@]}" run --rm "${common[@]}" --entrypoint node "$image" deploy/image/create-topics.ts "$@"; }

echo "smoke.sh: $image, topics $run_id-*, emulator on $emulator_port"
check "create-topics.ts creates the topics" create_topics "${topics_args[@]}" --usage-retention-hours 168
set +e
create_topics "${topics_args[@]}" --usage-retention-hours 24 >/dev/null 2>&1
code=$?
set -e
check "create-topics.ts refuses 24 h of usage retention (exit $code)" test "$code" -eq 2

containers+=("$("${pm[@]}" run -d "${common[@]}" "$image" emulator --port "$emulator_port" \
  --customers /etc/meterline/customers.json)")
containers+=("$("${pm[@]}" run -d "${common[@]}" "${env[@]}" -e "METERLINE_OPS_PORT=$processor_port" "$image" processor)")
processor=${containers[-1]}
containers+=("$("${pm[@]}" run -d "${common[@]}" "${env[@]}" -e "METERLINE_OPS_PORT=$worker_port" "$image" worker)")
worker=${containers[-1]}

ready() { curl -sf "localhost:$processor_port/readyz" >/dev/null && curl -sf "localhost:$worker_port/readyz" >/dev/null; }
for _ in $(seq 1 90); do ready && break; sleep 1; done
check "processor and worker are ready" ready
check "processor /healthz" curl -sf "localhost:$processor_port/healthz" -o /dev/null

check "meterline produce sends 20 events" "${pm[@]}" run --rm "${common[@]}" "${tracing[@]}" "$image" produce \
  --brokers "$KAFKA_BROKERS" --topic "$run_id-usage" -n 20 --customers acme --dimensions api_calls --hours 1 \
  --duplicate-rate 0 --no-progress

records() { curl -sf "localhost:$emulator_port/_emulator/records" || echo '{"records":[]}'; }
accepted() { records | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const r=JSON.parse(s).records;process.exit(r.length===1&&r[0].api==='BatchMeterUsage'&&r[0].dimension==='api_calls'?0:1)})"; }
for _ in $(seq 1 120); do accepted && break; sleep 1; done
check "one record reached the emulator through BatchMeterUsage" accepted
check "processor /metrics counts 20 applied events" \
  grep -q '^meterline_events_total{result="applied"} 20$' <(curl -s "localhost:$processor_port/metrics")
check "worker /metrics counts 1 accepted record" \
  grep -q '^meterline_records_accepted_total{api="BatchMeterUsage"} 1$' <(curl -s "localhost:$worker_port/metrics")

if [ -n "$jaeger" ]; then
  hour=$(records | "$node" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).records[0]?.timestamp))")
  traced() {
    "${pm[@]}" run --rm "${common[@]}" "$image" trace "prod-smoke|acme|api_calls|$hour" --jaeger "$jaeger" \
      >"$work/trace.txt" 2>&1 && grep -q 'BatchMeterUsage' "$work/trace.txt"
  }
  # Spans reach Jaeger in batches: give them a few seconds.
  for _ in $(seq 1 30); do traced && break; sleep 1; done
  check "meterline trace finds the record's trace, down to the BatchMeterUsage call" traced
  sed 's/^/  /' "$work/trace.txt" | head -20
fi

for role in processor worker; do
  id=${!role}
  started=$(date +%s%N)
  "${pm[@]}" stop -t 60 "$id" >/dev/null
  ms=$((($(date +%s%N) - started) / 1000000))
  code=$("${pm[@]}" inspect --format '{{ .State.ExitCode }}' "$id")
  check "$role stops on SIGTERM with exit 0 (exit $code after $ms ms)" test "$code" -eq 0 -a "$ms" -lt 30000
done

if ((failures)); then
  echo "smoke.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "smoke.sh: all checks passed"
