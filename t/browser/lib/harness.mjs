// SPDX-License-Identifier: Apache-2.0
// Shared set-up for the browser tests: environment, Chromium, sandbox control, artifacts.
//
// Environment:
//   CR_BASE_URL     origin of the Apache serving /demo/, /cryptorefills.js and /api/ (required)
//   CR_SANDBOX_URL  URL of the sandbox upstream, for /_sandbox/ control calls (required)
//   CR_API_PATH     the module's <Location> on CR_BASE_URL (default /api)
//   CR_CHROMIUM     browser binary (default /usr/bin/chromium)
//   CI              when set, a missing browser or playwright-core fails instead of skipping
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
export const artifactsDir = path.join(repoRoot, 't', 'artifacts');
export const CHROMIUM = process.env.CR_CHROMIUM || '/usr/bin/chromium';
export const API_PATH = (process.env.CR_API_PATH || '/api').replace(/\/+$/, '');

/** {base, sandbox}; throws a clear message when either variable is unset. */
export function env() {
  const missing = ['CR_BASE_URL', 'CR_SANDBOX_URL'].filter((k) => !process.env[k]);
  if (missing.length) {
    throw new Error(`${missing.join(' and ')} not set: the browser tests need CR_BASE_URL (the Apache origin serving /demo/ and /api/) and CR_SANDBOX_URL (the sandbox upstream, for /_sandbox/ control calls). Run them through the Apache::Test harness, or export both.`);
  }
  return { base: process.env.CR_BASE_URL.replace(/\/+$/, ''), sandbox: process.env.CR_SANDBOX_URL.replace(/\/+$/, '') };
}

/**
 * Why the browser can't run here, or null.  Under CI that is a failure, never a skip.
 * Call as: const why = await browserUnavailable(); if (why) return t.skip(why);
 */
export async function browserUnavailable() {
  let reason = null;
  if (!fs.existsSync(CHROMIUM)) reason = `${CHROMIUM} not found (Debian package chromium)`;
  else {
    try { await import('playwright-core'); } catch { reason = 'playwright-core not installed (run npm ci at the repo root)'; }
  }
  if (reason && process.env.CI) throw new Error(`browser tests cannot run under CI: ${reason}`);
  return reason;
}

/**
 * Launch headless Chromium with the flags that keep it quiet on a closed network.
 * ignoreHTTPSErrors: accept the test CA's certificate on an https CR_BASE_URL.
 */
export async function launch({ ignoreHTTPSErrors = false } = {}) {
  const { chromium } = await import('playwright-core');
  const { base } = env();
  const host = new URL(base).hostname;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cr-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors,
    viewport: { width: 1200, height: 900 },
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Only loopback exists here: fail every other lookup at once (the logo CDN included)
      // instead of waiting on DNS, so nothing depends on images loading.
      `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${host}, EXCLUDE localhost, EXCLUDE 127.0.0.1`,
    ],
  });
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

/**
 * A page that records what went wrong in it: uncaught errors, console errors other than
 * failed image loads, and responses of the API.
 */
export async function openPage(context, t) {
  const page = await context.newPage();
  const problems = [];
  const apiCalls = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // Logos come from a CDN that is unreachable here; 4xx/5xx answers the test provokes are expected.
    if (/ERR_NAME_NOT_RESOLVED|Failed to load resource|EventSource/.test(text)) return;
    problems.push(`console: ${text}`);
  });
  page.on('response', (r) => { if (r.url().includes(`${API_PATH}/`)) apiCalls.push({ url: r.url(), status: r.status(), method: r.request().method(), headers: r.request().headers() }); });
  page.setDefaultTimeout(20000);
  if (t) t.after(() => page.close().catch(() => {}));
  return { page, problems, apiCalls };
}

export function demoUrl(query = '') {
  const { base } = env();
  return `${base}/demo/${query ? `?${query}` : ''}`;
}

/** GET/POST JSON against the module, from Node. */
export async function apiJson(route, init = {}) {
  const { base } = env();
  const res = await fetch(`${base}${API_PATH}/${route}`, { ...init, headers: { Accept: 'application/json', ...(init.headers || {}) } });
  const text = await res.text();
  let body; try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body, headers: res.headers };
}

export async function saveScreenshot(page, name) {
  fs.mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Wait until the demo finished its start-up (catalog, countries, payment methods). */
export async function waitReady(page) {
  await page.waitForSelector('body[data-ready="true"]');
}
