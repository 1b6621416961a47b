// Control calls to the sandbox upstream (t/sandbox/cr-sandbox.pl, `/_sandbox/` API).
// Every call the browser tests make to it lives here, so the tests read as intent.
import { env } from './harness.mjs';

async function call(method, route, body) {
  const { sandbox } = env();
  const res = await fetch(`${sandbox}/_sandbox/${route}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`sandbox ${method} /_sandbox/${route} answered ${res.status}: ${text.slice(0, 300)}`);
  try { return JSON.parse(text); } catch { return text; }
}

/** Back to a clean state: no faults, default behaviour. */
export const reset = () => call('POST', 'reset', {});

/** New orders advance on their own, one state every `ms`. */
export const autoAdvance = (ms) => call('POST', 'auto_advance', { interval_ms: ms });

/** The next order streams are cut (connection dropped, no `stop`) after `events` events, `times` times. */
export const dropStreamAfter = (events, times = 1) => call('POST', 'faults', { stream_drop_after: events, drop_times: times });

/** The order stream answers `status` instead of streaming. */
export const streamStatus = (status) => call('POST', 'faults', { stream_status: status });
