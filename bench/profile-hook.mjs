// Loaded into the updater by bench/profile-start.ts (NODE_OPTIONS=--import): V8's CPU
// profiler and sampling heap profiler from the first line; on SIGUSR2 both are written,
// with a heap snapshot, to PROFILE_DIR.
import inspector from 'node:inspector';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

const dir = process.env.PROFILE_DIR ?? '.';
const session = new inspector.Session();
session.connect();
const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
await post('Profiler.enable');
await post('Profiler.setSamplingInterval', { interval: 500 });
await post('Profiler.start');
await post('HeapProfiler.enable');
await post('HeapProfiler.startSampling', { samplingInterval: 16384 });
process.on('SIGUSR2', async () => {
  const { profile } = await post('Profiler.stop');
  writeFileSync(path.join(dir, 'start.cpuprofile'), JSON.stringify(profile));
  const { profile: heap } = await post('HeapProfiler.getSamplingProfile');
  writeFileSync(path.join(dir, 'live.heapprofile'), JSON.stringify(heap));
  v8.writeHeapSnapshot(path.join(dir, 'after-sync.heapsnapshot'));
  writeFileSync(path.join(dir, 'done'), '');
});
