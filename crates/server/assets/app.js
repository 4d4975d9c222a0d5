// The wanlora UI: a few hash-routed pages over the JSON API. No framework, no build step.
'use strict';

const view = document.getElementById('view');
let pageCleanup = [];

// ---- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `request failed (${status})`);
    this.status = status;
    this.findings = (body && body.findings) || [];
  }
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    await login();
    return api(method, path, body);
  }
  const data = res.headers.get('content-type')?.includes('json') ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// Uploads files with progress (fetch has no upload progress); resolves with the JSON answer.
function upload(path, files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append('file', f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: 'the upload was interrupted' }));
    xhr.send(form);
  });
}

function toast(message, kind) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = `show ${kind || ''}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.className = ''), kind === 'error' ? 8000 : 3000);
}

async function guarded(action) {
  try {
    return await action();
  } catch (e) {
    toast(e.message, 'error');
    return undefined;
  }
}

function login() {
  const dialog = document.getElementById('login');
  if (login.pending) return login.pending;
  login.pending = new Promise((resolve) => {
    const form = document.getElementById('login-form');
    const error = document.getElementById('login-error');
    form.onsubmit = async (e) => {
      e.preventDefault();
      const token = document.getElementById('login-token').value;
      const res = await fetch('/api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
      if (res.ok) {
        dialog.close();
        login.pending = null;
        resolve();
      } else {
        error.textContent = 'That token is not right.';
      }
    };
    dialog.showModal();
  });
  return login.pending;
}

// ---- formatting -----------------------------------------------------------------------------

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '–';
  seconds = Math.round(seconds);
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function badge(state) {
  return h('span', { class: `badge ${state}` }, state);
}

function progressOf(job, status) {
  const step = status && status.step !== undefined ? status.step : job.step;
  const total = (status && status.total_steps) || job.total_steps || 0;
  return { step, total, fraction: total ? Math.min(1, step / total) : 0 };
}

// ---- pages ----------------------------------------------------------------------------------

function jobsTable(jobs) {
  if (!jobs.length) return h('p', { class: 'muted' }, 'No jobs yet. ', h('a', { href: '#/jobs/new' }, 'Create one'), '.');
  return h('table', { class: 'jobs' },
    h('thead', {}, h('tr', {}, ['Name', 'State', 'GPU', 'Progress', 'Speed', ''].map((t) => h('th', {}, t)))),
    h('tbody', {}, jobs.map(({ job, status }) => {
      const p = progressOf(job, status);
      return h('tr', { dataset: { job: job.name } },
        h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.name)),
        h('td', {}, badge(job.state), job.queue_position ? ` #${job.queue_position}` : ''),
        h('td', {}, job.gpu),
        h('td', {}, h('progress', { max: 1, value: p.fraction }), ` ${p.step} / ${p.total}`),
        h('td', {}, status && status.seconds_per_step ? `${status.seconds_per_step.toFixed(2)} s/step` : ''),
        h('td', {}, jobActions(job, true)));
    })));
}

