/**
 * Every span attribute name meterline sets, in one place: the OpenTelemetry messaging and RPC semantic
 * conventions, plus our own `meterline.*` names. Dashboards and `meterline trace` search by these.
 *
 * The OpenTelemetry names come from @opentelemetry/semantic-conventions (pinned to an exact version in
 * package.json: its `incubating` entry point may rename or drop constants in a minor release). In 1.45 these
 * are marked deprecated there, with the replacement named, and are kept as emitted so that saved searches
 * and dashboards keep working until the conventions change is made on purpose: messaging.system
 * (→ messaging.system.name), messaging.kafka.message.key (→ kafka.message.key), messaging.kafka.offset
 * (→ kafka.offset), rpc.system (→ rpc.system.name) and rpc.service (folded into a fully qualified rpc.method).
 */
import { ATTR_RPC_METHOD } from '@opentelemetry/semantic-conventions';
import {
  ATTR_AWS_REQUEST_ID,
  ATTR_CLOUD_REGION,
  ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
  ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_DESTINATION_PARTITION_ID,
  ATTR_MESSAGING_KAFKA_MESSAGE_KEY,
  ATTR_MESSAGING_KAFKA_OFFSET,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  ATTR_RPC_SERVICE,
  ATTR_RPC_SYSTEM,
} from '@opentelemetry/semantic-conventions/incubating';

export const ATTR = {
  // Messaging (semantic conventions 1.3x).
  messagingSystem: ATTR_MESSAGING_SYSTEM,
  messagingOperationType: ATTR_MESSAGING_OPERATION_TYPE,
  messagingOperationName: ATTR_MESSAGING_OPERATION_NAME,
  messagingDestination: ATTR_MESSAGING_DESTINATION_NAME,
  messagingPartition: ATTR_MESSAGING_DESTINATION_PARTITION_ID,
  messagingConsumerGroup: ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  messagingBatchCount: ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
  messagingKafkaKey: ATTR_MESSAGING_KAFKA_MESSAGE_KEY,
  messagingKafkaOffset: ATTR_MESSAGING_KAFKA_OFFSET,
  // AWS calls (RPC conventions).
  rpcSystem: ATTR_RPC_SYSTEM,
  rpcService: ATTR_RPC_SERVICE,
  rpcMethod: ATTR_RPC_METHOD,
  cloudRegion: ATTR_CLOUD_REGION,
  awsRequestId: ATTR_AWS_REQUEST_ID,
  // meterline's own.
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
} as const;

/**
 * The event an AWS call span carries for each record it sent (one span per call, up to 25 records): the
 * record's id, customer, dimension and hour, and AWS's answer for it (status, MeteringRecordId).
 */
export const AWS_RECORD_EVENT = 'meterline.aws.record';

/** The tag `meterline trace` searches Jaeger by when given a record id. */
export const RECORD_ID_TAG = ATTR.recordId;
