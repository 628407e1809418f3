import { newScannedEvent, scanEvent } from '../../src/ingest/json-scan.ts';
const N = 500000;
const vals: Buffer[] = [];
for (let i = 0; i < N; i++) vals.push(Buffer.from(JSON.stringify({ id: `b7-${String(i).padStart(9,'0')}`, customer: `cust-${String(i % 1000).padStart(4,'0')}`, dimension: `d${i%5}`, quantity: 1 + (i % 100), timestamp: new Date(Date.now() - 3600000 + (i % 3600000)).toISOString() })));
const out = newScannedEvent();
for (let r = 0; r < 6; r++) {
  let t = performance.now(); let ok = 0;
  for (const v of vals) if (scanEvent(v, out, 128, 255)) ok++;
  const a = performance.now() - t; t = performance.now(); let x = 0;
  for (const v of vals) { const o = JSON.parse(v.toString('utf8')); x += o.quantity; }
  const b = performance.now() - t;
  console.log(`scan ${(a*1000/N).toFixed(3)} µs/ev (${ok}) JSON.parse ${(b*1000/N).toFixed(3)} µs/ev`);
}