function jobActions(job, compact) {
  const act = (label, fn, cls) => h('button', { type: 'button', class: `small ${cls || ''}`, onclick: () => guarded(fn) }, label);
  const refresh = () => route();
  const out = [];
  const active = job.state === 'running' || job.state === 'stopping';
  if (!active && job.state !== 'queued') {
    const label = job.state === 'ready' ? 'Start' : job.state === 'completed' ? 'Run again' : 'Resume';
    out.push(act(label, async () => { await api('POST', `/api/jobs/${job.id}/start`); toast(`${job.name} queued`); refresh(); }, 'primary'));
  }
  if (job.state === 'running' || job.state === 'queued') {
    out.push(act('Stop', async () => { await api('POST', `/api/jobs/${job.id}/stop`); toast(`stopping ${job.name}`); refresh(); }, 'danger'));
  }
  if (!compact) {
    if (job.state === 'running') {
      out.push(act('Save now', async () => { await api('POST', `/api/jobs/${job.id}/save-now`); toast('the trainer saves at the end of this step'); }));
      out.push(act('Sample now', async () => { await api('POST', `/api/jobs/${job.id}/sample-now`); toast('the trainer samples at the end of this step'); }));
    }
    out.push(act('Clone', async () => {
      const copy = await api('POST', `/api/jobs/${job.id}/clone`, {});
      location.hash = `#/jobs/${copy.job.id}/edit`;
    }));
    if (!active && job.state !== 'queued') out.push(h('a', { class: 'button small', href: `#/jobs/${job.id}/edit` }, 'Edit'));
    if (!active) {
      out.push(act('Delete', async () => {
        if (!confirm(`Delete job ${job.name} and its output folder (checkpoints, samples)?`)) return;
        await api('DELETE', `/api/jobs/${job.id}`);
        location.hash = '#/jobs';
      }, 'danger'));
    }
  }
  return h('span', { class: 'actions' }, out);
}

async function dashboardPage() {
  const [system, jobs] = await Promise.all([api('GET', '/api/system'), api('GET', '/api/jobs')]);
  document.getElementById('version').textContent = `wanlora ${system.version}`;
  const gpus = system.gpu_error
    ? h('p', { class: 'notice' }, `No GPU information: ${system.gpu_error}.`)
    : system.gpus.length === 0
      ? h('p', { class: 'notice' }, 'NVML lists no GPU on this machine.')
      : h('div', { class: 'cards' }, system.gpus.map((g) => h('div', { class: 'card gpu' },
        h('strong', {}, `GPU ${g.index}: ${g.name}`),
        h('div', {}, h('progress', { max: g.memory_total_bytes, value: g.memory_used_bytes }),
          ` ${bytes(g.memory_used_bytes)} / ${bytes(g.memory_total_bytes)}`),
        h('div', { class: 'muted' }, [
          g.utilization_percent !== null ? `${g.utilization_percent}% busy` : null,
          g.temperature_c !== null ? `${g.temperature_c} °C` : null,
          g.power_watts !== null ? `${Math.round(g.power_watts)} W` : null,
          g.driver_version ? `driver ${g.driver_version}` : null,
        ].filter(Boolean).join(' · ')))));
  const disk = system.disk.error
    ? h('p', { class: 'notice' }, system.disk.error)
    : h('p', {}, h('progress', { max: system.disk.total_bytes, value: system.disk.total_bytes - system.disk.free_bytes }),
      ` ${system.disk.free} free of ${system.disk.total} at `, h('code', {}, system.data_dir));
  view.replaceChildren(
    h('h1', {}, 'Dashboard'),
    h('section', { class: 'panel' }, h('h3', {}, 'GPUs'), gpus),
    h('section', { class: 'panel' }, h('h3', {}, 'Disk'), disk),
    h('section', { class: 'panel' }, h('h3', {}, 'Jobs'), jobsTable(jobs.jobs)));
  const timer = setInterval(() => { if (location.hash === '' || location.hash === '#/') dashboardRefresh(); }, 5000);
  pageCleanup.push(() => clearInterval(timer));
}

async function dashboardRefresh() {
  const jobs = await api('GET', '/api/jobs').catch(() => null);
  const table = view.querySelector('table.jobs, p.muted');
  if (jobs && table) table.replaceWith(jobsTable(jobs.jobs));
}

