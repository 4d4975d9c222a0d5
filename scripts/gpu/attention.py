#!/usr/bin/env python3
"""Self-attention kernels at Wan's long sequences (issue 18, item 3).

Measures, for B=1, H=40, D=128, non-causal, at the token counts of 41 frames at 512², 768² and 1024²
(latent frames (41-1)/4+1 = 11, spatial /8 by the VAE then /2 by the patch embedding:
11·32·32 = 11264, 11·48·48 = 25344, 11·64·64 = 45056):

* torch's scaled_dot_product_attention in bf16, forward and forward+backward, for each backend alone
  (cuDNN, flash, memory-efficient) and for the one the default dispatch picks (named from a profile);
* cuDNN's attention through the cudnn-frontend Python graph API (package nvidia-cudnn-frontend): bf16, to
  separate "frontend against torch's dispatch" from the fp8 gain, and fp8 (e4m3, per-tensor scales,
  forward and backward), both the kernel alone and with torch's (unfused) quantise/dequantise around it;
* the error of every variant's output and gradients against an exact fp32 attention on the same bf16
  inputs (a chunked fp32 reference on the first --ref-heads heads; attention is per head, so this is the
  exact reference for those heads), and, as a floor for fp8, the error of fp32 attention on inputs that
  were only rounded to e4m3 and back.

Inputs are laid out as the model produces them: q/k/v/dO stored [B, L, H, D] (the projections' output
split into heads) and handed to the kernels as [B, H, L, D] views. Never zeros: fresh randn per length.

Every variant runs inside try/except: a failure prints its reason and the script goes on. A short table
is printed last.

    python3 scripts/gpu/attention.py [--out DIR]     # on the GPU machine (bash scripts/gpu/attention.sh)
    python3 scripts/gpu/attention.py --dry-run       # tiny shapes on the CPU: code paths and table only
    python3 scripts/gpu/attention.py --dry-run --fake-frontend   # also the cudnn-frontend code, on a stand-in
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
import warnings

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except Exception:  # noqa: BLE001 - very old torch; the per-backend variants then report why
    SDPBackend = None
    sdpa_kernel = None

# FLOP convention (FlashAttention's): the forward is two L×L×D matmuls per head, 4·B·H·L²·D flops;
# the backward is counted as 2.5× the forward (five such matmuls, the recomputation of QKᵀ not
# counted), so forward+backward is 3.5× the forward.
BWD_FLOP_FACTOR = 2.5
FLOP_CONVENTION = (
    "FLOP convention: forward = 4*B*H*L^2*D (QK^T and PV), backward = 2.5 x forward "
    "(FlashAttention's count: 5 matmuls, recompute of QK^T not counted), fwd+bwd = 3.5 x forward"
)

E4M3_MAX = 448.0
GIB = 1024.0**3


def wan_tokens(frames, height, width):
    """Video tokens of Wan 2.x at a clip shape: latent frames (F-1)/4+1, spatial /8 (VAE) then /2 (patch)."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


DEFAULT_LENGTHS = [wan_tokens(41, s, s) for s in (512, 768, 1024)]  # 11264, 25344, 45056


def log(*parts):
    print(*parts, flush=True)


def fmt(x, spec=".2f"):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return format(x, spec)


