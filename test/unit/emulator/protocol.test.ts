/** Wire protocol, endpoint discovery, the admin API and the fault seam. */
import {
  BatchMeterUsageCommand,
  InternalServiceErrorException,
  MarketplaceMeteringServiceException,
  RegisterUsageCommand,
  ThrottlingException,
} from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import {
  ACCOUNT,
  accountRecord,
  NOW,
  rejection,
  SUBSCRIBED,
  sdkClient,
  snapshot,
} from '../../support/emulator.ts';

const HOUR_START = Date.UTC(2026, 10, 15, 11);
const SIGNED = {
  authorization: 'AWS4-HMAC-SHA256 Credential=test/20261115/us-east-1/aws-marketplace/aws4_request',
};

let emulator: RunningEmulator;

beforeAll(async () => {
  emulator = await startEmulator({ now: () => NOW, customers: SUBSCRIBED });
});
afterAll(() => emulator.close());
beforeEach(() => emulator.state.reset());

describe('endpoint discovery', () => {
  it('is reachable through AWS_ENDPOINT_URL_MARKETPLACE_METERING, without `endpoint`', async () => {
    const saved = process.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING;
    process.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING = emulator.url;
    const client = sdkClient(undefined);
    try {
      const out = await client.send(
        new BatchMeterUsageCommand({ UsageRecords: [accountRecord(HOUR_START)] }),
      );
      expect(out.Results?.[0]?.Status).toBe('Success');
      expect((await snapshot(emulator.url)).records[0]?.meteringRecordId).toBe(
        out.Results?.[0]?.MeteringRecordId,
      );
    } finally {
      client.destroy();
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING;
      else process.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING = saved;
    }
  });
});

describe('awsJson1_1 wire format', () => {
  const post = (headers: Record<string, string>, body: string) =>
    fetch(emulator.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.1', ...SIGNED, ...headers },
      body,
    });

  it('answers an unknown X-Amz-Target with 400 UnknownOperationException', async () => {
    const res = await post({ 'x-amz-target': 'AWSMPMeteringService.DeleteEverything' }, '{}');
    expect(res.status).toBe(400);
    expect(res.headers.get('x-amzn-errortype')).toBe('UnknownOperationException');
    expect(await res.json()).toMatchObject({ __type: 'UnknownOperationException' });
  });

  it('surfaces operations it does not emulate as UnknownOperationException through the SDK', async () => {
    const client = sdkClient(emulator.url);
    try {
      const error = await rejection(
        client.send(new RegisterUsageCommand({ ProductCode: 'prod-x', PublicKeyVersion: 1 })),
      );
      expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
      expect(error.name).toBe('UnknownOperationException');
    } finally {
      client.destroy();
    }
  });

  it('answers malformed JSON with SerializationException', async () => {
    const res = await post({ 'x-amz-target': 'AWSMPMeteringService.BatchMeterUsage' }, '{"UsageRecords": [');
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ __type: 'SerializationException' });
  });

  it('requires a SigV4 Authorization header', async () => {
    const res = await fetch(emulator.url, {
      method: 'POST',
      headers: { 'x-amz-target': 'AWSMPMeteringService.BatchMeterUsage' },
      body: '{}',
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ __type: 'MissingAuthenticationTokenException' });
  });

  it('takes epoch seconds, fractional ones included', async () => {
    const body = JSON.stringify({
      UsageRecords: [
        {
          Timestamp: HOUR_START / 1000 + 0.5,
          CustomerAWSAccountId: ACCOUNT,
          LicenseArn: 'arn:aws:license-manager::1:license:l-1',
          Dimension: 'd',
          Quantity: 1,
        },
      ],
    });
    const res = await post({ 'x-amz-target': 'AWSMPMeteringService.BatchMeterUsage' }, body);
    expect(res.status).toBe(200);
    const out = (await res.json()) as { Results: { Status: string }[]; UnprocessedRecords: unknown[] };
    expect(out.Results[0]?.Status).toBe('Success');
    expect(out.UnprocessedRecords).toEqual([]);
  });
});