async function jobsPage() {
  const [jobs, queue] = await Promise.all([api('GET', '/api/jobs'), api('GET', '/api/queue')]);
  const queues = Object.entries(queue.gpus);
  view.replaceChildren(
    h('h1', {}, 'Jobs & queue ', h('a', { class: 'button primary', href: '#/jobs/new' }, 'New job')),
    h('section', { class: 'panel' }, h('h3', {}, 'Queues'),
      queues.length === 0 ? h('p', { class: 'muted' }, 'Nothing queued or running.') :
        h('div', { class: 'cards' }, queues.map(([gpu, list]) => h('div', { class: 'card' },
          h('strong', {}, `GPU ${gpu}`),
          h('ol', {}, list.map((j) => h('li', {}, h('a', { href: `#/jobs/${j.id}` }, j.name), ' ', badge(j.state)))))))),
    h('section', { class: 'panel' }, h('h3', {}, 'All jobs'), jobsTable(jobs.jobs)));
  const timer = setInterval(async () => {
    const fresh = await api('GET', '/api/jobs').catch(() => null);
    const table = view.querySelector('table.jobs');
    if (fresh && table) table.replaceWith(jobsTable(fresh.jobs));
  }, 3000);
  pageCleanup.push(() => clearInterval(timer));
}

// ---- job page -------------------------------------------------------------------------------

