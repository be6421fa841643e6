// Loaded into the updater by bench/profile-start.ts (NODE_OPTIONS=--import): samples
// process.memoryUsage() every 100 ms and, with PROFILE_CPU=1, runs V8's CPU profiler and
// sampling heap profiler from the first line. On SIGUSR2 everything is written to
// PROFILE_DIR: memory.json (samples, V8 heap spaces, /proc smaps_rollup), and with
// PROFILE_CPU=1 start.cpuprofile, live.heapprofile and after-sync.heapsnapshot.
import inspector from 'node:inspector';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

const dir = process.env.PROFILE_DIR ?? '.';
const cpu = process.env.PROFILE_CPU === '1';
const t0 = Date.now();
const samples = [];
const mib = (b) => Math.round(b / 104857.6) / 10;
const timer = setInterval(() => {
  const m = process.memoryUsage();
  samples.push({ t: Date.now() - t0, rss: mib(m.rss), heapTotal: mib(m.heapTotal), heapUsed: mib(m.heapUsed), external: mib(m.external), arrayBuffers: mib(m.arrayBuffers) });
}, 100);
timer.unref();
const session = new inspector.Session();
session.connect();
const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
if (cpu) {
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 500 });
  await post('Profiler.start');
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', { samplingInterval: 16384 });
}
process.on('SIGUSR2', async () => {
  clearInterval(timer);
  const spaces = v8.getHeapSpaceStatistics().map((s) => ({ space: s.space_name, size: mib(s.space_size), used: mib(s.space_used_size) }));
  const smaps = readFileSync('/proc/self/smaps_rollup', 'utf8');
  writeFileSync(path.join(dir, 'memory.json'), JSON.stringify({ samples, spaces, now: process.memoryUsage(), smaps }, null, 1));
  if (cpu) {
    const { profile } = await post('Profiler.stop');
    writeFileSync(path.join(dir, 'start.cpuprofile'), JSON.stringify(profile));
    const { profile: heap } = await post('HeapProfiler.getSamplingProfile');
    writeFileSync(path.join(dir, 'live.heapprofile'), JSON.stringify(heap));
    v8.writeHeapSnapshot(path.join(dir, 'after-sync.heapsnapshot'));
  }
  writeFileSync(path.join(dir, 'done'), '');
});
