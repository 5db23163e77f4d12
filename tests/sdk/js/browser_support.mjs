// What the Chromium tests (browser, console, demo) share: where Debian's Chromium is,
// the flags it runs headless with under playwright-core, and where screenshots go.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Screenshots of the page tests: tests/sdk/js/artifacts/<test>-<page>.png. */
export const ARTIFACTS = path.join(here, 'artifacts');

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const CHROMIUM_MISSING =
  `chromium not found at ${CHROMIUM}: install it with 'apt-get install -y chromium' ` +
  '(scripts/test does this itself when run as root), or point CHROMIUM_BIN at a Chromium binary';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