async function jobPage(id) {
  const data = await api('GET', `/api/jobs/${id}`);
  let job = data.job;
  const fileUrl = (rel) => `/api/jobs/${id}/files/${rel}`;

  const title = h('h1', {}, job.name, ' ', badge(job.state));
  const actions = h('div', { class: 'toolbar' }, jobActions(job, false));
  const stats = h('div', { class: 'stats' });
  const message = h('pre', { class: 'message', hidden: true });
  const chartCanvas = h('canvas', { id: 'loss-chart', class: 'chart' });
  const smoothing = h('input', { type: 'range', min: 0, max: 0.99, step: 0.01, value: 0.6, id: 'smoothing' });
  const smoothingValue = h('span', {}, '0.60');
  const logScale = h('input', { type: 'checkbox', id: 'log-scale' });
  const samples = h('div', { class: 'samples', id: 'samples' });
  const checkpoints = h('div', { id: 'checkpoints' });
  const log = h('pre', { class: 'log', id: 'log' });
  const config = h('pre', { class: 'config' }, job.config_yaml);

  view.replaceChildren(
    title, actions, message,
    h('section', { class: 'panel' }, h('h3', {}, 'Progress'), stats),
    h('section', { class: 'panel' }, h('h3', {}, 'Loss'),
      h('div', { class: 'chart-controls' },
        h('label', { for: 'smoothing' }, 'Smoothing '), smoothing, smoothingValue,
        h('label', { class: 'inline' }, logScale, ' log scale')),
      chartCanvas),
    h('section', { class: 'panel' }, h('h3', {}, 'Samples'), samples),
    h('section', { class: 'panel' }, h('h3', {}, 'Checkpoints'), checkpoints),
    h('section', { class: 'panel' }, h('h3', {}, 'Log'), log),
    h('details', { class: 'panel' }, h('summary', {}, 'Config'), config));

  const chart = new LossChart(chartCanvas);
  smoothing.addEventListener('input', () => {
    chart.smoothing = Number(smoothing.value);
    smoothingValue.textContent = chart.smoothing.toFixed(2);
    chart.draw();
  });
  logScale.addEventListener('change', () => { chart.logScale = logScale.checked; chart.draw(); });

  function showJob(record, status) {
    const stateChanged = record.state !== job.state;
    job = record;
    title.replaceChildren(job.name, ' ', badge(job.state));
    if (stateChanged) actions.replaceChildren(jobActions(job, false));
    const p = progressOf(job, status);
    stats.replaceChildren(
      h('div', {}, h('progress', { max: 1, value: p.fraction, id: 'job-progress' })),
      h('dl', {},
        h('dt', {}, 'Step'), h('dd', { id: 'job-step' }, `${p.step} / ${p.total}`),
        h('dt', {}, 'Speed'), h('dd', {}, status && status.seconds_per_step ? `${status.seconds_per_step.toFixed(2)} s/step` : '–'),
        h('dt', {}, 'ETA'), h('dd', {}, duration(status && status.eta_seconds)),
        h('dt', {}, 'Expert'), h('dd', { id: 'job-expert' }, (status && status.expert) ? status.expert.replace('_', ' ') : '–'),
        h('dt', {}, 'Trainer'), h('dd', {}, status ? `${status.state}${status.message ? ' — ' + status.message : ''}` : 'not started')));
    const text = job.message || (status && status.error) || '';
    message.hidden = !text;
    message.textContent = text;
    message.className = `message ${job.state === 'failed' ? 'error' : ''}`;
  }
  showJob(job, data.status);

  function showSamples(list) {
    if (!list.length) { samples.replaceChildren(h('p', { class: 'muted' }, 'No samples yet.')); return; }
    const steps = [...new Set(list.map((s) => s.step))];
    samples.replaceChildren(...steps.map((step) => h('div', { class: 'sample-step' },
      h('h4', {}, `Step ${step}`),
      h('div', { class: 'sample-row' }, list.filter((s) => s.step === step).map((s) => {
        const media = s.video
          ? h('video', { src: fileUrl(s.video), controls: true, loop: true, muted: true, preload: 'metadata', poster: s.thumbnail ? fileUrl(s.thumbnail) : undefined })
          : s.animation ? h('img', { src: fileUrl(s.animation), alt: `sample ${s.index}` })
            : s.thumbnail ? h('img', { src: fileUrl(s.thumbnail), alt: `sample ${s.index}` }) : null;
        return h('figure', { class: 'sample', dataset: { step: s.step, index: s.index } }, media, h('figcaption', {}, `prompt ${s.index + 1}`));
      })))));
  }
  showSamples(data.samples);

  function showCheckpoints(list) {
    if (!list.length) { checkpoints.replaceChildren(h('p', { class: 'muted' }, 'No LoRA files yet.')); return; }
    checkpoints.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['File', 'Step', 'Expert', 'Size', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, list.map((c) => h('tr', {},
        h('td', {}, h('code', {}, c.file)),
        h('td', {}, c.step === null ? 'final' : String(c.step)),
        h('td', {}, (c.expert || '').replace('_', ' ') + (c.ema ? ' (EMA)' : '')),
        h('td', {}, bytes(c.bytes)),
        h('td', {}, h('a', { class: 'button small', href: fileUrl(c.file) + '?download=true', download: c.file }, 'Download')))))));
  }
  showCheckpoints(data.checkpoints);

  const source = new EventSource(`/api/jobs/${id}/events`);
  source.addEventListener('job', (e) => { const d = JSON.parse(e.data); showJob(d.job, d.status); });
  source.addEventListener('metrics', (e) => chart.add(JSON.parse(e.data)));
  source.addEventListener('log', (e) => {
    const d = JSON.parse(e.data);
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    if (d.reset) log.textContent = '';
    if (d.lines.length) log.textContent += d.lines.join('\n') + '\n';
    // Keep the view bounded: the full log is log.txt in the job folder.
    if (log.textContent.length > 200000) log.textContent = log.textContent.slice(-150000);
    if (atBottom) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener('samples', (e) => showSamples(JSON.parse(e.data)));
  source.addEventListener('checkpoints', (e) => showCheckpoints(JSON.parse(e.data)));
  pageCleanup.push(() => source.close());
}

// ---- new / edit job -------------------------------------------------------------------------

let schemaCache = null;
async function schema() {
  if (!schemaCache) {
    const data = await api('GET', '/api/schema').catch(() => ({ keys: [] }));
    schemaCache = new Map(data.keys.map((k) => [k.key, k]));
  }
  return schemaCache;
}

async function jobFormPage(editId) {
  const [presets, datasets, settings, system, keys] = await Promise.all([
    api('GET', '/api/presets'), api('GET', '/api/datasets'), api('GET', '/api/settings'),
    api('GET', '/api/system'), schema()]);
  const editing = editId ? await api('GET', `/api/jobs/${editId}`) : null;
  const gpuChoices = system.gpus.length
    ? system.gpus.map((g) => ({ value: String(g.index), label: `${g.index}: ${g.name}` }))
    : [{ value: '0', label: '0' }];
  const ctx = {
    tree: { job: 'extension', config: { name: '', process: [{ type: 'sd_trainer' }] } },
    gpu: editing ? editing.job.gpu : settings.default_gpu,
    datasets: datasets.datasets,
    gpuChoices,
    schema: keys,
    onChange: () => scheduleCheck(),
    uploadImage: async (file) => guarded(() => upload('/api/uploads', [file])),
  };
  if (!gpuChoices.some((g) => g.value === ctx.gpu)) gpuChoices.push({ value: ctx.gpu, label: ctx.gpu });

  const presetSelect = h('select', { id: 'preset' }, h('option', { value: '' }, '— start from a preset —'),
    presets.presets.map((p) => h('option', { value: p.id }, p.title)));
  const importInput = h('input', { type: 'file', id: 'import', accept: '.yaml,.yml,.json,.jsonc' });
  const yamlToggle = h('button', { type: 'button', id: 'yaml-toggle' }, 'Show YAML');
  const summary = h('div', { class: 'summary', id: 'findings-summary' });
  const formRoot = h('div', { id: 'job-form' });
  const yamlArea = h('textarea', { id: 'yaml', class: 'yaml', spellcheck: 'false', hidden: true, rows: 40 });
  const save = h('button', { type: 'button', id: 'save-job' }, editing ? 'Save' : 'Create');
  const saveStart = h('button', { type: 'button', class: 'primary', id: 'save-start' }, editing ? 'Save and start' : 'Create and start');

  view.replaceChildren(
    h('h1', {}, editing ? `Edit ${editing.job.name}` : 'New job'),
    h('div', { class: 'toolbar' }, presetSelect, h('label', { class: 'button', for: 'import' }, 'Import AI Toolkit YAML'), importInput, yamlToggle),
    summary, formRoot, yamlArea,
    h('div', { class: 'toolbar sticky' }, save, saveStart));
  importInput.hidden = true;

  let form = null;
  let yamlMode = false;

  function showFindings(findings) {
    const unplaced = form ? form.setFindings(findings) : findings;
    const errors = findings.filter((f) => f.severity === 'error').length;
    const warnings = findings.length - errors;
    summary.replaceChildren(
      h('p', { class: errors ? 'error' : 'ok' }, errors || warnings
        ? `${errors} error(s), ${warnings} warning(s)${errors ? ': fix the fields marked in red before saving.' : '.'}`
        : 'The job is valid.'),
      unplaced.length ? h('ul', {}, unplaced.map((f) => h('li', { class: `finding ${f.severity}` },
        f.path ? h('code', {}, f.path) : null, f.line ? ` (line ${f.line})` : '', ' ', f.message, f.hint ? ` — ${f.hint}` : ''))) : null);
    summary.dataset.errors = String(errors);
  }

  let checkTimer = null;
  let checkSeq = 0;
  function scheduleCheck() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, 250);
  }
  async function check() {
    const seq = ++checkSeq;
    const res = await api('POST', '/api/config/render', { tree: ctx.tree }).catch((e) => ({ findings: [{ path: '', severity: 'error', message: e.message }] }));
    if (seq !== checkSeq) return;
    if (res.yaml !== undefined && res.yaml !== null && !yamlMode) yamlArea.value = res.yaml;
    showFindings(res.findings);
  }

  function loadTree(tree) {
    ctx.tree = tree;
    form = JobForm.build(formRoot, ctx);
    check();
  }

  async function loadYaml(text) {
    const res = await api('POST', '/api/config/parse', { yaml: text });
    if (!res.tree) { showFindings(res.findings); return false; }
    loadTree(res.tree);
    return true;
  }

  presetSelect.addEventListener('change', async () => {
    const preset = presets.presets.find((p) => p.id === presetSelect.value);
    if (preset) await guarded(() => loadYaml(preset.yaml));
  });
  importInput.addEventListener('change', async () => {
    if (!importInput.files.length) return;
    const text = await importInput.files[0].text();
    if (await guarded(() => loadYaml(text))) toast(`imported ${importInput.files[0].name}`);
    importInput.value = '';
  });
  yamlToggle.addEventListener('click', async () => {
    if (!yamlMode) {
      await check();
      yamlMode = true;
      yamlArea.hidden = false;
      formRoot.hidden = true;
      yamlToggle.textContent = 'Show form';
    } else {
      // Back to the form: the YAML as edited becomes the tree (a syntax error keeps the YAML view).
      if (!(await guarded(() => loadYaml(yamlArea.value)))) return;
      yamlMode = false;
      yamlArea.hidden = true;
      formRoot.hidden = false;
      yamlToggle.textContent = 'Show YAML';
    }
  });
  yamlArea.addEventListener('input', () => {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(async () => {
      const res = await api('POST', '/api/config/parse', { yaml: yamlArea.value }).catch(() => null);
      if (res) showFindings(res.findings);
    }, 400);
  });

  async function submit(start) {
    if (yamlMode && !(await loadYaml(yamlArea.value))) return;
    const rendered = await api('POST', '/api/config/render', { tree: ctx.tree });
    const body = { yaml: rendered.yaml, gpu: ctx.gpu, start };
    try {
      const res = editing
        ? await api('PUT', `/api/jobs/${editId}`, body)
        : await api('POST', '/api/jobs', body);
      toast(start ? `${res.job.name} queued` : `${res.job.name} saved`);
      location.hash = `#/jobs/${res.job.id}`;
    } catch (e) {
      if (e.findings && e.findings.length) showFindings(e.findings);
      toast(e.message, 'error');
    }
  }
  save.addEventListener('click', () => submit(false));
  saveStart.addEventListener('click', () => submit(true));

  if (editing) await loadYaml(editing.job.config_yaml);
  else if (presets.presets.length) {
    presetSelect.value = presets.presets[0].id;
    await loadYaml(presets.presets[0].yaml);
  } else loadTree(ctx.tree);
}

