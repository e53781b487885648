// Render the bundle's dashboards ("Music streaming KPIs", "Sparkify
// engagement and churn") in headless Chromium (playwright-core driving the
// Debian chromium package), keep a full-page screenshot of each, and write
// what the browser saw for test/superset/check.py: the chart-data responses
// by chart id, every chart tile (title, text, error shown, chart drawn),
// requests to other hosts, console errors.
//
//   node screenshot.js URL USER PASSWORD OUT.json PROFILE_DIR SLUG:NCHARTS:PNG ...
'use strict';
const fs = require('fs');
const { chromium } = require('playwright-core');

const [base, user, password, out, profile, ...boards] = process.argv.slice(2);
const origin = new URL(base).origin;

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
const t0 = Date.now();
function step(what) { console.log(`  browser: ${what} (${((Date.now() - t0) / 1000).toFixed(1)}s)`); }

// Open one dashboard, wait for all its charts, take the screenshot, and
// return its tiles as the capture shows them.
async function renderDashboard(page, slug, expected, png) {
  const before = new Set(Object.keys(result.responses));
  await page.goto(base + '/superset/dashboard/' + slug + '/', { waitUntil: 'domcontentloaded' });
  // wait until every tile is there, every chart's data has arrived and no
  // tile is still loading
  const deadline = Date.now() + 180000;
  let fresh = 0;
  for (;;) {
    const state = await page.evaluate(() => {
      const holders = Array.from(document.querySelectorAll('.dashboard-component-chart-holder'));
      const loading = holders.filter((h) => h.querySelector('.loading, [data-test="loading-indicator"]')).length;
      return { tiles: holders.length, loading };
    });
    fresh = Object.keys(result.responses).filter((k) => !before.has(k)).length;
    if (state.tiles >= expected && state.loading === 0 && fresh >= expected) break;
    if (Date.now() > deadline) {
      console.error(`timed out waiting for dashboard ${slug}: ` + JSON.stringify(state) +
        ', chart-data responses: ' + fresh);
      break;
    }
    await sleep(500);
  }
  step(`${slug}: ${fresh} charts loaded`);
  await sleep(2000);   // animations (ECharts draws in ~1 s)
  // The dashboard refreshes itself every 30 s, and a tile being redrawn has
  // no chart for a moment: take the picture when every tile shows its chart,
  // or, after a minute, as it is (then the checks say which tile failed).
  let tiles = [];
  for (const until = Date.now() + 60000; ; await sleep(1000)) {
    try {
      tiles = await readTiles(page, slug);
    } catch (e) {
      // the page was busy redrawing; look again
      if (Date.now() > until) throw e;
      continue;
    }
    if ((tiles.length >= expected && tiles.every((t) => t.viz && !t.error)) ||
        Date.now() > until) break;
  }
  await page.screenshot({ path: png, fullPage: true });
  step(`${slug}: screenshot taken`);
  return tiles;
}

// every chart tile of the page: title, text, an error shown, a chart drawn
function readTiles(page, dashboard) {
  return page.evaluate((dashboard) => {
    const errorSel = '.alert-danger, .ant-alert-error, [data-test="error-tooltip"], .error-message';
    return Array.from(document.querySelectorAll('.dashboard-component-chart-holder')).map((h) => {
      const titleEl = h.querySelector('[data-test="editable-title"], .header-title, .editable-title');
      const text = h.innerText || '';
      return {
        dashboard,
        title: titleEl ? titleEl.innerText.trim() : text.split('\n')[0],
        text,
        error: !!h.querySelector(errorSel) || /Unexpected error|Traceback|No results were returned|Data error|Error:/.test(text),
        // ECharts draw on a canvas, tables are tables, a big number is
        // text in its own element
        viz: !!h.querySelector('svg, canvas, table') ||
          /\d/.test((h.querySelector('.superset-legacy-chart-big-number .header-line') || {}).innerText || ''),
      };
    });
  }, dashboard);
}

const result = { responses: {}, tiles: [], external: [], console_errors: [] };

(async () => {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // tall enough for the whole dashboard: Superset renders only the tiles
    // in view, and a full-page capture of a taller page can catch them unmounted
    viewport: { width: 1600, height: 2800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  step('Chromium started');
  try {
    // only Superset itself may be reached
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (u.startsWith(origin) || u.startsWith('data:') || u.startsWith('blob:')) return route.continue();
      result.external.push(u);
      return route.abort();
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text().slice(0, 300)); });
    page.on('response', async (r) => {
      if (!r.url().includes('/api/v1/chart/data') || r.request().method() !== 'POST') return;
      let sliceId = null;
      try {
        const body = r.request().postDataJSON();
        sliceId = body && body.form_data && body.form_data.slice_id;
      } catch (e) { /* not JSON */ }
      // a response of the page we left (the dashboards refresh themselves)
      // may have no body any more: keep the last one that has
      let json = null;
      try { json = await r.json(); } catch (e) {
        try { json = { text: (await r.text()).slice(0, 500) }; } catch (e2) { return; }
      }
      if (sliceId != null) result.responses[String(sliceId)] = { status: r.status(), body: json };
    });

    await page.goto(base + '/login/', { waitUntil: 'domcontentloaded' });
    await page.fill('#username', user);
    await page.fill('#password', password);
    await Promise.all([
      page.waitForURL((u) => !u.pathname.startsWith('/login'), { timeout: 60000 }),
      page.click('input[type="submit"], button[type="submit"]'),
    ]);

    step('logged in');
    for (const board of boards) {
      const [slug, ncharts, png] = board.split(':');
      result.tiles.push(...await renderDashboard(page, slug, parseInt(ncharts, 10), png));
    }
  } finally {
    fs.writeFileSync(out, JSON.stringify(result, null, 1));
    await context.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