class Timer:
    """Median wall time of a callable: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device, target_s, min_iters, max_iters, warmup):
        self.device = device
        self.target_s = target_s
        self.min_iters = min_iters
        self.max_iters = max_iters
        self.warmup = warmup

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        estimate = max(time.perf_counter() - t0, 1e-6)
        iters = max(self.min_iters, min(self.max_iters, int(self.target_s / estimate)))
        times = []
        if self.device.type == "cuda":
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            for s, e in zip(starts, ends):
                s.record()
                fn()
                e.record()
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        else:
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "iters": iters}


def memory_begin(device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def memory_peak_gib(device, base):
    """Peak memory the caching allocator held above `base` (bytes allocated before the variant)."""
    if device.type != "cuda" or base is None:
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / GIB


def release(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------
# Reference and errors
# ---------------------------------------------------------------------------------------------------


def fp32_reference(q, k, v, d_out, heads, chunk):
    """Exact fp32 attention forward and backward for the first `heads` heads.

    q, k, v, d_out: [B, L, H, D] (any float dtype). Returns out, dq, dk, dv as [B, heads, L, D] fp32.
    Chunked over queries so that only chunk×L scores live at once; the backward uses the usual
    identities dS = P∘(dP − rowsum(dO∘O)), dQ = dS·K·s, dK = dSᵀ·Q·s, dV = Pᵀ·dO.
    """
    batch, length, _, dim = q.shape
    scale = dim**-0.5
    shape = (batch, heads, length, dim)
    out, dq, dk, dv = (torch.zeros(shape, dtype=torch.float32, device=q.device) for _ in range(4))
    for b in range(batch):
        for h in range(heads):
            qh, kh, vh, gh = (t[b, :, h].float() for t in (q, k, v, d_out))
            for i in range(0, length, chunk):
                qc, gc = qh[i : i + chunk], gh[i : i + chunk]
                p = torch.softmax((qc @ kh.T) * scale, dim=-1)
                oc = p @ vh
                dp = gc @ vh.T
                delta = (gc * oc).sum(dim=-1, keepdim=True)
                ds = p * (dp - delta)
                out[b, h, i : i + chunk] = oc
                dq[b, h, i : i + chunk] = (ds @ kh) * scale
                dk[b, h] += (ds.T @ qc) * scale
                dv[b, h] += p.T @ gc
                del p, dp, ds, oc
    return out, dq, dk, dv


def error_vs(x, ref):
    """(relative Frobenius error, max abs error) of x against ref; nan when x holds a non-finite value."""
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        return float("nan"), float("nan")
    diff = x - ref
    return (diff.norm() / ref.norm()).item(), diff.abs().max().item()


def errors_of(ref, heads, out_bhld=None, dq_blhd=None, dk_blhd=None, dv_blhd=None):
    """Errors of a variant's outputs (first `heads` heads) against the fp32 reference.

    out is given as [B, H, L, D] (as SDPA returns it), the gradients as [B, L, H, D] (the inputs' layout).
    """
    ref_out, ref_dq, ref_dk, ref_dv = ref
    errs = {}
    if out_bhld is not None:
        errs["out"] = error_vs(out_bhld[:, :heads], ref_out)
    for name, g, r in (("dq", dq_blhd, ref_dq), ("dk", dk_blhd, ref_dk), ("dv", dv_blhd, ref_dv)):
        if g is not None:
            errs[name] = error_vs(g[:, :, :heads].transpose(1, 2), r)
    return errs


def describe_errors(errs):
    return ", ".join(f"{k} rel {fmt(v[0], '.2e')} max|d| {fmt(v[1], '.2e')}" for k, v in errs.items())


# ---------------------------------------------------------------------------------------------------
# torch SDPA variants
# ---------------------------------------------------------------------------------------------------


def torch_backends():
    """(label, backend or None for the default dispatch)."""
    variants = []
    if SDPBackend is not None:
        for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            backend = getattr(SDPBackend, name, None)
            if backend is not None:
                variants.append((f"torch {name.split('_')[0].lower()}", backend))
    variants.append(("torch default", None))
    return variants


def sdpa_call(q, k, v, backend):
    """SDPA on [B, L, H, D] storage through [B, H, L, D] views, restricted to one backend if given."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if backend is None:
        return F.scaled_dot_product_attention(qt, kt, vt)
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(qt, kt, vt)


def attention_ops_called(fn):
    """Names of the aten attention ops a call dispatches to (CPU-side profile, no timing claims)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    keys = {e.key for e in prof.key_averages()}
    wanted = ("cudnn_attention", "flash_attention", "efficient_attention", "_scaled_dot_product", "math")
    return sorted(k for k in keys if k.startswith("aten::") and any(w in k for w in wanted))


def run_torch_variant(label, backend, inputs, ref, cfg, timer, device):
    q, k, v, d_out = inputs
    B, L, H, D = q.shape
    flops = 4.0 * B * H * L * L * D
    row = {"L": L, "variant": label}
    qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    d_out_view = d_out.transpose(1, 2)

    def forward():
        with torch.no_grad():
            return sdpa_call(q, k, v, backend)

    def forward_backward():
        out = sdpa_call(qg, kg, vg, backend)
        return out, torch.autograd.grad(out, (qg, kg, vg), d_out_view)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            base = memory_begin(device)
            out, (dq, dk, dv) = forward_backward()
            row["peak_gib"] = memory_peak_gib(device, base)
        except Exception as e:  # noqa: BLE001
            reasons = "; ".join(str(w.message).splitlines()[0] for w in caught)
            log(f"  {label}: not available: {type(e).__name__}: {str(e).splitlines()[0]}")
            if reasons:
                log(f"    torch's reasons: {reasons}")
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            return row
    row["errors"] = errors_of(ref, cfg.ref_heads, out, dq, dk, dv)
    del out, dq, dk, dv
    try:
        row["ops"] = attention_ops_called(forward_backward)
    except Exception as e:  # noqa: BLE001
        row["ops"] = [f"profile failed: {type(e).__name__}: {e}"]
    try:
        row["fwd"] = timer(forward)
        row["fwd_bwd"] = timer(forward_backward)
    except Exception as e:  # noqa: BLE001
        log(f"  {label}: timing failed: {type(e).__name__}: {e}")
        row["error"] = f"timing: {type(e).__name__}: {e}"
    fill_rates(row, flops)
    log_row(row)
    release(device)
    return row


def fill_rates(row, flops):
    fwd = row.get("fwd", {}).get("median_ms")
    fb = row.get("fwd_bwd", {}).get("median_ms")
    bwd = row.get("bwd", {}).get("median_ms")
    if fb is not None and fwd is not None and bwd is None:
        row["bwd_ms"] = fb - fwd
    elif bwd is not None:
        row["bwd_ms"] = bwd
        if fwd is not None:
            fb = fwd + bwd
    row["fwd_ms"] = fwd
    row["fwd_bwd_ms"] = fb
    row["fwd_tflops"] = flops / (fwd * 1e-3) / 1e12 if fwd else None
    bwd_ms = row.get("bwd_ms")
    row["bwd_tflops"] = BWD_FLOP_FACTOR * flops / (bwd_ms * 1e-3) / 1e12 if bwd_ms and bwd_ms > 0 else None


def log_row(row):
    parts = [f"  {row['variant']}:"]
    if "fwd" in row:
        t = row["fwd"]
        parts.append(f"fwd {t['median_ms']:.3f} ms (min {t['min_ms']:.3f}, max {t['max_ms']:.3f}, n {t['iters']})")
    if "fwd_bwd" in row:
        t = row["fwd_bwd"]
        parts.append(f"fwd+bwd {t['median_ms']:.3f} ms (min {t['min_ms']:.3f}, max {t['max_ms']:.3f}, n {t['iters']})")
    if "bwd" in row:
        t = row["bwd"]
        parts.append(f"bwd {t['median_ms']:.3f} ms (min {t['min_ms']:.3f}, max {t['max_ms']:.3f}, n {t['iters']})")
    if row.get("fwd_tflops") is not None:
        parts.append(f"{row['fwd_tflops']:.0f} TFLOP/s fwd")
    if row.get("bwd_tflops") is not None:
        parts.append(f"{row['bwd_tflops']:.0f} TFLOP/s bwd")
    if row.get("peak_gib") is not None:
        parts.append(f"peak +{row['peak_gib']:.2f} GiB")
    log(" ".join(parts))
    if row.get("ops"):
        log(f"    ops: {', '.join(row['ops'])}")
    if row.get("errors"):
        log(f"    vs fp32: {describe_errors(row['errors'])}")
    for note in row.get("notes", []):
        log(f"    {note}")


# ---------------------------------------------------------------------------------------------------
# e4m3 helpers
# ---------------------------------------------------------------------------------------------------


def pow2_scale(amax, target=E4M3_MAX):
    """Largest power of two s with amax·s <= target (so descale = 1/s is exact); 1 for a bad amax."""
    if not (amax > 0 and math.isfinite(amax)):
        return 1.0
    return 2.0 ** math.floor(math.log2(target / amax))


def pow2_scale_tensor(amax, target=E4M3_MAX):
    """pow2_scale on the device, without a host sync (for the end-to-end timings)."""
    return torch.exp2(torch.floor(torch.log2(target / amax.float().clamp_min(1e-30))))


def emulated_e4m3(x, heads):
    """The first `heads` heads of x ([B, L, H, D]) rounded to e4m3 and back, in fp32, with the per-tensor
    power-of-two scale of the whole tensor (as the kernel's inputs are quantised)."""
    scale = pow2_scale(x.abs().amax().float().item())
    return (x[:, :, :heads].float() * scale).to(torch.float8_e4m3fn).float() / scale


# ---------------------------------------------------------------------------------------------------
# cudnn-frontend variants
# ---------------------------------------------------------------------------------------------------


class Uid:
    q, k, v, o, stats, d_out, dq, dk, dv = 1, 2, 3, 4, 5, 6, 7, 8, 9
    descale_q, descale_k, descale_v, descale_s, scale_s, scale_o = 20, 21, 22, 23, 24, 25
    amax_s, amax_o = 26, 27
    descale_o, descale_d_out, descale_dp, scale_dq, scale_dk, scale_dv, scale_dp = 30, 31, 32, 33, 34, 35, 36
    amax_dq, amax_dk, amax_dv, amax_dp = 40, 41, 42, 43


FWD_SCALARS = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
BWD_SCALARS = (
    "descale_q", "descale_k", "descale_v", "descale_o", "descale_d_out", "descale_s", "descale_dp",
    "scale_s", "scale_dq", "scale_dk", "scale_dv", "scale_dp",
)  # fmt: skip
# cudnn-frontend's keyword for each of our scalar names (the backward's dO / dP spelling).
FE_KWARG = {"descale_d_out": "descale_dO", "descale_dp": "descale_dP", "scale_dq": "scale_dQ",
            "scale_dk": "scale_dK", "scale_dv": "scale_dV", "scale_dp": "scale_dP"}  # fmt: skip


def bshd_stride(B, H, L, D):
    """Strides of a [B, H, L, D] view on [B, L, H, D] storage."""
    return (L * H * D, D, H * D, 1)


def point_libcudnn_at_torchs():
    """Let cudnn-frontend dlopen the libcudnn that torch already loaded (it looks in LD_LIBRARY_PATH first)."""
    torch.backends.cudnn.version()  # make sure torch has loaded it
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libcudnn.so" in line and "/" in line}
    except OSError:
        return None
    main = sorted(p for p in paths if os.path.basename(p).startswith("libcudnn.so"))
    if not main:
        return None
    directory = os.path.dirname(main[0])
    os.environ["LD_LIBRARY_PATH"] = directory + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")
    return main[0]


class Frontend:
    """SDPA graphs through cudnn-frontend's Python API, as its own test/python/sdpa/fp8.py builds them."""

    def __init__(self, device):
        lib = point_libcudnn_at_torchs()
        import cudnn  # noqa: PLC0415 - optional: carried as a wheel

        self.cudnn = cudnn
        self.device = device
        self.handle = cudnn.create_handle()
        cudnn.set_stream(self.handle, torch.cuda.current_stream().cuda_stream)
        log(f"cudnn-frontend {getattr(cudnn, '__version__', '?')}, cuDNN backend "
            f"{cudnn.backend_version_string()} (torch's cuDNN {torch.backends.cudnn.version()}, {lib or 'path unknown'})")  # fmt: skip

    def _graph(self, io_type):
        dt = self.cudnn.data_type
        return self.cudnn.pygraph(
            io_data_type=io_type, intermediate_data_type=dt.FLOAT, compute_data_type=dt.FLOAT, handle=self.handle
        )

    def _finish(self, graph):
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([self.cudnn.heur_mode.A, self.cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        try:
            engine = graph.selected_engine
            log(f"    cudnn-fe plan: {engine if engine is not None else 'cuDNN backend'}")
        except Exception:  # noqa: BLE001 - informational only
            pass
        return graph

    def _scalars(self, graph, names):
        dt = self.cudnn.data_type
        return {n: graph.tensor(uid=getattr(Uid, n), dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=dt.FLOAT) for n in names}

    @staticmethod
    def _out(t, uid, dim, stride, dtype):
        t.set_uid(uid).set_output(True).set_dim(dim).set_stride(stride).set_data_type(dtype)

    def forward_graph(self, B, H, L, D, fp8, out_type, declare_amax_s=False):
        dt = self.cudnn.data_type
        io = dt.FP8_E4M3 if fp8 else dt.BFLOAT16
        g = self._graph(io)
        dim, stride = (B, H, L, D), bshd_stride(B, H, L, D)
        q, k, v = (g.tensor(uid=u, dim=dim, stride=stride, data_type=io) for u in (Uid.q, Uid.k, Uid.v))
        if fp8:
            s = self._scalars(g, FWD_SCALARS)
            o, stats, amax_s, amax_o = g.sdpa_fp8(
                q=q, k=k, v=v, **s, generate_stats=True, attn_scale=D**-0.5, use_causal_mask=False, name="sdpa_fp8"
            )
            self._out(amax_o, Uid.amax_o, (1, 1, 1, 1), (1, 1, 1, 1), dt.FLOAT)
            if declare_amax_s:
                self._out(amax_s, Uid.amax_s, (1, 1, 1, 1), (1, 1, 1, 1), dt.FLOAT)
        else:
            o, stats = g.sdpa(q=q, k=k, v=v, generate_stats=True, attn_scale=D**-0.5, use_causal_mask=False, name="sdpa")
        self._out(o, Uid.o, dim, stride, out_type)
        self._out(stats, Uid.stats, (B, H, L, 1), (H * L, L, 1, 1), dt.FLOAT)
        return self._finish(g)

    def backward_graph(self, B, H, L, D, fp8, out_type, grad_type):
        dt = self.cudnn.data_type
        io = dt.FP8_E4M3 if fp8 else dt.BFLOAT16
        g = self._graph(io)
        dim, stride = (B, H, L, D), bshd_stride(B, H, L, D)
        q, k, v, d_out = (g.tensor(uid=u, dim=dim, stride=stride, data_type=io) for u in (Uid.q, Uid.k, Uid.v, Uid.d_out))
        o = g.tensor(uid=Uid.o, dim=dim, stride=stride, data_type=out_type)
        stats = g.tensor(uid=Uid.stats, dim=(B, H, L, 1), stride=(H * L, L, 1, 1), data_type=dt.FLOAT)
        if fp8:
            s = {FE_KWARG.get(n, n): t for n, t in self._scalars(g, BWD_SCALARS).items()}
            dq, dk, dv, amax_dq, amax_dk, amax_dv, amax_dp = g.sdpa_fp8_backward(
                q=q, k=k, v=v, o=o, dO=d_out, stats=stats, **s, attn_scale=D**-0.5, use_padding_mask=False,
                name="sdpa_fp8_backward",
            )
            for t, u in ((amax_dq, Uid.amax_dq), (amax_dk, Uid.amax_dk), (amax_dv, Uid.amax_dv), (amax_dp, Uid.amax_dp)):
                self._out(t, u, (1, 1, 1, 1), (1, 1, 1, 1), dt.FLOAT)
        else:
            dq, dk, dv = g.sdpa_backward(q=q, k=k, v=v, o=o, dO=d_out, stats=stats, attn_scale=D**-0.5, name="sdpa_backward")
        for t, u in ((dq, Uid.dq), (dk, Uid.dk), (dv, Uid.dv)):
            self._out(t, u, dim, stride, grad_type)
        return self._finish(g)

    def workspace(self, graph):
        return torch.empty(max(graph.get_workspace_size(), 1), dtype=torch.uint8, device=self.device)

    def execute(self, graph, pack, workspace):
        graph.execute(pack, workspace, self.handle)


def scalar(value, device):
    return torch.full((1, 1, 1, 1), float(value), dtype=torch.float32, device=device)


def run_frontend_bf16(fe, inputs, ref, cfg, timer, device):
    q, k, v, d_out = inputs
    B, L, H, D = q.shape
    flops = 4.0 * B * H * L * L * D
    row = {"L": L, "variant": "cudnn-fe bf16"}
    bf16 = fe.cudnn.data_type.BFLOAT16
    try:
        base = memory_begin(device)
        fwd_g = fe.forward_graph(B, H, L, D, fp8=False, out_type=bf16)
        bwd_g = fe.backward_graph(B, H, L, D, fp8=False, out_type=bf16, grad_type=bf16)
        o = torch.full_like(q, float("nan"))
        stats = torch.full((B, H, L, 1), float("nan"), dtype=torch.float32, device=device)
        dq, dk, dv = (torch.full_like(q, float("nan")) for _ in range(3))
        fwd_ws, bwd_ws = fe.workspace(fwd_g), fe.workspace(bwd_g)
        fwd_pack = {Uid.q: q, Uid.k: k, Uid.v: v, Uid.o: o, Uid.stats: stats}
        bwd_pack = {Uid.q: q, Uid.k: k, Uid.v: v, Uid.o: o, Uid.stats: stats, Uid.d_out: d_out, Uid.dq: dq, Uid.dk: dk, Uid.dv: dv}
        fe.execute(fwd_g, fwd_pack, fwd_ws)
        fe.execute(bwd_g, bwd_pack, bwd_ws)
        row["peak_gib"] = memory_peak_gib(device, base)
        row["errors"] = errors_of(ref, cfg.ref_heads, o.transpose(1, 2), dq, dk, dv)
        row["fwd"] = timer(lambda: fe.execute(fwd_g, fwd_pack, fwd_ws))
        row["bwd"] = timer(lambda: fe.execute(bwd_g, bwd_pack, bwd_ws))
    except Exception as e:  # noqa: BLE001
        log(f"  cudnn-fe bf16: failed: {type(e).__name__}: {e}")
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return row
    fill_rates(row, flops)
    log_row(row)
    release(device)
    return row


class Fp8Buffers:
    """Device buffers of one fp8 forward + backward: e4m3 inputs, outputs, amax outputs and the scalars."""

    def __init__(self, q, device, out_dtype, grad_dtype, amax_s_declared):
        B, L, H, D = q.shape
        self.amax_s_declared = amax_s_declared
        e4m3 = torch.float8_e4m3fn
        self.q8, self.k8, self.v8, self.d_out8 = (torch.empty(q.shape, dtype=e4m3, device=device) for _ in range(4))
        self.o = torch.empty(q.shape, dtype=out_dtype, device=device)
        self.stats = torch.full((B, H, L, 1), float("nan"), dtype=torch.float32, device=device)
        self.dq, self.dk, self.dv = (torch.empty(q.shape, dtype=grad_dtype, device=device) for _ in range(3))
        names = set(FWD_SCALARS) | set(BWD_SCALARS)
        self.s = {n: scalar(1.0, device) for n in names}
        self.amax = {n: scalar(float("nan"), device) for n in ("amax_s", "amax_o", "amax_dq", "amax_dk", "amax_dv", "amax_dp")}

    def fwd_pack(self):
        pack = {Uid.q: self.q8, Uid.k: self.k8, Uid.v: self.v8, Uid.o: self.o, Uid.stats: self.stats,
                Uid.amax_o: self.amax["amax_o"]}  # fmt: skip
        if self.amax_s_declared:
            pack[Uid.amax_s] = self.amax["amax_s"]
        pack.update({getattr(Uid, n): self.s[n] for n in FWD_SCALARS})
        return pack

    def bwd_pack(self):
        pack = {Uid.q: self.q8, Uid.k: self.k8, Uid.v: self.v8, Uid.o: self.o, Uid.stats: self.stats,
                Uid.d_out: self.d_out8, Uid.dq: self.dq, Uid.dk: self.dk, Uid.dv: self.dv}  # fmt: skip
        pack.update({getattr(Uid, n): self.amax[n] for n in ("amax_dq", "amax_dk", "amax_dv", "amax_dp")})
        pack.update({getattr(Uid, n): self.s[n] for n in BWD_SCALARS})
        return pack

    def set(self, name, value):
        self.s[name].fill_(float(value))


def quantize_into(dst8, x, scale_buf, descale_buf):
    """dst8 = e4m3(x · s) with s the power of two that maps amax(x) to <= 448; on the device, no sync."""
    scale = pow2_scale_tensor(x.abs().amax())
    scale_buf.copy_(scale.reshape(1, 1, 1, 1))
    descale_buf.copy_((1.0 / scale).reshape(1, 1, 1, 1))
    dst8.copy_(x * scale.to(x.dtype))


def build_fp8_graphs(fe, B, H, L, D, notes):
    """The fp8 forward/backward graphs with the most precise outputs this cuDNN/GPU accepts.

    Blackwell takes bf16 O and dQ/dK/dV from e4m3 inputs; Hopper only e4m3 outputs (cudnn-frontend's
    support surface says so), so bf16 is tried first and e4m3 is the fallback."""
    dt = fe.cudnn.data_type
    attempts = [(dt.BFLOAT16, torch.bfloat16, False), (dt.FP8_E4M3, torch.float8_e4m3fn, False),
                (dt.FP8_E4M3, torch.float8_e4m3fn, True)]  # fmt: skip
    fwd_g = out_torch = amax_s_declared = None
    for out_type, out_torch_try, declare_amax_s in attempts:
        try:
            fwd_g = fe.forward_graph(B, H, L, D, fp8=True, out_type=out_type, declare_amax_s=declare_amax_s)
            out_torch, amax_s_declared = out_torch_try, declare_amax_s
            notes.append(f"fp8 forward graph: O {out_torch}, Amax_S declared: {declare_amax_s}")
            break
        except Exception as e:  # noqa: BLE001
            notes.append(f"fp8 forward graph with O {out_torch_try} (Amax_S declared: {declare_amax_s}) refused: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")  # fmt: skip
    if fwd_g is None:
        raise RuntimeError("no fp8 forward graph was accepted")
    out_type = dt.BFLOAT16 if out_torch == torch.bfloat16 else dt.FP8_E4M3
    bwd_g = grad_torch = None
    bwd_error = None
    for grad_type, grad_torch_try in ((dt.BFLOAT16, torch.bfloat16), (dt.FP8_E4M3, torch.float8_e4m3fn)):
        try:
            bwd_g = fe.backward_graph(B, H, L, D, fp8=True, out_type=out_type, grad_type=grad_type)
            grad_torch = grad_torch_try
            notes.append(f"fp8 backward graph: dQ/dK/dV {grad_torch}")
            break
        except Exception as e:  # noqa: BLE001
            bwd_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            notes.append(f"fp8 backward graph with dQ/dK/dV {grad_torch_try} refused: {bwd_error}")
    return fwd_g, out_torch, amax_s_declared, bwd_g, grad_torch


def run_frontend_fp8(fe, inputs, ref, cfg, timer, device):
    """cuDNN fp8 attention: kernel alone, then with torch's quantise/dequantise around it."""
    q, k, v, d_out = inputs
    B, L, H, D = q.shape
    flops = 4.0 * B * H * L * L * D
    notes = []
    row = {"L": L, "variant": "cudnn-fe fp8", "notes": notes}
    e2e = {"L": L, "variant": "cudnn-fe fp8 +quant", "notes": []}
    try:
        base = memory_begin(device)
        fwd_g, out_torch, amax_s_declared, bwd_g, grad_torch = build_fp8_graphs(fe, B, H, L, D, notes)
        buf = Fp8Buffers(q, device, out_torch, grad_torch or torch.float8_e4m3fn, amax_s_declared)
        fwd_ws = fe.workspace(fwd_g)
        bwd_ws = fe.workspace(bwd_g) if bwd_g is not None else None
        for x, dst, n in ((q, buf.q8, "q"), (k, buf.k8, "k"), (v, buf.v8, "v")):
            quantize_into(dst, x, buf.s.setdefault(f"scale_{n}", scalar(1.0, device)), buf.s[f"descale_{n}"])
        # Softmax probabilities (before normalisation) lie in [0, 1]: a fixed power-of-two scale.
        p_scale = pow2_scale(1.0)
        buf.set("scale_s", p_scale)
        buf.set("descale_s", 1.0 / p_scale)
        fwd_pack = buf.fwd_pack()
        # Calibrate O's scale (delayed scaling, as Transformer Engine does): run with 1, read amax(O).
        fe_out_is_fp8 = out_torch == torch.float8_e4m3fn
        buf.set("scale_o", 1.0)
        fe.execute(fwd_g, fwd_pack, fwd_ws)
        torch.cuda.synchronize()
        amax_o_first = buf.amax["amax_o"].item()
        o_scale = pow2_scale(amax_o_first) if fe_out_is_fp8 else 1.0
        buf.set("scale_o", o_scale)
        fe.execute(fwd_g, fwd_pack, fwd_ws)
        torch.cuda.synchronize()
        notes.append(f"amax(O) {amax_o_first:.4g} with scale 1, {buf.amax['amax_o'].item():.4g} with scale {o_scale:g}")
        h = cfg.ref_heads  # dequantise only the heads the reference covers (keeps the peak honest)
        out = buf.o[:, :, :h].float() / o_scale
        errs = errors_of(ref, h, out_bhld=out.transpose(1, 2))
        del out
        row["fwd"] = timer(lambda: fe.execute(fwd_g, fwd_pack, fwd_ws))

        if bwd_g is not None:
            buf.set("descale_o", 1.0 / o_scale)
            quantize_into(buf.d_out8, d_out, buf.s.setdefault("scale_d_out", scalar(1.0, device)), buf.s["descale_d_out"])
            for n in ("scale_dq", "scale_dk", "scale_dv", "scale_dp", "descale_dp"):
                buf.set(n, 1.0)
            bwd_pack = buf.bwd_pack()
            fe.execute(bwd_g, bwd_pack, bwd_ws)
            torch.cuda.synchronize()
            amax = {n: buf.amax[f"amax_{n}"].item() for n in ("dq", "dk", "dv", "dp")}
            grads_fp8 = grad_torch == torch.float8_e4m3fn
            scales = {n: (pow2_scale(a) if (grads_fp8 or n == "dp") else 1.0) for n, a in amax.items()}
            for n in ("dq", "dk", "dv", "dp"):
                buf.set(f"scale_{n}", scales[n])
            buf.set("descale_dp", 1.0 / scales["dp"])
            fe.execute(bwd_g, bwd_pack, bwd_ws)
            torch.cuda.synchronize()
            notes.append("amax with scale 1: " + ", ".join(f"{n} {a:.4g}" for n, a in amax.items())
                         + "; scales " + ", ".join(f"{n} {s:g}" for n, s in scales.items()))  # fmt: skip
            grads = [g[:, :, :h].float() / scales[n] for g, n in ((buf.dq, "dq"), (buf.dk, "dk"), (buf.dv, "dv"))]
            errs.update(errors_of(ref, h, None, *grads))
            del grads
            row["bwd"] = timer(lambda: fe.execute(bwd_g, bwd_pack, bwd_ws))
        row["peak_gib"] = memory_peak_gib(device, base)
        row["errors"] = errs
    except Exception as e:  # noqa: BLE001
        log(f"  cudnn-fe fp8: failed: {type(e).__name__}: {e}")
        for n in notes:
            log(f"    {n}")
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return [row]
    fill_rates(row, flops)
    log_row(row)

    # The same kernels with what a bf16 model around them needs, in plain torch ops: amax and quantise
    # q/k/v, dequantise O; quantise dO, dequantise dQ/dK/dV (scales of O/dQ/dK/dV/dP kept from the
    # calibration: delayed scaling).
    try:
        o_descale = buf.s["descale_o"]

        def fwd_e2e():
            quantize_into(buf.q8, q, buf.s["scale_q"], buf.s["descale_q"])
            quantize_into(buf.k8, k, buf.s["scale_k"], buf.s["descale_k"])
            quantize_into(buf.v8, v, buf.s["scale_v"], buf.s["descale_v"])
            fe.execute(fwd_g, fwd_pack, fwd_ws)
            return buf.o.to(torch.bfloat16) * o_descale.to(torch.bfloat16).reshape(1, 1, 1, 1)

        e2e["fwd"] = timer(fwd_e2e)
        if bwd_g is not None:
            grad_descale = {n: scalar(1.0 / buf.s[f"scale_{n}"].item(), device).to(torch.bfloat16) for n in ("dq", "dk", "dv")}

            def bwd_e2e():
                quantize_into(buf.d_out8, d_out, buf.s["scale_d_out"], buf.s["descale_d_out"])
                fe.execute(bwd_g, bwd_pack, bwd_ws)
                return [g.to(torch.bfloat16) * grad_descale[n] for g, n in ((buf.dq, "dq"), (buf.dk, "dk"), (buf.dv, "dv"))]

            e2e["bwd"] = timer(bwd_e2e)
        fill_rates(e2e, flops)
        log_row(e2e)
    except Exception as e:  # noqa: BLE001
        log(f"  cudnn-fe fp8 +quant: failed: {type(e).__name__}: {e}")
        e2e["error"] = f"{type(e).__name__}: {e}"
    del buf
    release(device)
    return [row, e2e]


def run_emulated_fp8_inputs(inputs, ref, cfg, device):
    """Error floor of fp8 attention: exact attention on inputs only rounded to e4m3 (no timing)."""
    q, k, v, d_out = inputs
    L = q.shape[1]
    row = {"L": L, "variant": "e4m3 inputs, fp32 math"}
    try:
        h = cfg.ref_heads
        qe, ke, ve, ge = (emulated_e4m3(t, h) for t in (q, k, v, d_out))
        out, dq, dk, dv = fp32_reference(qe, ke, ve, ge, h, cfg.ref_chunk)
        row["errors"] = errors_of(ref, h, out, dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2))
        row["notes"] = ["error only: q/k/v/dO rounded to e4m3 (per-tensor power-of-two scale), attention in fp32"]
    except Exception as e:  # noqa: BLE001
        log(f"  e4m3-input emulation failed: {type(e).__name__}: {e}")
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    log_row(row)
    release(device)
    return row


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def run_length(L, cfg, device, timer, fe, fe_error):
    B, H, D = cfg.batch, cfg.heads, cfg.head_dim
    flops = 4.0 * B * H * L * L * D
    log(f"\n=== L = {L} tokens: B {B}, H {H}, D {D}, bf16, non-causal, q/k std {cfg.qk_std:g}; forward {flops / 1e12:.2f} TFLOP, "
        f"fwd+bwd {(1 + BWD_FLOP_FACTOR) * flops / 1e12:.2f} TFLOP")  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(1000 + L)
    q, k, v, d_out = (torch.randn((B, L, H, D), generator=gen, device=device, dtype=torch.bfloat16) for _ in range(4))
    if cfg.qk_std != 1.0:  # sharper attention: logits of standard deviation qk_std²
        q.mul_(cfg.qk_std)
        k.mul_(cfg.qk_std)
    inputs = (q, k, v, d_out)
    t0 = time.perf_counter()
    ref = fp32_reference(q, k, v, d_out, cfg.ref_heads, cfg.ref_chunk)
    if device.type == "cuda":
        torch.cuda.synchronize()
    log(f"  fp32 reference on {cfg.ref_heads} heads: {time.perf_counter() - t0:.2f} s")
    rows = []
    if device.type == "cuda":
        try:
            choice = torch._fused_sdp_choice(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            name = SDPBackend(choice).name if SDPBackend is not None else str(choice)
            log(f"  torch._fused_sdp_choice: {name}")
        except Exception as e:  # noqa: BLE001
            log(f"  torch._fused_sdp_choice unavailable: {type(e).__name__}: {e}")
    for label, backend in torch_backends():
        if backend is None and sdpa_kernel is None:
            continue
        try:
            rows.append(run_torch_variant(label, backend, inputs, ref, cfg, timer, device))
        except Exception as e:  # noqa: BLE001
            log(f"  {label}: unexpected {type(e).__name__}: {e}")
            traceback.print_exc()
            rows.append({"L": L, "variant": label, "error": f"{type(e).__name__}: {e}"})
        release(device)
    # The same default dispatch on [B, H, L, D]-contiguous storage: does the model's layout cost anything?
    try:
        bhld = tuple(t.transpose(1, 2).contiguous().transpose(1, 2) for t in inputs)
        rows.append(run_torch_variant("torch default, BHLD mem", None, bhld, ref, cfg, timer, device))
        del bhld
    except Exception as e:  # noqa: BLE001
        log(f"  torch default, BHLD mem: unexpected {type(e).__name__}: {e}")
    release(device)
    rows.append(run_emulated_fp8_inputs(inputs, ref, cfg, device))
    if fe is not None and not cfg.no_frontend:
        for runner in (run_frontend_bf16, run_frontend_fp8):
            try:
                got = runner(fe, inputs, ref, cfg, timer, device)
                rows.extend(got if isinstance(got, list) else [got])
            except Exception as e:  # noqa: BLE001
                log(f"  {runner.__name__}: unexpected {type(e).__name__}: {e}")
                traceback.print_exc()
            release(device)
    elif not cfg.no_frontend:
        rows.append({"L": L, "variant": "cudnn-fe", "error": fe_error or "not available"})
    del q, k, v, d_out, inputs, ref
    release(device)
    return rows


def worst_grad_error(errs):
    vals = [errs[n][0] for n in ("dq", "dk", "dv") if n in errs]
    if not vals:
        return None
    return float("nan") if any(math.isnan(x) for x in vals) else max(vals)


def print_table(rows):
    log("\n==== table")
    log(FLOP_CONVENTION)
    log("peak GiB: caching allocator's peak above the bf16 inputs (q, k, v, dO) during one fwd+bwd; "
        "errors: relative Frobenius vs exact fp32 attention on the same bf16 inputs (first heads), "
        "dQKV = worst of dq/dk/dv")  # fmt: skip
    header = f"{'L':>6} {'variant':<24} {'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>8} {'TF/s fwd':>8} {'TF/s bwd':>8} {'peak GiB':>8} {'err O':>9} {'err dQKV':>9}"
    log(header)
    log("-" * len(header))
    for r in rows:
        if r.get("error") and "fwd" not in r and "errors" not in r:
            log(f"{r['L']:>6} {r['variant']:<24} {'failed: ' + r['error'][:90]}")
            continue
        errs = r.get("errors", {})
        log(
            f"{r['L']:>6} {r['variant']:<24} {fmt(r.get('fwd_ms'), '.3f'):>8} {fmt(r.get('bwd_ms'), '.3f'):>8} "
            f"{fmt(r.get('fwd_bwd_ms'), '.3f'):>8} {fmt(r.get('fwd_tflops'), '.0f'):>8} {fmt(r.get('bwd_tflops'), '.0f'):>8} "
            f"{fmt(r.get('peak_gib'), '.2f'):>8} {fmt(errs['out'][0] if 'out' in errs else None, '.2e'):>9} "
            f"{fmt(worst_grad_error(errs), '.2e'):>9}"
        )


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks code paths and the table only")
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--ref-heads", type=int, default=4, help="heads the fp32 reference covers")
    p.add_argument("--ref-chunk", type=int, default=2048, help="query rows per chunk of the fp32 reference")
    p.add_argument("--target-s", type=float, default=0.8, help="timed seconds per measurement (3..50 iterations)")
    p.add_argument("--qk-std", type=float, default=1.0, help="standard deviation of q and k (logits: its square)")
    p.add_argument("--fake-frontend", action="store_true",
                   help="with --dry-run: run the cudnn-frontend code paths against attention_fake_cudnn.py")  # fmt: skip
    p.add_argument("--no-frontend", action="store_true", help="skip the cudnn-frontend variants")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for attention.json")
    return p.parse_args(argv)


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be fp32, not tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if cfg.dry_run:
        device = torch.device("cpu")
        cfg.heads, cfg.ref_heads, cfg.ref_chunk = min(cfg.heads, 3), min(cfg.ref_heads, 3), 96
        lengths = cfg.lengths or [128, 200]
        timer = Timer(device, target_s=0.0, min_iters=2, max_iters=2, warmup=1)
        log("DRY RUN on the CPU: tiny shapes, timings mean nothing")
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device; use --dry-run for the CPU check")
        device = torch.device("cuda")
        lengths = cfg.lengths or DEFAULT_LENGTHS
        timer = Timer(device, target_s=cfg.target_s, min_iters=3, max_iters=50, warmup=2)
        props = torch.cuda.get_device_properties(0)
        log(f"{props.name}, {props.total_memory / GIB:.1f} GiB, {props.multi_processor_count} SMs, "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")  # fmt: skip
    cfg.ref_heads = min(cfg.ref_heads, cfg.heads)
    log(f"lengths {lengths} (41 frames at 512/768/1024 square: {DEFAULT_LENGTHS})")
    log(FLOP_CONVENTION)

    fe, fe_error = None, None
    if cfg.fake_frontend:
        if not cfg.dry_run:
            sys.exit("--fake-frontend is a CPU self-check: use it with --dry-run")
        import attention_fake_cudnn  # noqa: PLC0415 - beside this script

        attention_fake_cudnn.install()
        fe = Frontend(device)
    elif not cfg.no_frontend:
        if device.type != "cuda":
            fe_error = "needs a CUDA device"
            try:
                import cudnn  # noqa: F401, PLC0415

                log(f"import cudnn: ok ({getattr(cudnn, '__version__', '?')}); its graphs need a GPU, skipped")
            except Exception as e:  # noqa: BLE001
                log(f"import cudnn: {type(e).__name__}: {e} (skipped on the CPU)")
        else:
            try:
                fe = Frontend(device)
            except Exception as e:  # noqa: BLE001
                fe_error = f"{type(e).__name__}: {e}"
                log(f"cudnn-frontend unavailable: {fe_error}")

    started = time.perf_counter()
    rows = []
    for L in lengths:
        try:
            rows.extend(run_length(L, cfg, device, timer, fe, fe_error))
        except Exception as e:  # noqa: BLE001
            log(f"L = {L}: {type(e).__name__}: {e}")
            traceback.print_exc()
            rows.append({"L": L, "variant": "(all)", "error": f"{type(e).__name__}: {e}"})
        release(device)
    log(f"\ntotal {time.perf_counter() - started:.1f} s")
    if cfg.out:
        try:
            os.makedirs(cfg.out, exist_ok=True)
            name = "attention.json" if cfg.qk_std == 1.0 else f"attention_qkstd{cfg.qk_std:g}.json"
            with open(os.path.join(cfg.out, name), "w") as f:
                json.dump(rows, f, indent=1, default=str)
        except OSError as e:
            log(f"could not write attention.json: {e}")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