// ---- datasets -------------------------------------------------------------------------------

async function datasetsPage() {
  const data = await api('GET', '/api/datasets');
  const name = h('input', { type: 'text', id: 'new-dataset', placeholder: 'dataset name', required: true });
  const create = h('form', { class: 'toolbar', onsubmit: async (e) => {
    e.preventDefault();
    const created = await guarded(() => api('POST', '/api/datasets', { name: name.value }));
    if (created) location.hash = `#/datasets/${encodeURIComponent(created.name)}`;
  } }, name, h('button', { type: 'submit', class: 'primary' }, 'Create dataset'));
  view.replaceChildren(
    h('h1', {}, 'Datasets'), create,
    data.datasets.length === 0 ? h('p', { class: 'muted' }, 'No datasets yet.') :
      h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Videos', 'Images', 'Captions', 'Size', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.datasets.map((d) => h('tr', {},
          h('td', {}, h('a', { href: `#/datasets/${encodeURIComponent(d.name)}` }, d.name)),
          h('td', {}, d.videos), h('td', {}, d.images), h('td', {}, d.captions), h('td', {}, bytes(d.bytes)),
          h('td', {}, h('button', { type: 'button', class: 'small danger', onclick: () => guarded(async () => {
            if (!confirm(`Delete dataset ${d.name} and all its files?`)) return;
            await api('DELETE', `/api/datasets/${encodeURIComponent(d.name)}`);
            route();
          }) }, 'Delete')))))));
}

