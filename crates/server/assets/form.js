// The new-job form: the guide's panels in its order, each field bound to a dotted path in the job
// tree (the AI Toolkit YAML as JSON), so the form and the YAML view edit the same document and keys
// the form does not show survive the round trip.
'use strict';

// ---- DOM and tree helpers (also used by app.js) ---------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function splitPath(path) {
  return path.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function getPath(tree, path) {
  let node = tree;
  for (const part of splitPath(path)) {
    if (node === null || typeof node !== 'object') return undefined;
    node = node[part];
  }
  return node;
}

// Sets a value, creating the objects and lists on the way; `undefined` removes the key.
function setPath(tree, path, value) {
  const parts = splitPath(path);
  let node = tree;
  for (let i = 0; i < parts.length - 1; i++) {
    const part = parts[i];
    if (node[part] === null || typeof node[part] !== 'object') {
      if (value === undefined) return;
      node[part] = typeof parts[i + 1] === 'number' ? [] : {};
    }
    node = node[part];
  }
  const last = parts[parts.length - 1];
  if (value === undefined) {
    if (Array.isArray(node)) node.splice(last, 1);
    else delete node[last];
  } else {
    node[last] = value;
  }
}

// `config.process.0.datasets.1.num_frames` -> `config.process[0].datasets[].num_frames`
// (how the config crate's schema names keys).
function schemaKey(path) {
  return path
    .replace(/^config\.process\.(\d+)/, 'config.process[$1]')
    .replace(/\.(datasets|samples|validation_items)\.\d+/g, '.$1[]');
}

// ---- the fields --------------------------------------------------------------------------------

const P = 'config.process.0';

