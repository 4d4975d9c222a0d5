// The UI scenario in headless Chromium: upload a dataset, fill the new-job form from a preset,
// point it at the demo's tiny model and a validation set, start the job, watch the loss chart (with
// the dashed validation curve) and a sample appear,
// stop it and resume it. Screenshots go to artifacts/.
//
// Environment (set by run.sh): UI_URL, DEMO_JOB (the demo's job YAML), DATASET_DIR (clips and
// captions to upload), START_FRAME (an image), ARTIFACTS, CHROMIUM.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this through run.sh)`);
  return v;
};
const UI = env('UI_URL');
const ARTIFACTS = env('ARTIFACTS');
const DATASET_DIR = env('DATASET_DIR');
const START_FRAME = env('START_FRAME');
const DEMO_JOB = env('DEMO_JOB');
const MINUTE = 60_000;

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e.message}`);
    throw e;
  }
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'wanlora-e2e-profile-'));
// A persistent context is how Playwright hands Chromium a fresh --user-data-dir.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = browser.pages()[0] || await browser.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });

// The demo's job, as the UI itself parses it: its model and the small sizes it trains at.
const demo = await (await fetch(`${UI}/api/config/parse`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ yaml: fs.readFileSync(DEMO_JOB, 'utf8') }),
})).json();
if (!demo.tree) throw new Error(`the demo job does not parse: ${JSON.stringify(demo.findings)}`);
const dp = demo.tree.config.process[0];

const P = 'config.process.0';
const field = (p) => page.locator(`#f-${p.replace(/[^a-zA-Z0-9]/g, '-')}`);
async function setText(p, value) {
  if (value === undefined || value === null) return;
  const el = field(p);
  await el.fill(String(value));
  await el.dispatchEvent('change');
}
async function setBool(p, value) {
  if (value === undefined || value === null) return;
  await field(p).setChecked(Boolean(value));
}