async function datasetPage(name) {
  const enc = encodeURIComponent(name);
  const [data, system] = await Promise.all([api('GET', `/api/datasets/${enc}`), api('GET', '/api/system')]);
  const progress = h('progress', { max: 1, value: 0, hidden: true, id: 'upload-progress' });
  const picker = h('input', { type: 'file', multiple: true, id: 'upload-input', accept: 'video/*,image/*,.txt,.zip' });
  const drop = h('div', { class: 'dropzone', id: 'dropzone' },
    h('p', {}, 'Drop videos, images, .txt captions or a .zip here, or '), h('label', { class: 'button', for: 'upload-input' }, 'choose files'),
    h('p', { class: 'muted' }, `Up to ${bytes(system.max_upload_bytes)} per file. A caption belongs to the clip with the same name (clip.mp4 + clip.txt).`),
    picker, progress);
  picker.hidden = true;
  const grid = h('div', { class: 'media-grid', id: 'media-grid' });
  const report = h('div', { id: 'inspect' });

  // One request per file: the size limit is per file, and one bad file does not stop the rest.
  async function send(files) {
    if (!files.length) return;
    progress.hidden = false;
    let saved = 0;
    const errors = [];
    for (const [i, file] of files.entries()) {
      try {
        const res = await upload(`/api/datasets/${enc}/upload`, [file], (f) => (progress.value = (i + f) / files.length));
        saved += res.saved.length;
      } catch (e) {
        errors.push(e.message);
      }
    }
    progress.hidden = true;
    if (errors.length) toast(`uploaded ${saved} file(s); refused:\n${errors.join('\n')}`, 'error');
    else toast(`uploaded ${saved} file(s)`);
    await refresh();
  }
  picker.addEventListener('change', () => send([...picker.files]));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); send([...e.dataTransfer.files]); });

  function card(item) {
    const url = `/api/datasets/${enc}/files/${encodeURIComponent(item.file)}`;
    const thumb = `/api/datasets/${enc}/thumbnails/${encodeURIComponent(item.file)}`;
    const media = h('img', { src: thumb, alt: item.file, loading: 'lazy' });
    if (item.kind === 'video') {
      media.title = 'click to play';
      media.addEventListener('click', () => media.replaceWith(h('video', { src: url, controls: true, autoplay: true, loop: true, muted: true })));
    }
    const caption = h('textarea', { rows: 3, placeholder: 'no caption', class: 'caption' }, item.caption || '');
    const state = h('small', { class: 'muted' });
    caption.addEventListener('change', async () => {
      const ok = await guarded(() => api('PUT', `/api/datasets/${enc}/captions/${encodeURIComponent(item.file)}`, { caption: caption.value }));
      if (ok) { state.textContent = 'saved'; setTimeout(() => (state.textContent = ''), 2000); }
    });
    return h('div', { class: 'media-card', dataset: { file: item.file } },
      h('div', { class: 'media' }, media, item.kind === 'video' ? h('span', { class: 'tag' }, 'video') : null),
      h('div', { class: 'media-name' }, h('code', {}, item.file), ' ', h('small', { class: 'muted' }, bytes(item.bytes))),
      caption, state,
      h('button', { type: 'button', class: 'small danger', onclick: () => guarded(async () => {
        if (!confirm(`Delete ${item.file} and its caption?`)) return;
        await api('DELETE', `/api/datasets/${enc}/files/${encodeURIComponent(item.file)}`);
        await refresh();
      }) }, 'Delete'));
  }

  async function refresh() {
    const fresh = await api('GET', `/api/datasets/${enc}`);
    grid.replaceChildren(...(fresh.items.length ? fresh.items.map(card) : [h('p', { class: 'muted' }, 'Empty: upload clips and captions above.')]));
  }

  async function inspect() {
    report.replaceChildren(h('p', { class: 'muted' }, 'Inspecting…'));
    const res = await api('GET', `/api/datasets/${enc}/inspect`).catch((e) => ({ error: e.message }));
    if (res.error) { report.replaceChildren(h('p', { class: 'error' }, res.error)); return; }
    report.replaceChildren(h('pre', { class: 'report' }, res.text));
  }

  view.replaceChildren(
    h('h1', {}, `Dataset ${name}`),
    h('p', { class: 'muted' }, 'Folder: ', h('code', {}, data.folder)),
    drop, grid,
    h('section', { class: 'panel' }, h('h3', {}, 'Inspect ', h('button', { type: 'button', class: 'small', id: 'inspect-run', onclick: inspect }, 'Run')), report));
  grid.replaceChildren(...(data.items.length ? data.items.map(card) : [h('p', { class: 'muted' }, 'Empty: upload clips and captions above.')]));
}

