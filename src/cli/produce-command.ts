/** `meterline produce`: synthetic events, or events from a JSON-lines file, to the usage topic. */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { SingleBar } from 'cli-progress';
import { type Command, InvalidArgumentError } from 'commander';
import { brokerIssues } from '../config/env-checks.ts';
import { loadPlan } from '../config/plan.ts';
import { ConfigError, isMeterlineError } from '../errors.ts';
import { type AvroEncoder, type AvroEventInput, createAvroEncoder } from '../ingest/avro.ts';
import { ensureTopics, usageTopic } from '../kafka/topics.ts';
import { shutdownTracing } from '../observability/tracing.ts';
import { eventMessage, type Outgoing, produceMessages } from '../produce/producer.ts';
import { syntheticEvents } from '../produce/synthetic.ts';
import {
  oneShotKafka,
  reach,
  ServiceUnavailableError,
  type TimeoutOptions,
  timeoutMs,
  withTimeout,
} from './one-shot.ts';
import { type OutputOptions, printData, withExamples, withOutput } from './output.ts';

const positiveInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
};
const rate = (v: string) => {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError('must be between 0 and 1');
  return n;
};
const list = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export function registerProduceCommand(program: Command): void {
  const produce = program
    .command('produce')
    .description('send usage events to the usage topic: synthetic ones, or a JSON-lines file')
    .option('-f, --file <path>', 'JSON-lines file of events ("-" for stdin); lines are sent as they are')
    .option('-n, --count <n>', 'number of synthetic events', positiveInt, 1000)
    .option('--customers <list>', 'tenant ids, comma-separated', list, ['tenant-a', 'tenant-b', 'tenant-c'])
    .option('--dimensions <list>', 'dimensions, comma-separated (default: those of METERLINE_PLAN)', list)
    .option('--hours <n>', 'spread event times over this many closed UTC hours', positiveInt, 3)
    .option('--duplicate-rate <r>', 'share of events resent with the same id', rate, 0.01)
    .option('--seed <n>', 'random seed', positiveInt, 42)
    .option('--brokers <list>', 'Kafka brokers (default: KAFKA_BROKERS)')
    .option('--topic <name>', 'usage topic (default: METERLINE_TOPIC_USAGE or usage-events)')
    .option('--avro', 'send Avro in the Confluent wire format (schema registered under <topic>-value)')
    .option('--registry <url>', 'schema registry for --avro (default: SCHEMA_REGISTRY_URL)')
    .option('--no-progress', 'no progress bar');
  withExamples(withTimeout(withOutput(produce)), [
    'meterline produce -n 50000 --customers acme,globex --hours 3 --duplicate-rate 0.01',
    'meterline produce -f events.jsonl',
    'cat events.jsonl | meterline produce -f - -o json',
    'meterline produce --avro -n 100',
  ]).action(async (opts) => {
    const brokersText: string = opts.brokers ?? process.env.KAFKA_BROKERS ?? '';
    const brokers = list(brokersText);
    const brokersSetting = opts.brokers ? '--brokers' : 'KAFKA_BROKERS';
    if (!brokers.length) produce.error('set KAFKA_BROKERS or pass --brokers', { exitCode: 2 });
    const wrong = brokerIssues(brokersText);
    if (wrong.length)
      throw new ConfigError(
        'brokers',
        wrong.map((w) => w.replace(/^KAFKA_BROKERS/, brokersSetting)),
      );
    const topic: string = opts.topic ?? process.env.METERLINE_TOPIC_USAGE ?? 'usage-events';
    const registryUrl: string | undefined = opts.registry ?? process.env.SCHEMA_REGISTRY_URL;
    if (opts.avro && !registryUrl)
      produce.error('--avro needs SCHEMA_REGISTRY_URL or --registry', { exitCode: 2 });
    const ms = timeoutMs(opts as TimeoutOptions);
    const { kafka, check } = oneShotKafka(
      { brokers, clientId: 'meterline-produce' },
      'produce',
      brokersSetting,
    );
    await reach(ms, [check]);
    const partitions = Number(process.env.METERLINE_TOPIC_PARTITIONS ?? 6);
    await ensureTopics(kafka, [
      usageTopic(topic, Number.isInteger(partitions) && partitions > 0 ? partitions : 6),
    ]);

    let messages: Iterable<Outgoing> | undefined;
    let total: number | undefined;
    if (opts.file) {
      messages = await readLines(opts.file);
      total = (messages as Outgoing[]).length;
    } else {
      const dimensions: string[] =
        opts.dimensions ??
        (process.env.METERLINE_PLAN
          ? [...loadPlan(process.env.METERLINE_PLAN).dimensions.keys()]
          : ['api_calls']);
      const events = [
        ...syntheticEvents({
          count: opts.count,
          customers: opts.customers,
          dimensions,
          hours: opts.hours,
          nowMs: Date.now(),
          duplicateRate: opts.duplicateRate,
          seed: opts.seed,
        }),
      ];
      messages = events.map(eventMessage);
      total = events.length;
    }
    if (opts.avro) {
      const registry = {
        service: 'the schema registry',
        target: registryUrl as string,
        setting: opts.registry ? '--registry' : 'SCHEMA_REGISTRY_URL',
      };
      messages = await toAvro(
        messages,
        createAvroEncoder({ registryUrl: registryUrl as string, topic }),
      ).catch((error: unknown) => {
        const cause = (error as Error).cause;
        throw isMeterlineError(cause) && cause.code === 'registry_unavailable'
          ? new ServiceUnavailableError([registry], ms)
          : error;
      });
    }
    const bar =
      opts.progress && process.stderr.isTTY && (total ?? 0) >= 1000
        ? new SingleBar({
            format: 'producing [{bar}] {value}/{total} events  {eta_formatted} left',
            stream: process.stderr,
          })
        : undefined;
    bar?.start(total ?? 0, 0);
    let interrupted = false;
    process.once('SIGINT', () => {
      interrupted = true;
    });
    const sent = await produceMessages(
      (function* () {
        for (const m of messages) {
          if (interrupted) return;
          yield m;
        }
      })(),
      { kafka, topic, onProgress: (n) => bar?.update(n) },
    );
    bar?.stop();
    await shutdownTracing();
    printData(
      opts as OutputOptions,
      { sent, topic, interrupted },
      () => `${interrupted ? 'interrupted after' : 'sent'} ${sent} events to ${topic}\n`,
    );
  });
}

/** Re-encodes JSON messages as Avro; an event that doesn't fit the schema stops the run, naming it. */
async function toAvro(messages: Iterable<Outgoing>, encoder: AvroEncoder): Promise<Outgoing[]> {
  const out: Outgoing[] = [];
  let n = 0;
  for (const m of messages) {
    n++;
    try {
      out.push({
        ...m,
        value: await encoder.encode(JSON.parse(String(m.value)) as AvroEventInput),
      });
    } catch (error) {
      const e = error as Error & { code?: string };
      throw Object.assign(new Error(`event ${n} cannot be sent as Avro: ${e.message}`, { cause: error }), {
        code: e.code,
      });
    }
  }
  return out;
}

async function readLines(path: string): Promise<Outgoing[]> {
  const input = path === '-' ? process.stdin : createReadStream(path);
  const out: Outgoing[] = [];
  for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    if (!line.trim()) continue;
    let key: string | null = null;
    try {
      const parsed = JSON.parse(line) as { customer?: unknown };
      if (typeof parsed.customer === 'string') key = parsed.customer;
    } catch {
      // Sent as is: the processor dead-letters it as malformed_json, which is what a user testing that wants.
    }
    out.push({ key, value: line });
  }
  return out;
}
