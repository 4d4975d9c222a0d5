// A small canvas line chart for training loss: one series per expert, exponential smoothing
// (debiased, so the first points are not pulled towards zero) and an optional log scale.
'use strict';

const SERIES_COLOURS = { high_noise: '#e8743b', low_noise: '#3b8de8' };
const SPARE_COLOURS = ['#2ca58d', '#9b59b6', '#c0392b', '#7f8c8d'];
const VALIDATION_SUFFIX = ' validation';

class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.series = new Map(); // name -> Map(step -> loss)
    this.smoothing = 0.6;
    this.logScale = false;
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(canvas);
  }

  // Adds metric lines ({step, expert, loss}, or {step, expert, validation_loss}: the held-out loss,
  // drawn dashed and unsmoothed as "<expert> validation"); a repeated step replaces the earlier value
  // (a resumed run appends lines for steps it redoes).
  add(metrics) {
    for (const m of metrics) {
      const validation = typeof m.validation_loss === 'number';
      const value = validation ? m.validation_loss : m.loss;
      if (typeof m.step !== 'number' || typeof value !== 'number' || !isFinite(value)) continue;
      const name = (m.expert || 'loss') + (validation ? VALIDATION_SUFFIX : '');
      if (!this.series.has(name)) this.series.set(name, new Map());
      if (!validation) {
        for (const [other, points] of this.series) {
          if (other !== name && !other.endsWith(VALIDATION_SUFFIX)) points.delete(m.step);
        }
      }
      this.series.get(name).set(m.step, value);
    }
    this.draw();
  }

  pointCount() {
    let n = 0;
    for (const points of this.series.values()) n += points.size;
    return n;
  }

  colour(name, index) {
    const expert = name.endsWith(VALIDATION_SUFFIX) ? name.slice(0, -VALIDATION_SUFFIX.length) : name;
    return SERIES_COLOURS[expert] || SPARE_COLOURS[index % SPARE_COLOURS.length];
  }

  // Exponential moving average, divided by (1 - w^n) so that early points are unbiased.
  static smooth(values, weight) {
    const out = [];
    let avg = 0;
    let n = 0;
    for (const v of values) {
      n += 1;
      avg = weight * avg + (1 - weight) * v;
      out.push(weight > 0 ? avg / (1 - Math.pow(weight, n)) : v);
    }
    return out;
  }

  // Up to `count` round tick values covering [lo, hi].
  static ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
    return out;
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.getPropertyValue('--chart-ink').trim() || '#888';
    const grid = style.getPropertyValue('--chart-grid').trim() || 'rgba(128,128,128,0.2)';
    ctx.font = '11px system-ui, sans-serif';
    canvas.dataset.points = String(this.pointCount());

    const transform = (v) => (this.logScale ? Math.log10(v) : v);
    const lines = [];
    let minStep = Infinity, maxStep = -Infinity, minY = Infinity, maxY = -Infinity;
    [...this.series.keys()].sort().forEach((name, index) => {
      const points = [...this.series.get(name).entries()]
        .filter(([, v]) => !this.logScale || v > 0)
        .sort((a, b) => a[0] - b[0]);
      if (points.length === 0) return;
      const steps = points.map((p) => p[0]);
      const raw = points.map((p) => transform(p[1]));
      // Validation values are already comparable (fixed data, timesteps and noise): not smoothed.
      const validation = name.endsWith(VALIDATION_SUFFIX);
      const smooth = validation ? raw : LossChart.smooth(raw, this.smoothing);
      for (const s of steps) { minStep = Math.min(minStep, s); maxStep = Math.max(maxStep, s); }
      for (const v of raw) { minY = Math.min(minY, v); maxY = Math.max(maxY, v); }
      lines.push({ name, colour: this.colour(name, index), steps, raw, smooth, validation });
    });
    // The legend, readable outside the canvas (tests, assistive tools): "name" or "name (dashed)".
    canvas.dataset.legend = lines.map((l) => l.name + (l.validation ? ' (dashed)' : '')).join('|');
    if (lines.length === 0) {
      ctx.fillStyle = ink;
      ctx.fillText('No loss values yet: they appear after the first training step.', 12, height / 2);
      return;
    }
    if (minStep === maxStep) { minStep -= 1; maxStep += 1; }
    if (minY === maxY) { minY -= 0.5; maxY += 0.5; }
    const pad = (maxY - minY) * 0.05;
    minY -= pad; maxY += pad;

    const left = 56, right = 12, top = 24, bottom = 28;
    const plotW = width - left - right, plotH = height - top - bottom;
    const x = (s) => left + ((s - minStep) / (maxStep - minStep)) * plotW;
    const y = (v) => top + (1 - (v - minY) / (maxY - minY)) * plotH;

    ctx.strokeStyle = grid;
    ctx.fillStyle = ink;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of LossChart.ticks(minY, maxY, 5)) {
      ctx.beginPath(); ctx.moveTo(left, y(t)); ctx.lineTo(left + plotW, y(t)); ctx.stroke();
      const label = this.logScale ? Number(Math.pow(10, t).toPrecision(2)).toString() : Number(t.toPrecision(3)).toString();
      ctx.fillText(label, left - 6, y(t));
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of LossChart.ticks(minStep, maxStep, 6)) {
      if (!Number.isInteger(t)) continue;
      ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), top + plotH); ctx.stroke();
      ctx.fillText(String(t), x(t), top + plotH + 6);
    }

    // A series is broken where its steps jump (the other expert trained in between), so no line
    // pretends to span steps it has no values for.
    const path = (steps, values) => {
      let gap = Infinity;
      for (let i = 1; i < steps.length; i++) gap = Math.min(gap, steps[i] - steps[i - 1]);
      ctx.beginPath();
      steps.forEach((s, i) => {
        const jump = i > 0 && s - steps[i - 1] > 1.5 * gap;
        if (i === 0 || jump) ctx.moveTo(x(s), y(values[i]));
        else ctx.lineTo(x(s), y(values[i]));
      });
      ctx.stroke();
    };
    for (const line of lines) {
      ctx.strokeStyle = line.colour;
      ctx.setLineDash(line.validation ? [6, 4] : []);
      if (this.smoothing > 0 && !line.validation) {
        ctx.globalAlpha = 0.25;
        path(line.steps, line.raw);
        ctx.globalAlpha = 1;
      }
      ctx.lineWidth = 1.8;
      path(line.steps, line.smooth);
      ctx.lineWidth = 1;
      ctx.setLineDash([]);
      if (line.steps.length === 1) {
        ctx.fillStyle = line.colour;
        ctx.beginPath(); ctx.arc(x(line.steps[0]), y(line.smooth[0]), 3, 0, 2 * Math.PI); ctx.fill();
      }
    }

    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    let lx = left;
    for (const line of lines) {
      ctx.fillStyle = line.colour;
      ctx.fillRect(lx, 8, 14, 3);
      ctx.fillStyle = ink;
      const last = line.smooth[line.smooth.length - 1];
      const value = this.logScale ? Math.pow(10, last) : last;
      const label = `${line.name.replace('_', ' ')}  ${value.toPrecision(4)}`;
      ctx.fillText(label, lx + 18, 10);
      lx += ctx.measureText(label).width + 36;
    }
  }
}

window.LossChart = LossChart;