// ---- settings -------------------------------------------------------------------------------

async function settingsPage() {
  const [settings, system] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/system')]);
  const token = h('input', { type: 'password', id: 'hf-token', placeholder: settings.hf_token_set ? 'set (type to replace, clear with a space)' : 'not set' });
  const gpu = h('input', { type: 'text', id: 'default-gpu', value: settings.default_gpu });
  const form = h('form', { class: 'panel', onsubmit: async (e) => {
    e.preventDefault();
    const update = { default_gpu: gpu.value };
    if (token.value !== '') update.hf_token = token.value;
    if (await guarded(() => api('PUT', '/api/settings', update))) { toast('settings saved'); route(); }
  } },
  h('div', { class: 'field' }, h('label', { for: 'hf-token' }, 'Hugging Face token'), token,
    h('small', { class: 'help' }, 'Passed to the trainer as HF_TOKEN so it can download gated or private models.')),
  h('div', { class: 'field' }, h('label', { for: 'default-gpu' }, 'Default GPU'), gpu,
    h('small', { class: 'help' }, 'The GPU a new job starts with (CUDA index, or a list such as 0,1).')),
  h('button', { type: 'submit', class: 'primary' }, 'Save'));
  view.replaceChildren(h('h1', {}, 'Settings'), form,
    h('section', { class: 'panel' }, h('h3', {}, 'Folders'),
      h('dl', {}, h('dt', {}, 'Data'), h('dd', {}, h('code', {}, system.data_dir)),
        h('dt', {}, 'Datasets'), h('dd', {}, h('code', {}, system.datasets_dir)),
        h('dt', {}, 'Job output'), h('dd', {}, h('code', {}, system.output_dir))),
      h('p', { class: 'muted' }, 'Folders are chosen when the UI starts (wanlora ui --data DIR).')),
    h('section', { class: 'panel' }, h('form', { onsubmit: async (e) => { e.preventDefault(); await fetch('/api/logout', { method: 'POST' }); location.reload(); } },
      h('button', { type: 'submit' }, 'Log out'))));
}

