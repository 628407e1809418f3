/**
 * Every span attribute name meterline sets, in one place: the OpenTelemetry messaging and RPC semantic
 * conventions, plus our own `meterline.*` names. Dashboards and `meterline trace` search by these.
 */
export const ATTR = {
  // Messaging (semantic conventions 1.3x).
  messagingSystem: 'messaging.system',
  messagingOperationType: 'messaging.operation.type',
  messagingOperationName: 'messaging.operation.name',
  messagingDestination: 'messaging.destination.name',
  messagingPartition: 'messaging.destination.partition.id',
  messagingConsumerGroup: 'messaging.consumer.group.name',
  messagingBatchCount: 'messaging.batch.message_count',
  messagingKafkaKey: 'messaging.kafka.message.key',
  messagingKafkaOffset: 'messaging.kafka.offset',
  // AWS calls (RPC conventions).
  rpcSystem: 'rpc.system',
  rpcService: 'rpc.service',
  rpcMethod: 'rpc.method',
  cloudRegion: 'cloud.region',
  // meterline's own.
  customer: 'meterline.customer',
  dimension: 'meterline.dimension',
  windowStart: 'meterline.window_start',
  recordId: 'meterline.record_id',
  eventId: 'meterline.event_id',
  meteringRecordId: 'meterline.metering_record_id',
  awsStatus: 'meterline.aws.status',
  awsCallId: 'meterline.aws.call_id',
  awsBatchSize: 'meterline.aws.batch_size',
  awsAttempt: 'meterline.aws.attempt',
  quantity: 'meterline.quantity',
  records: 'meterline.records',
  outcome: 'meterline.outcome',
  dlqReason: 'meterline.dlq.reason',
  eventsApplied: 'meterline.events.applied',
  eventsDuplicate: 'meterline.events.duplicate',
} as const;

/** The tag `meterline trace` searches Jaeger by when given a record id. */
export const RECORD_ID_TAG = ATTR.recordId;