try {
  await step('dashboard shows GPUs (or why not), disk and jobs', async () => {
    await page.goto(UI);
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await page.locator('section.panel', { hasText: 'Disk' }).getByText('free of').waitFor();
    const gpuPanel = await page.locator('section.panel', { hasText: 'GPUs' }).innerText();
    if (!/GPU \d|No GPU information|NVML lists no GPU/.test(gpuPanel)) throw new Error(`GPU panel: ${gpuPanel}`);
    await shot('01-dashboard');
  });

  const files = fs.readdirSync(DATASET_DIR).filter((f) => /\.(mp4|mov|webm|mkv|png|jpe?g|webp|txt)$/i.test(f))
    .map((f) => path.join(DATASET_DIR, f));
  const media = files.filter((f) => !f.endsWith('.txt'));

  await step('create a dataset and upload clips with captions', async () => {
    await page.goto(`${UI}/#/datasets`);
    await page.fill('#new-dataset', 'demo clips');
    await page.getByRole('button', { name: 'Create dataset' }).click();
    await page.getByRole('heading', { name: 'Dataset demo clips' }).waitFor();
    await page.setInputFiles('#upload-input', files);
    await page.locator('.media-card').nth(media.length - 1).waitFor({ timeout: MINUTE });
    const cards = await page.locator('.media-card').count();
    if (cards !== media.length) throw new Error(`${cards} cards for ${media.length} media files`);
    // Thumbnails load (a video's first frame made by ffmpeg).
    await page.waitForFunction(() => [...document.querySelectorAll('.media-card img')].every((i) => i.complete && i.naturalWidth > 0), null, { timeout: MINUTE });
  });

  await step('a file of the wrong type is refused, with the reason', async () => {
    const bogus = path.join(os.tmpdir(), `wanlora-e2e-${process.pid}.sh`);
    fs.writeFileSync(bogus, '#!/bin/sh\necho nope\n');
    await page.setInputFiles('#upload-input', bogus);
    await page.locator('#toast.error', { hasText: 'not accepted' }).waitFor();
    fs.rmSync(bogus);
    const cards = await page.locator('.media-card').count();
    if (cards !== media.length) throw new Error(`${cards} cards after a refused upload`);
  });

  await step('edit a caption inline', async () => {
    const caption = page.locator('.media-card textarea.caption').first();
    const before = await caption.inputValue();
    await caption.fill(`${before} (checked in the browser)`.trim());
    await caption.dispatchEvent('change');
    await page.locator('.media-card').first().getByText('saved').waitFor();
    await page.reload();
    await page.locator('.media-card textarea.caption').first().waitFor();
    const after = await page.locator('.media-card textarea.caption').first().inputValue();
    if (!after.endsWith('(checked in the browser)')) throw new Error(`caption after reload: ${after}`);
    await shot('02-dataset');
  });

  await step('dataset inspect report', async () => {
    await page.click('#inspect-run');
    await page.locator('#inspect pre.report, #inspect p.error').first().waitFor({ timeout: 2 * MINUTE });
    const text = await page.locator('#inspect').innerText();
    if (!/item/.test(text)) throw new Error(`inspect: ${text}`);
  });

  await step('import an AI Toolkit job file into the form', async () => {
    await page.goto(`${UI}/#/jobs/new`);
    await page.locator('#preset').waitFor();
    await page.setInputFiles('#import', DEMO_JOB);
    await page.waitForFunction((name) => document.querySelector('#f-config-name')?.value === name, demo.tree.config.name);
    const model = await field(`${P}.model.name_or_path`).inputValue();
    if (model !== String(dp.model.name_or_path)) throw new Error(`model after import: ${model}`);
  });

  let datasetFolder = '';
  await step('new job from a preset, pointed at the demo model', async () => {
    await page.goto(`${UI}/#/`);
    await page.goto(`${UI}/#/jobs/new`);
    await page.locator('#preset').waitFor();
    await page.selectOption('#preset', 'motion_24gb');
    await field('config.name').waitFor();
    await setText('config.name', 'e2e_demo');
    // As loaded, the preset names the repository's example folder: an error at that field.
    await page.waitForFunction(() => Number(document.querySelector('#findings-summary')?.dataset.errors) > 0);
    await page.locator('[data-path$="datasets.0.folder_path"].has-error').waitFor();
    datasetFolder = await page.evaluate(async () => (await (await fetch('/api/datasets')).json()).datasets.find((d) => d.name === 'demo clips').folder);
    await field(`${P}.datasets.0.folder_path`).selectOption(datasetFolder);
    await setText(`${P}.model.name_or_path`, dp.model.name_or_path);
    await setBool(`${P}.model.quantize`, dp.model.quantize ?? false);
    await setBool(`${P}.model.quantize_te`, dp.model.quantize_te ?? false);
    await setBool(`${P}.model.low_vram`, dp.model.low_vram ?? false);
    await setText(`${P}.train.steps`, dp.train.steps);
    await setText(`${P}.train.switch_boundary_every`, dp.train.switch_boundary_every);
    await setText(`${P}.save.save_every`, dp.save?.save_every);
    await setText(`${P}.sample.sample_every`, dp.sample?.sample_every);
    for (const key of ['width', 'height', 'num_frames', 'sample_steps', 'fps']) await setText(`${P}.sample.${key}`, dp.sample?.[key]);
    const ds = dp.datasets[0];
    await setText(`${P}.datasets.0.num_frames`, ds.num_frames);
    if (ds.resolution !== undefined) {
      const wanted = [].concat(ds.resolution).map(Number);
      for (const box of await field(`${P}.datasets.0.resolution`).locator('input[type=checkbox]').all()) {
        await box.setChecked(wanted.includes(Number(await box.getAttribute('value'))));
      }
      for (const r of wanted) {
        if (!(await field(`${P}.datasets.0.resolution.${r}`).count())) throw new Error(`resolution ${r} is not offered by the form`);
      }
    }
    // One start frame per prompt.
    const prompts = await page.locator('[data-path$=".ctrl_img"] input[type=file]').count();
    for (let i = 0; i < prompts; i++) {
      await field(`${P}.sample.samples.${i}.ctrl_img`).setInputFiles(START_FRAME);
      await page.locator(`[data-path="config.process.0.sample.samples.${i}.ctrl_img"] .ctrl-preview`, { hasText: '.png' }).waitFor();
    }
    await page.waitForFunction(() => document.querySelector('#findings-summary')?.dataset.errors === '0', null, { timeout: 20_000 })
      .catch(async () => { throw new Error(`findings: ${await page.locator('#findings-summary').innerText()}`); });
    await shot('03-new-job-form');
  });

  await step('YAML view round-trips with the form', async () => {
    await page.click('#yaml-toggle');
    await page.locator('#yaml').waitFor();
    let yaml = await page.locator('#yaml').inputValue();
    if (!yaml.includes('name: e2e_demo')) throw new Error('the YAML view lacks the form\'s name');
    // Keys the form does not show are edited here: the device and the training folder the demo uses.
    if (dp.device) yaml = yaml.replace(/^(\s*)device: .*$/m, `$1device: ${dp.device}`);
    yaml = yaml.replace(/^(\s*)trigger_word: .*$/m, '$1trigger_word: e2ecam');
    await page.locator('#yaml').fill(yaml);
    await page.click('#yaml-toggle');
    await field('config.name').waitFor();
    const trigger = await field(`${P}.trigger_word`).inputValue();
    if (trigger !== 'e2ecam') throw new Error(`trigger word after the YAML edit: ${trigger}`);
    await page.waitForFunction(() => document.querySelector('#findings-summary')?.dataset.errors === '0', null, { timeout: 20_000 })
      .catch(async () => { throw new Error(`findings: ${await page.locator('#findings-summary').innerText()}`); });
  });

  await step('the Validation card edits validation_config and round-trips through the YAML view', async () => {
    const V = `${P}.train.validation_config`;
    const card = page.locator('section.panel[data-panel="validation"]');
    await card.waitFor();
    for (const key of ['validate_every_n_steps', 'resolution', 'validation_sigmas']) await field(`${V}.${key}`).waitFor();
    await card.getByRole('button', { name: 'Add validation item' }).click();
    // The demo's clips serve as the held-out folder here: the point is the curve, not a fair split.
    await setText(`${V}.validation_items.0.image_path`, datasetFolder);
    await setText(`${V}.validation_items.0.prompt`, 'a held-out clip');
    await setText(`${V}.validate_every_n_steps`, 2);
    const res = [].concat(dp.datasets[0].resolution ?? [256]).map(Number)[0];
    await setText(`${V}.resolution`, res);
    await setText(`${V}.validation_sigmas`, '1, 0.5');
    await page.click('#yaml-toggle');
    await page.locator('#yaml').waitFor();
    let yaml = await page.locator('#yaml').inputValue();
    for (const want of ['validation_config:', 'validate_every_n_steps: 2', `resolution: ${res}`, 'image_path:', 'prompt: a held-out clip']) {
      if (!yaml.includes(want)) throw new Error(`the YAML view lacks "${want}":\n${yaml}`);
    }
    if (!/validation_sigmas:\s*(\[\s*1(\.0)?,\s*0\.5\s*\]|\n\s*- 1(\.0)?\n\s*- 0\.5)/.test(yaml)) throw new Error(`validation_sigmas in the YAML view:\n${yaml}`);
    // Edited in the YAML view, read back by the form.
    yaml = yaml.replace('validate_every_n_steps: 2', 'validate_every_n_steps: 3');
    await page.locator('#yaml').fill(yaml);
    await page.click('#yaml-toggle');
    await field('config.name').waitFor();
    const every = await field(`${V}.validate_every_n_steps`).inputValue();
    if (every !== '3') throw new Error(`validate_every_n_steps after the YAML edit: ${every}`);
    const sigmas = await field(`${V}.validation_sigmas`).inputValue();
    if (sigmas.replace(/\s/g, '') !== '1,0.5') throw new Error(`validation_sigmas after the YAML edit: ${sigmas}`);
    const item = await field(`${V}.validation_items.0.image_path`).inputValue();
    if (item !== datasetFolder) throw new Error(`validation item after the YAML edit: ${item}`);
    await page.waitForFunction(() => document.querySelector('#findings-summary')?.dataset.errors === '0', null, { timeout: 20_000 })
      .catch(async () => { throw new Error(`findings: ${await page.locator('#findings-summary').innerText()}`); });
    await page.locator('section.panel[data-panel="validation"]').screenshot({ path: path.join(ARTIFACTS, '03b-validation-card.png') });
  });

  let stoppedAt = 0;
  await step('start the job; the loss chart fills and a sample appears', async () => {
    await page.click('#save-start');
    await page.waitForURL(/#\/jobs\/\d+$/);
    await page.locator('h1 .badge.running').waitFor({ timeout: 2 * MINUTE });
    await page.waitForFunction(() => Number(document.querySelector('#loss-chart')?.dataset.points) >= 3, null, { timeout: 10 * MINUTE });
    await page.locator('#samples figure.sample video, #samples figure.sample img').first().waitFor({ timeout: 10 * MINUTE });
    await page.waitForFunction(() => {
      const v = document.querySelector('#samples figure.sample video');
      return !v || v.readyState >= 1;
    }, null, { timeout: MINUTE });
    await page.locator('#log').getByText(/step/i).first().waitFor();
    // The held-out loss (metrics.jsonl records with validation_loss) is drawn dashed as "<expert> validation".
    await page.waitForFunction(() => / validation \(dashed\)/.test(document.querySelector('#loss-chart')?.dataset.legend || ''), null, { timeout: 10 * MINUTE })
      .catch(async () => { throw new Error(`chart legend: ${await page.locator('#loss-chart').getAttribute('data-legend')}`); });
    // For the screenshot: a few more points, both experts when the run is long enough.
    await page.waitForFunction(() => Number(document.querySelector('#loss-chart')?.dataset.points) >= 14, null, { timeout: 30_000 }).catch(() => {});
    await page.fill('#smoothing', '0.8');
    await page.locator('#smoothing').dispatchEvent('input');
    await shot('04-job-running');
    fs.copyFileSync(path.join(ARTIFACTS, '04-job-running.png'), path.join(ARTIFACTS, 'ui-screenshot.png'));
  });

  await step('stop the job', async () => {
    await page.getByRole('button', { name: 'Stop' }).click();
    await page.locator('h1 .badge.stopped').waitFor({ timeout: 5 * MINUTE });
    stoppedAt = Number((await page.locator('#job-step').innerText()).split('/')[0]);
    if (!(stoppedAt > 0)) throw new Error(`stopped at step ${stoppedAt}`);
    await page.locator('#checkpoints table').waitFor();
    await shot('05-job-stopped');
  });

  await step('resume the job; it continues past the stop', async () => {
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.locator('h1 .badge.running, h1 .badge.completed').first().waitFor({ timeout: 2 * MINUTE });
    await page.waitForFunction((from) => Number(document.querySelector('#job-step').innerText.split('/')[0]) > from, stoppedAt, { timeout: 10 * MINUTE });
    const log = await page.locator('#log').innerText();
    if ((log.match(/\[wanlora ui\] starting/g) || []).length < 2) throw new Error('the log does not show the second start');
    await shot('06-job-resumed');
  });

  await step('the jobs page lists it; stop it for good', async () => {
    await page.goto(`${UI}/#/jobs`);
    await page.locator('tr[data-job="e2e_demo"]').waitFor();
    const row = page.locator('tr[data-job="e2e_demo"]');
    if (await row.getByRole('button', { name: 'Stop' }).count()) {
      await row.getByRole('button', { name: 'Stop' }).click();
      await page.locator('tr[data-job="e2e_demo"] .badge.stopped, tr[data-job="e2e_demo"] .badge.completed').first().waitFor({ timeout: 5 * MINUTE });
    }
    await shot('07-jobs');
  });

  await step('a UI with an access token asks for it and refuses a wrong one', async () => {
    const AUTH_URL = env('AUTH_URL');
    const blocked = await fetch(`${AUTH_URL}/api/jobs`);
    if (blocked.status !== 401) throw new Error(`API without the token: ${blocked.status}`);
    await page.goto(AUTH_URL);
    await page.locator('#login[open]').waitFor();
    await page.fill('#login-token', 'not-the-token');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error', { hasText: 'not right' }).waitFor();
    await page.fill('#login-token', env('AUTH_TOKEN'));
    await page.click('#login-form button[type=submit]');
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await page.locator('section.panel', { hasText: 'Disk' }).getByText('free of').waitFor();
  });

  await step('no errors in the browser console', async () => {
    // The refused upload (415) and the login check (401) fail on purpose.
    const real = consoleErrors.filter((e) => !/favicon|status of 415|status of 401/.test(e));
    if (real.length) throw new Error(real.join('\n'));
  });
} catch (e) {
  await shot('failure').catch(() => {});
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