// ---- routing --------------------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/, 'dashboard', () => dashboardPage()],
  [/^#\/jobs\/new$/, 'new', () => jobFormPage(null)],
  [/^#\/jobs\/(\d+)\/edit$/, 'jobs', (m) => jobFormPage(m[1])],
  [/^#\/jobs\/(\d+)$/, 'jobs', (m) => jobPage(m[1])],
  [/^#\/jobs$/, 'jobs', () => jobsPage()],
  [/^#\/datasets$/, 'datasets', () => datasetsPage()],
  [/^#\/datasets\/(.+)$/, 'datasets', (m) => datasetPage(decodeURIComponent(m[1]))],
  [/^#\/settings$/, 'settings', () => settingsPage()],
];

async function route() {
  for (const cleanup of pageCleanup) cleanup();
  pageCleanup = [];
  const hash = location.hash || '#/';
  for (const [pattern, nav, page] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll('#sidebar a')) a.classList.toggle('active', a.dataset.nav === nav);
    try {
      await page(m);
    } catch (e) {
      view.replaceChildren(h('h1', {}, 'Something went wrong'), h('p', { class: 'error' }, e.message));
    }
    return;
  }
  view.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the dashboard')));
}

window.addEventListener('hashchange', route);
(async () => {
  const auth = await fetch('/api/auth').then((r) => r.json());
  if (auth.required && !auth.authorized) await login();
  route();
})();
