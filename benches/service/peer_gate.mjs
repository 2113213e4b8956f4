// Preloaded into the BullMQ peer by the llm-jobs benchmark (`node --import`), which writes it
// beside the peer's scripts: once the peer prints its result line, the process holds still
// until the benchmark has read its CPU time and Redis's counters, so the clean-up after the
// run (closing the worker, obliterating the queue) is not counted. The benchmark releases it
// by writing a line to its standard input, or by closing it.
import { readSync } from 'node:fs';

const print = console.log;
let held = false;

console.log = (...args) => {
  print(...args);
  if (held) return;
  held = true;
  const byte = Buffer.alloc(1);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      readSync(0, byte, 0, 1, null);
      return;
    } catch (err) {
      if (err.code !== 'EAGAIN') return;
      Atomics.wait(nap, 0, 0, 5);
    }
  }
};
