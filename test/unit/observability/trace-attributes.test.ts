/**
 * The span attribute names meterline emits. Dashboards, saved Jaeger searches and `meterline trace` search by
 * these strings, so taking the names from @opentelemetry/semantic-conventions must not change any of them.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ATTR, RECORD_ID_TAG } from '../../../src/observability/trace-attributes.ts';

describe('span attribute names', () => {
  it('are the strings meterline has always emitted', () => {
    expect(ATTR).toEqual({
      messagingSystem: 'messaging.system',
      messagingOperationType: 'messaging.operation.type',
      messagingOperationName: 'messaging.operation.name',
      messagingDestination: 'messaging.destination.name',
      messagingPartition: 'messaging.destination.partition.id',
      messagingConsumerGroup: 'messaging.consumer.group.name',
      messagingBatchCount: 'messaging.batch.message_count',
      messagingKafkaKey: 'messaging.kafka.message.key',
      messagingKafkaOffset: 'messaging.kafka.offset',
      rpcSystem: 'rpc.system',
      rpcService: 'rpc.service',
      rpcMethod: 'rpc.method',
      cloudRegion: 'cloud.region',
      awsRequestId: 'aws.request_id',
      customer: 'meterline.customer',
      dimension: 'meterline.dimension',
      windowStart: 'meterline.window_start',
      recordId: 'meterline.record_id',
      eventId: 'meterline.event_id',
      meteringRecordId: 'meterline.metering_record_id',
      awsStatus: 'meterline.aws.status',
      awsBatchSize: 'meterline.aws.batch_size',
      awsAttempt: 'meterline.aws.attempt',
      quantity: 'meterline.quantity',
      records: 'meterline.records',
      outcome: 'meterline.outcome',
      dlqReason: 'meterline.dlq.reason',
      eventsApplied: 'meterline.events.applied',
      eventsDuplicate: 'meterline.events.duplicate',
    });
    expect(RECORD_ID_TAG).toBe('meterline.record_id');
  });

  it('take the OpenTelemetry names from @opentelemetry/semantic-conventions', () => {
    const source = readFileSync(
      new URL('../../../src/observability/trace-attributes.ts', import.meta.url),
      'utf8',
    );
    for (const [key, name] of Object.entries(ATTR)) {
      if (name.startsWith('meterline.')) continue;
      // No hand-typed OpenTelemetry name: each comes from the package's constants.
      expect(source, `${key} is typed by hand`).not.toContain(`'${name}'`);
    }
  });
});