const JOB_PANELS = [
  {
    title: 'Job',
    fields: [
      { path: 'config.name', label: 'Name', type: 'text', required: true,
        help: 'Names the output folder and the LoRA files. Letters, digits, dots, dashes and underscores.' },
      { path: '@gpu', label: 'GPU', type: 'gpu',
        help: 'Which card runs this job. Jobs on the same GPU wait in one queue and run one after another.' },
      { path: `${P}.trigger_word`, label: 'Trigger word', type: 'text',
        help: 'A rare word that calls up what the LoRA learned. Added to captions that lack it; [trigger] in prompts becomes this word.' },
    ],
  },
  {
    title: 'Model',
    fields: [
      { path: `${P}.model.arch`, label: 'Architecture', type: 'select', options: ['wan22_14b_i2v', 'wan22_14b', 'wan22_5b'],
        labels: { wan22_5b: 'wan22_5b (TI2V-5B)' },
        help: 'The base model: wan22_14b_i2v is Wan 2.2 image-to-video A14B (samples start from a start frame), wan22_14b is text-to-video A14B (samples from the prompt alone); both have two 14B experts. wan22_5b is TI2V-5B: one 5B transformer and the Wan 2.2 VAE, clips train image-to-video from their first frame, samples with or without a start frame, 24 fps. Pick the name or path of the same variant.' },
      { path: `${P}.model.name_or_path`, label: 'Name or path', type: 'text', wide: true,
        help: 'A Hugging Face repository id, or a folder on this machine holding the model in diffusers layout.' },
      { path: `${P}.model.low_vram`, label: 'Low VRAM', type: 'bool',
        help: 'Keep the expert that is not training in host memory instead of on the card. Needed on 24 GB cards.' },
      { path: `${P}.model.layer_offloading`, label: 'Layer offloading', type: 'bool',
        help: 'AI Toolkit streams transformer layers from host memory during each step to fit smaller cards.' },
    ],
  },
  {
    title: 'Quantization',
    fields: [
      { path: `${P}.model.quantize`, label: 'Quantize transformer', type: 'bool',
        help: 'Store the frozen transformer weights in fewer bits to save memory. The LoRA itself trains in full precision.' },
      { path: `${P}.model.qtype`, label: 'Transformer type', type: 'select',
        options: ['float8', 'qfloat8', 'uint4|ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors'],
        labels: { 'uint4|ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors': '4 bit with ARA' },
        help: 'Number format for the frozen transformer weights. "4 bit with ARA" halves fp8\'s weight memory and adds ostris\' accuracy recovery adapter (downloaded once).' },
      { path: `${P}.model.quantize_te`, label: 'Quantize text encoder', type: 'bool',
        help: 'Store the UMT5 text encoder in fewer bits. It only encodes captions, so quality barely changes.' },
      { path: `${P}.model.qtype_te`, label: 'Text encoder type', type: 'select', options: ['float8', 'qfloat8'],
        help: 'Number format for the text encoder weights.' },
    ],
  },
  {
    title: 'Multistage',
    fields: [
      { path: `${P}.model.model_kwargs.train_high_noise`, label: 'High noise', type: 'bool',
        help: 'Train a LoRA for the expert that handles the noisy early steps: layout and motion.' },
      { path: `${P}.model.model_kwargs.train_low_noise`, label: 'Low noise', type: 'bool',
        help: 'Train a LoRA for the expert that handles the late steps: detail, texture and identity.' },
      { path: `${P}.train.switch_boundary_every`, label: 'Switch every', type: 'int', min: 1,
        help: 'Steps spent on one expert before switching to the other. Larger values move weights less often (good with Low VRAM).' },
    ],
  },
  {
    title: 'Target',
    fields: [
      { path: `${P}.network.type`, label: 'Target type', type: 'select', options: ['lora'],
        help: 'The kind of adapter that is trained.' },
      { path: `${P}.network.linear`, label: 'Linear rank', type: 'int', min: 1,
        help: 'Size of the adapter. Higher ranks learn more detail and make bigger files; 16 to 32 suits most video LoRAs.' },
      { path: `${P}.network.linear_alpha`, label: 'Linear alpha', type: 'int', min: 1,
        help: 'Scales the adapter output by alpha/rank. Wan LoRAs load in ComfyUI with alpha equal to rank, so keep them equal.' },
    ],
  },
  {
    title: 'Save',
    fields: [
      { path: `${P}.save.dtype`, label: 'Data type', type: 'select', options: ['bf16', 'float16', 'float32'],
        help: 'Number format of the saved LoRA files.' },
      { path: `${P}.save.save_every`, label: 'Save every', type: 'int', min: 1,
        help: 'Write a checkpoint every this many steps (resume starts from the newest one).' },
      { path: `${P}.save.max_step_saves_to_keep`, label: 'Max step saves to keep', type: 'int', min: 1,
        help: 'Older step checkpoints beyond this count are deleted. The final files are always kept.' },
    ],
  },
  {
    title: 'Training',
    fields: [
      { path: `${P}.train.batch_size`, label: 'Batch size', type: 'int', min: 1,
        help: 'Clips per step. Video clips are large; 1 is usual.' },
      { path: `${P}.train.gradient_accumulation`, label: 'Gradient accumulation', type: 'int', min: 1,
        help: 'Add up gradients over this many batches before each update: a larger effective batch at no memory cost.' },
      { path: `${P}.train.steps`, label: 'Steps', type: 'int', min: 1, required: true,
        help: 'Total optimizer updates, over both experts together.' },
      { path: `${P}.train.lr`, label: 'Learning rate', type: 'float',
        help: 'How far each update moves the adapter. 1e-4 is a safe start for rank 16 to 32.' },
      { path: `${P}.train.optimizer_params.weight_decay`, label: 'Weight decay', type: 'float',
        help: 'Pulls adapter weights slightly towards zero each step, which keeps them from growing without need.' },
      { path: `${P}.train.optimizer`, label: 'Optimizer', type: 'select', options: ['adamw8bit', 'adamw', 'adafactor', 'prodigy'],
        labels: { adamw8bit: 'AdamW 8-bit', adamw: 'AdamW (full precision)', adafactor: 'Adafactor (memory efficient)', prodigy: 'Prodigy (finds its own step size)' },
        help: 'The update rule. 8-bit AdamW keeps its state in less memory with the same results in practice. Adafactor keeps even less state. Prodigy estimates the step size itself: set the learning rate to 1.' },
      { path: `${P}.train.timestep_type`, label: 'Timestep type', type: 'select', options: ['linear', 'sigmoid', 'shift', 'weighted'],
        help: 'How noise levels are drawn inside each expert\'s range during training.' },
      { path: `${P}.train.content_or_style`, label: 'Timestep bias', type: 'select', options: ['balanced', 'content', 'style'],
        labels: { balanced: 'balanced', content: 'high noise (content, motion)', style: 'low noise (style, detail)' },
        help: 'Lean the drawn noise levels towards the noisy end (motion, composition) or the clean end (style, detail).' },
      { path: `${P}.train.loss_type`, label: 'Loss type', type: 'select', options: ['mse', 'mae'],
        help: 'How the prediction error is measured. Mean squared error is the standard choice.' },
      { path: `${P}.train.ema_config.use_ema`, label: 'EMA', type: 'bool',
        help: 'Also keep a slowly moving average of the adapter weights, saved as *_ema files; often smoother results.' },
      { path: `${P}.train.ema_config.ema_decay`, label: 'EMA decay', type: 'float',
        help: 'How slowly the average follows the weights; 0.99 to 0.999.' },
      { path: `${P}.train.unload_text_encoder`, label: 'Unload text encoder', type: 'bool',
        help: 'Encode only the trigger word once and free the text encoder. Captions are then ignored.' },
      { path: `${P}.train.cache_text_embeddings`, label: 'Cache text embeddings', type: 'bool',
        help: 'Encode every caption once before training and free the text encoder: saves memory and time.' },
      { path: `${P}.train.diff_output_preservation`, label: 'Differential output preservation', type: 'bool',
        help: 'Keeps the class word (e.g. "person") producing what the base model made, so the LoRA only changes its trigger.' },
      { path: `${P}.train.diff_output_preservation_multiplier`, label: 'DOP multiplier', type: 'float',
        help: 'Weight of the preservation loss against the training loss.' },
      { path: `${P}.train.diff_output_preservation_class`, label: 'DOP class', type: 'text',
        help: 'The general word the trigger replaces in captions, such as person, woman, dog or car.' },
    ],
  },
  {
    title: 'Advanced',
    fields: [
      { path: `${P}.train.do_differential_guidance`, label: 'Differential guidance', type: 'bool',
        help: 'Push the target past the data, away from what the model predicts now, to learn faster.' },
      { path: `${P}.train.differential_guidance_scale`, label: 'Differential guidance scale', type: 'float',
        help: 'How far past the data the target is pushed.' },
      { path: `${P}.train.keep_blocks`, label: 'Keep blocks', type: 'int', min: 0, placeholder: 'auto',
        help: 'Blocks (of 40) that keep their activations instead of recomputing them: faster, more memory. auto (empty) chooses per bucket from the free GPU memory.' },
      { path: `${P}.train.keep_attention`, label: 'Keep attention', type: 'int', min: 0, placeholder: 'auto',
        help: 'Recomputed blocks that keep their self-attention output: faster at little memory. auto (empty) chooses per bucket.' },
    ],
  },
  {
    title: 'Datasets',
    list: `${P}.datasets`,
    item: 'Dataset',
    newItem: () => ({ folder_path: '', caption_ext: 'txt', caption_dropout_rate: 0.05, num_frames: 41, fps: 16, resolution: [512], cache_latents_to_disk: true }),
    fields: [
      { path: 'folder_path', label: 'Dataset', type: 'dataset', required: true,
        help: 'A dataset from the Datasets page: clips (or images) with a .txt caption of the same name.' },
      { path: 'default_caption', label: 'Default caption', type: 'text', wide: true,
        help: 'Used for clips that have no caption file.' },
      { path: 'caption_dropout_rate', label: 'Caption dropout', type: 'float',
        help: 'Share of steps that train with an empty caption, so the LoRA also works without its prompt.' },
      { path: 'network_weight', label: 'LoRA weight', type: 'float',
        help: 'Strength of the LoRA while training on this dataset.' },
      { path: 'is_reg', label: 'Is regularization', type: 'bool',
        help: 'Clips of the general class that keep the model from forgetting it; mixed in with the main dataset.' },
      { path: 'cache_latents_to_disk', label: 'Cache latents', type: 'bool',
        help: 'Encode every clip with the VAE once and keep the result on disk: much faster steps.' },
      { path: 'flip_x', label: 'Flip X', type: 'bool',
        help: 'Also train on left-right mirrored copies. Avoid for text, logos or asymmetric subjects.' },
      { path: 'flip_y', label: 'Flip Y', type: 'bool',
        help: 'Also train on upside-down copies. Rarely wanted for video.' },
      { path: 'resolution', label: 'Resolutions', type: 'resolutions', options: [256, 512, 768, 1024],
        help: 'Clips are scaled so their smaller side is near each chosen size; several sizes train one dataset at each.' },
      { path: 'num_frames', label: 'Num frames', type: 'int', min: 1,
        help: 'Frames taken from each clip, spread over its length. Wan uses 4k+1 frames: 33, 41, 49, 81.' },
    ],
  },
  {
    title: 'Sample',
    fields: [
      { path: `${P}.sample.sample_every`, label: 'Sample every', type: 'int', min: 1,
        help: 'Make sample videos every this many steps to watch the LoRA learn.' },
      { path: `${P}.sample.sampler`, label: 'Sampler', type: 'select', options: ['flowmatch'],
        help: 'The denoising method for samples.' },
      { path: `${P}.sample.width`, label: 'Width', type: 'int', min: 16,
        help: 'Sample width in pixels (a multiple of 16).' },
      { path: `${P}.sample.height`, label: 'Height', type: 'int', min: 16,
        help: 'Sample height in pixels (a multiple of 16).' },
      { path: `${P}.sample.guidance_scale`, label: 'Guidance scale', type: 'float',
        help: 'How strongly samples follow the prompt. 3 to 5 suits Wan.' },
      { path: `${P}.sample.sample_steps`, label: 'Sample steps', type: 'int', min: 1,
        help: 'Denoising steps per sample: more is slower and cleaner.' },
      { path: `${P}.sample.seed`, label: 'Seed', type: 'int',
        help: 'Fixed noise for samples, so samples at different steps are comparable.' },
      { path: `${P}.sample.walk_seed`, label: 'Walk seed', type: 'bool',
        help: 'Give each prompt its own seed (seed + prompt number).' },
      { path: `${P}.sample.num_frames`, label: 'Num frames', type: 'int', min: 1,
        help: 'Length of sample videos in frames (4k+1).' },
      { path: `${P}.sample.fps`, label: 'FPS', type: 'int', min: 1,
        help: 'Frame rate of the written sample videos.' },
    ],
    sublist: {
      list: `${P}.sample.samples`,
      item: 'Prompt',
      newItem: () => ({ prompt: '' }),
      fields: [
        { path: 'prompt', label: 'Prompt', type: 'textarea', wide: true,
          help: 'What the sample should show. [trigger] is replaced by the trigger word.' },
        { path: 'ctrl_img', label: 'Start frame', type: 'image',
          help: 'The image the video starts from (image-to-video needs one per prompt; text-to-video, wan22_14b, takes none; wan22_5b takes one or none).' },
      ],
    },
  },
  {
    title: 'Validation',
    fields: [
      { path: `${P}.train.validation_config.validate_every_n_steps`, label: 'Validate every', type: 'int', min: 1,
        help: 'Evaluate the held-out loss every this many steps (default 10). The chart draws it dashed as "<expert> validation".' },
      { path: `${P}.train.validation_config.resolution`, label: 'Resolution', type: 'int', min: 16,
        help: 'Size the held-out clips are bucketed to (default 512).' },
      { path: `${P}.train.validation_config.validation_sigmas`, label: 'Validation sigmas', type: 'floats',
        help: 'Noise levels in [0, 1], comma separated, mapped into each expert\'s timestep window (default 1, 0.75, 0.5, 0.25). Fixed noise, so the curve is comparable across steps and runs.' },
    ],
    sublist: {
      list: `${P}.train.validation_config.validation_items`,
      item: 'Validation item',
      newItem: () => ({ image_path: '', prompt: '' }),
      fields: [
        { path: 'image_path', label: 'Image, clip or folder', type: 'text', wide: true,
          help: 'A held-out image, video clip, or folder of clips with .txt captions (not in the training data). Items without a path are skipped; no items, no validation.' },
        { path: 'prompt', label: 'Prompt', type: 'textarea', wide: true,
          help: 'Caption of a single image or clip, and of a folder\'s clips that have no caption file.' },
      ],
    },
  },
];