describe('admin API', () => {
  it('reports health, calls, duplicates and errors, and resets', async () => {
    expect(await (await fetch(`${emulator.url}/_emulator/health`)).json()).toEqual({ ok: true });

    const client = sdkClient(emulator.url);
    try {
      await client.send(
        new BatchMeterUsageCommand({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 1 })] }),
      );
      await client.send(
        new BatchMeterUsageCommand({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 2 })] }),
      );
      await rejection(client.send(new BatchMeterUsageCommand({ UsageRecords: [] })));
    } finally {
      client.destroy();
    }
    const snap = await snapshot(emulator.url);
    expect(snap).toMatchObject({
      duplicates: 1,
      calls: { BatchMeterUsage: 3 },
      errors: { ValidationException: 1 },
    });
    expect(snap.records).toHaveLength(1);

    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
    expect(await snapshot(emulator.url)).toEqual({
      records: [],
      duplicates: 0,
      calls: {},
      errors: {},
      throttled: {},
      injected: { throttling: 0, internalError: 0, timeout: 0, unprocessedRecords: 0, delayed: 0 },
    });
  });

  it('lists and changes subscriptions', async () => {
    const res = await fetch(`${emulator.url}/_emulator/customers`, {
      method: 'POST',
      body: JSON.stringify({ subscribe: ['123'], unsubscribe: [ACCOUNT] }),
    });
    const { customers } = (await res.json()) as { customers: { id: string }[] };
    expect(customers.map((c) => c.id)).toContain('123');
    expect(customers.map((c) => c.id)).not.toContain(ACCOUNT);
    emulator.state.subscribe([ACCOUNT]);
    emulator.state.unsubscribe(['123']);
  });

  it('rejects a malformed customers change with 400', async () => {
    const res = await fetch(`${emulator.url}/_emulator/customers`, {
      method: 'POST',
      body: JSON.stringify({ subscribe: 'not-a-list' }),
    });
    expect(res.status).toBe(400);
  });
});

describe('fault seam', () => {
  it('lets a hook answer with throttling or a server fault before any work is done', async () => {
    let next: ServiceError | undefined = new ServiceError('ThrottlingException', 'Rate exceeded');
    const faulty = await startEmulator({
      now: () => NOW,
      customers: [ACCOUNT],
      faults: { beforeOperation: () => (next ? { kind: 'error', error: next } : undefined) },
    });
    const client = sdkClient(faulty.url);
    const call = () => client.send(new BatchMeterUsageCommand({ UsageRecords: [accountRecord(HOUR_START)] }));
    try {
      expect(await rejection(call())).toBeInstanceOf(ThrottlingException);
      next = new ServiceError('InternalServiceErrorException', 'boom');
      const error = await rejection(call());
      expect(error).toBeInstanceOf(InternalServiceErrorException);
      expect(error.$fault).toBe('server');
      expect((await snapshot(faulty.url)).records).toEqual([]);
      next = undefined;
      expect((await call()).Results?.[0]?.Status).toBe('Success');
    } finally {
      client.destroy();
      await faulty.close();
    }
  });

  it('lets a hook leave records unprocessed', async () => {
    const faulty = await startEmulator({
      now: () => NOW,
      customers: [ACCOUNT],
      faults: { leaveUnprocessed: (r) => r.Dimension === 'flaky' },
    });
    const client = sdkClient(faulty.url);
    try {
      const out = await client.send(
        new BatchMeterUsageCommand({
          UsageRecords: [accountRecord(HOUR_START), accountRecord(HOUR_START, { Dimension: 'flaky' })],
        }),
      );
      expect(out.Results?.map((r) => r.UsageRecord?.Dimension)).toEqual(['api_calls']);
      expect(out.UnprocessedRecords?.map((r) => r.Dimension)).toEqual(['flaky']);
    } finally {
      client.destroy();
      await faulty.close();
    }
  });
});
