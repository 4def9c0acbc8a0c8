// The measurements of benchmarks/web_latency.py, shared by Node (node.mjs) and the browser (bench.html).
// Per keystroke: type one character into a session, then ask for the top-k completions, as a keyboard does.

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function summary(times) {
  const sorted = [...times].sort((a, b) => a - b);
  return { n: sorted.length, p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9),
           p99: percentile(sorted, 0.99), mean: sorted.reduce((a, b) => a + b, 0) / sorted.length };
}

/** Keystroke latencies (ms) typing `text` key by key, and session.run latencies at batch 1 and 4. */
export async function measure(Autocompleter, ort, source, text, { k = 3, beam = 4, maxChars = 16, runs = 500,
                                                                  warmup = 50 } = {}) {
  const started = performance.now();
  const ac = await Autocompleter.create(source, { ort, beam, maxChars });
  const createMs = performance.now() - started;
  const chars = Array.from(text);
  const session = ac.session();
  for (const char of chars.slice(0, warmup)) { await session.type(char); await session.suggestions(k); }
  session.backspace(warmup);
  const keystrokes = [];
  const runsBefore = ac.model.runs;
  for (const char of chars) {
    const t0 = performance.now();
    await session.type(char);
    await session.suggestions(k);
    keystrokes.push(performance.now() - t0);
  }
  const runsPerKeystroke = (ac.model.runs - runsBefore) / chars.length;
  const run = {};
  for (const batch of [1, 4]) {
    const ids = new BigInt64Array(batch).fill(1n);
    const state = ac.model.zeroState(batch);
    for (let i = 0; i < 20; i++) await ac.model.step(ids, state);
    // timed in groups of 10 calls: a browser's performance.now() has a 0.1 ms resolution without
    // cross-origin isolation, coarser than one call
    const times = [];
    for (let i = 0; i < runs / 10; i++) {
      const t0 = performance.now();
      for (let j = 0; j < 10; j++) await ac.model.step(ids, state);
      times.push((performance.now() - t0) / 10);
    }
    run[`batch${batch}`] = summary(times);
  }
  return { createMs, keystroke: summary(keystrokes), runsPerKeystroke, run };
}