// ---- rendering ------------------------------------------------------------------------------

// Builds the form in `root`. `ctx` = { tree, gpu, datasets, schema, onChange, uploadImage }.
// Returns { setFindings(findings), refresh() }.
function buildJobForm(root, ctx) {
  const fieldEls = new Map(); // full path -> wrapper element

  function choicesFor(field, fullPath) {
    const info = ctx.schema && ctx.schema.get(schemaKey(fullPath));
    const fromSchema = info && info.choices && info.choices.length ? info.choices : null;
    // The form's own options come on top of the schema's (e.g. qtype's "uint4|<adapter>" preset).
    return [...new Set([...(fromSchema || []), ...(field.options || [])])];
  }

  function changed() {
    ctx.onChange();
  }

  function input(field, fullPath) {
    const id = 'f-' + fullPath.replace(/[^a-zA-Z0-9]/g, '-');
    const value = field.type === 'gpu' ? ctx.gpu : getPath(ctx.tree, fullPath);
    const set = (v) => {
      if (field.type === 'gpu') ctx.gpu = v;
      else setPath(ctx.tree, fullPath, v);
      changed();
    };
    switch (field.type) {
      case 'bool': {
        const el = h('input', { type: 'checkbox', id, checked: value === true });
        el.addEventListener('change', () => set(el.checked));
        return el;
      }
      case 'int':
      case 'float': {
        const el = h('input', { type: 'text', inputmode: 'decimal', id, placeholder: field.placeholder, value: value === undefined ? '' : String(value) });
        el.addEventListener('change', () => {
          const text = el.value.trim();
          if (text === '') return set(undefined);
          const n = Number(text);
          set(Number.isFinite(n) ? n : text); // a non-number stays as typed: the validator names it
        });
        return el;
      }
      case 'floats': {
        const shown = Array.isArray(value) ? value.join(', ') : value === undefined ? '' : String(value);
        const el = h('input', { type: 'text', inputmode: 'decimal', id, value: shown });
        el.addEventListener('change', () => {
          const parts = el.value.split(',').map((t) => t.trim()).filter((t) => t !== '');
          if (parts.length === 0) return set(undefined);
          // A non-number stays as typed: the validator names it.
          set(parts.map((t) => (Number.isFinite(Number(t)) ? Number(t) : t)));
        });
        return el;
      }
      case 'textarea': {
        const el = h('textarea', { id, rows: 2 }, value === undefined ? '' : String(value));
        el.addEventListener('change', () => set(el.value === '' ? undefined : el.value));
        return el;
      }
      case 'select':
      case 'gpu':
      case 'dataset': {
        let options;
        if (field.type === 'gpu') options = ctx.gpuChoices.map((g) => [g.value, g.label]);
        else if (field.type === 'dataset') options = [['', '— pick a dataset —'], ...ctx.datasets.map((d) => [d.folder, d.name])];
        else options = choicesFor(field, fullPath).map((c) => [c, (field.labels && field.labels[c]) || c]);
        const current = value === undefined ? '' : String(value);
        if (current !== '' && !options.some(([v]) => v === current)) options.push([current, `${current} (as written)`]);
        if (field.type === 'select' && current === '') options.unshift(['', '(default)']);
        const el = h('select', { id }, options.map(([v, label]) => h('option', { value: v, selected: v === current }, label)));
        el.addEventListener('change', () => set(el.value === '' ? undefined : el.value));
        return el;
      }
      case 'resolutions': {
        const chosen = Array.isArray(value) ? value.map(Number) : value === undefined ? [] : [Number(value)];
        const options = [...new Set([...field.options, ...chosen])].sort((a, b) => a - b);
        const boxes = options.map((r) => {
          const box = h('input', { type: 'checkbox', value: r, checked: chosen.includes(r), id: `${id}-${r}` });
          box.addEventListener('change', () => {
            const picked = boxes.filter((b) => b.checked).map((b) => Number(b.value));
            set(picked.length ? picked : undefined);
          });
          return box;
        });
        return h('span', { class: 'checks', id }, boxes.map((b) => h('label', { class: 'inline' }, b, ' ', b.value)));
      }
      case 'image': {
        const preview = h('span', { class: 'ctrl-preview' }, value ? value.split('/').pop() : 'no image');
        const file = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', id });
        file.addEventListener('change', async () => {
          if (!file.files.length) return;
          const stored = await ctx.uploadImage(file.files[0]);
          if (stored) {
            preview.textContent = stored.name;
            set(stored.path);
          }
        });
        return h('span', { class: 'image-field' }, file, preview);
      }
      default: {
        const el = h('input', { type: 'text', id, value: value === undefined ? '' : String(value) });
        el.addEventListener('change', () => set(el.value === '' ? undefined : el.value));
        return el;
      }
    }
  }

  function fieldRow(field, fullPath) {
    const control = input(field, fullPath);
    // What wanlora does with the key (from the config crate's schema): a refused key can only keep
    // its neutral value, a no-effect key is accepted for AI Toolkit files but changes nothing.
    const info = ctx.schema && ctx.schema.get(schemaKey(fullPath));
    let note = null;
    if (info && info.support === 'refused') {
      for (const el of [control, ...control.querySelectorAll('input, select, textarea')]) el.disabled = true;
      note = h('small', { class: 'note' }, `Not available in wanlora: ${info.doc}`);
    } else if (info && info.support === 'no_effect') {
      note = h('small', { class: 'note' }, `No effect in wanlora: ${info.doc}`);
    }
    const row = h('div', { class: 'field' + (field.wide ? ' wide' : ''), dataset: { path: fullPath } },
      h('label', { for: control.id }, field.label, field.required ? h('span', { class: 'req' }, ' *') : null),
      control,
      h('small', { class: 'help' }, field.help),
      note,
      h('div', { class: 'findings' }));
    fieldEls.set(fullPath, row);
    return row;
  }

  function listSection(spec) {
    const wrap = h('div', { class: 'list', dataset: { path: spec.list } });
    const items = getPath(ctx.tree, spec.list) || [];
    items.forEach((_, i) => {
      const base = `${spec.list}.${i}`;
      const remove = h('button', { type: 'button', class: 'small danger', onclick: () => {
        getPath(ctx.tree, spec.list).splice(i, 1);
        changed();
        render();
      } }, 'Remove');
      wrap.append(h('fieldset', { class: 'item' },
        h('legend', {}, `${spec.item} ${i + 1} `, remove),
        h('div', { class: 'grid' }, spec.fields.map((f) => fieldRow(f, `${base}.${f.path}`)))));
    });
    wrap.append(h('button', { type: 'button', class: 'small', onclick: () => {
      if (!Array.isArray(getPath(ctx.tree, spec.list))) setPath(ctx.tree, spec.list, []);
      getPath(ctx.tree, spec.list).push(spec.newItem());
      changed();
      render();
    } }, `Add ${spec.item.toLowerCase()}`));
    fieldEls.set(spec.list, wrap);
    return wrap;
  }

  function render() {
    fieldEls.clear();
    root.replaceChildren(...JOB_PANELS.map((panel) => {
      const body = panel.list
        ? listSection(panel)
        : h('div', { class: 'grid' }, panel.fields.map((f) => fieldRow(f, f.path)));
      return h('section', { class: 'panel', dataset: { panel: panel.title.toLowerCase() } },
        h('h3', {}, panel.title), body, panel.sublist ? listSection(panel.sublist) : null);
    }));
  }

  // Shows each finding at its field; the rest are returned for the summary.
  function setFindings(findings) {
    for (const el of fieldEls.values()) {
      const box = el.querySelector(':scope > .findings');
      if (box) box.replaceChildren();
      el.classList.remove('has-error', 'has-warning', 'has-note');
    }
    const unplaced = [];
    for (const f of findings) {
      let path = f.path;
      let el = fieldEls.get(path);
      // A finding inside a list item without its own field lands on the nearest field above it.
      while (!el && path.includes('.')) {
        path = path.slice(0, path.lastIndexOf('.'));
        el = fieldEls.get(path);
      }
      if (!el) { unplaced.push(f); continue; }
      el.classList.add(`has-${f.severity}`);
      let box = el.querySelector(':scope > .findings');
      if (!box) { box = h('div', { class: 'findings' }); el.prepend(box); }
      box.append(h('div', { class: `finding ${f.severity}` }, f.message + (f.hint ? ` — ${f.hint}` : '')));
      if (path !== f.path) box.lastChild.prepend(h('code', {}, f.path.slice(path.length + 1) + ': '));
    }
    return unplaced;
  }

  render();
  return { setFindings, refresh: render };
}

window.JobForm = { build: buildJobForm, panels: JOB_PANELS, getPath, setPath, schemaKey };
window.h = h;
