//! Safe wrappers over the C++ helper (csrc/helper.cpp): what tch does not bind.

use std::ffi::CStr;

#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct HelperError {
    pub op: &'static str,
    pub message: String,
}

mod ffi {
    use std::ffi::c_void;
    extern "C" {
        pub fn wl_last_error() -> *const std::ffi::c_char;
        pub fn wl_cuda_memory_stats(device: i64, out: *mut i64) -> i32;
        pub fn wl_cuda_reset_peak(device: i64) -> i32;
        pub fn wl_cuda_empty_cache() -> i32;
        pub fn wl_cuda_memory_info(device: i64, free: *mut i64, total: *mut i64) -> i32;
        pub fn wl_cuda_synchronize(device: i64) -> i32;
        pub fn wl_stream_from_pool(device: i64, high_priority: i32, id: *mut i64) -> i32;
        pub fn wl_stream_current(device: i64, id: *mut i64) -> i32;
        pub fn wl_stream_set_current(device: i64, id: i64, previous: *mut i64) -> i32;
        pub fn wl_stream_synchronize(device: i64, id: i64) -> i32;
        pub fn wl_event_new(event: *mut *mut c_void) -> i32;
        pub fn wl_event_free(event: *mut c_void);
        pub fn wl_event_record(event: *mut c_void, device: i64, stream: i64) -> i32;
        pub fn wl_event_block(event: *mut c_void, device: i64, stream: i64) -> i32;
        pub fn wl_event_synchronize(event: *mut c_void) -> i32;
        pub fn wl_tensor_record_stream(tensor: *const c_void, device: i64, stream: i64) -> i32;
        pub fn wl_sdp_enable(flash: i32, mem_efficient: i32, math: i32, cudnn: i32) -> i32;
        pub fn wl_set_allow_tf32(allow: i32) -> i32;
        pub fn wl_empty_pinned(bytes: i64, out: *mut *mut c_void) -> i32;
        pub fn wl_copy(dst: *mut c_void, src: *const c_void, non_blocking: i32) -> i32;
        pub fn wl_set_memory_fraction(fraction: f64) -> i32;
        pub fn wl_fp8_quantize_rows(
            x: *const c_void,
            codes: *mut *mut c_void,
            scale: *mut *mut c_void,
        ) -> i32;
        pub fn wl_fp8_linear(
            x: *const c_void,
            codes: *const c_void,
            scale: *const c_void,
            bias: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_uint4_linear(
            x: *const c_void,
            packed: *const c_void,
            scale: *const c_void,
            zero_point: *const c_void,
            bias: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_uint4_dequantize(
            packed: *const c_void,
            scale: *const c_void,
            zero_point: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_attention_record(
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            record: *mut *mut c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_attention_free(record: *mut c_void);
        pub fn wl_fused_available(device: i64) -> i32;
        pub fn wl_fused_gated_add(
            x: *const c_void,
            y: *const c_void,
            gate: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_backward_with_grad(output: *const c_void, grad: *const c_void) -> i32;
        pub fn wl_fused_rope(
            x: *const c_void,
            cos: *const c_void,
            sin: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_fused_rms_rope(
            x: *const c_void,
            weight: *const c_void,
            cos: *const c_void,
            sin: *const c_void,
            eps: f64,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_fused_lora_linear(
            x: *const c_void,
            w_ext: *const c_void,
            a: *const c_void,
            b: *const c_void,
            bias: *const c_void,
            scale: f64,
            out: *mut *mut c_void,
        ) -> i32;
        pub fn wl_attention_replay(
            record: *const c_void,
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            out: *mut *mut c_void,
        ) -> i32;
    }
}

fn check(op: &'static str, rc: i32) -> Result<(), HelperError> {
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: the helper returns a pointer to a thread-local NUL-terminated string.
        let message = unsafe { CStr::from_ptr(ffi::wl_last_error()) }
            .to_string_lossy()
            .into_owned();
        Err(HelperError { op, message })
    }
}

/// Caching-allocator statistics of one GPU, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub allocated: i64,
    pub peak_allocated: i64,
    pub reserved: i64,
    pub peak_reserved: i64,
    pub num_ooms: i64,
    pub num_alloc_retries: i64,
}

pub fn memory_stats(device: usize) -> Result<MemoryStats, HelperError> {
    let mut out = [0i64; 6];
    check("memory_stats", unsafe {
        ffi::wl_cuda_memory_stats(device as i64, out.as_mut_ptr())
    })?;
    Ok(MemoryStats {
        allocated: out[0],
        peak_allocated: out[1],
        reserved: out[2],
        peak_reserved: out[3],
        num_ooms: out[4],
        num_alloc_retries: out[5],
    })
}

pub fn reset_peak_memory(device: usize) -> Result<(), HelperError> {
    check("reset_peak", unsafe {
        ffi::wl_cuda_reset_peak(device as i64)
    })
}

pub fn empty_cache() -> Result<(), HelperError> {
    check("empty_cache", unsafe { ffi::wl_cuda_empty_cache() })
}

/// (free, total) bytes of device memory as the driver reports them.
pub fn memory_info(device: usize) -> Result<(i64, i64), HelperError> {
    let (mut free, mut total) = (0i64, 0i64);
    check("memory_info", unsafe {
        ffi::wl_cuda_memory_info(device as i64, &mut free, &mut total)
    })?;
    Ok((free, total))
}

pub fn synchronize(device: usize) -> Result<(), HelperError> {
    check("synchronize", unsafe {
        ffi::wl_cuda_synchronize(device as i64)
    })
}

/// A CUDA stream of libtorch's pool on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub device: usize,
    id: i64,
}

impl Stream {
    pub fn from_pool(device: usize, high_priority: bool) -> Result<Self, HelperError> {
        let mut id = 0;
        check("stream_from_pool", unsafe {
            ffi::wl_stream_from_pool(device as i64, high_priority as i32, &mut id)
        })?;
        Ok(Stream { device, id })
    }

    pub fn current(device: usize) -> Result<Self, HelperError> {
        let mut id = 0;
        check("stream_current", unsafe {
            ffi::wl_stream_current(device as i64, &mut id)
        })?;
        Ok(Stream { device, id })
    }

    /// Runs `f` with this stream as the current one, restoring the previous stream afterwards.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> Result<R, HelperError> {
        let mut prev = 0;
        check("stream_set_current", unsafe {
            ffi::wl_stream_set_current(self.device as i64, self.id, &mut prev)
        })?;
        let out = f();
        let mut ignored = 0;
        check("stream_set_current", unsafe {
            ffi::wl_stream_set_current(self.device as i64, prev, &mut ignored)
        })?;
        Ok(out)
    }

    pub fn synchronize(&self) -> Result<(), HelperError> {
        check("stream_synchronize", unsafe {
            ffi::wl_stream_synchronize(self.device as i64, self.id)
        })
    }

    /// Keeps `tensor`'s memory from being reused until this stream's queued work is done.
    pub fn record_tensor(&self, tensor: &tch::Tensor) -> Result<(), HelperError> {
        check("record_stream", unsafe {
            ffi::wl_tensor_record_stream(tensor.as_ptr() as *const _, self.device as i64, self.id)
        })
    }
}

/// A CUDA event, for ordering work between streams without blocking the host.
pub struct Event(*mut std::ffi::c_void);

impl Event {
    pub fn new() -> Result<Self, HelperError> {
        let mut p = std::ptr::null_mut();
        check("event_new", unsafe { ffi::wl_event_new(&mut p) })?;
        Ok(Event(p))
    }

    pub fn record(&self, stream: &Stream) -> Result<(), HelperError> {
        check("event_record", unsafe {
            ffi::wl_event_record(self.0, stream.device as i64, stream.id)
        })
    }

    /// Makes `stream` wait on the device for this event.
    pub fn block(&self, stream: &Stream) -> Result<(), HelperError> {
        check("event_block", unsafe {
            ffi::wl_event_block(self.0, stream.device as i64, stream.id)
        })
    }

    pub fn synchronize(&self) -> Result<(), HelperError> {
        check("event_synchronize", unsafe {
            ffi::wl_event_synchronize(self.0)
        })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        unsafe { ffi::wl_event_free(self.0) }
    }
}

/// Chooses which scaled-dot-product-attention kernels libtorch may use.
pub fn sdp_enable(
    flash: bool,
    mem_efficient: bool,
    math: bool,
    cudnn: bool,
) -> Result<(), HelperError> {
    check("sdp_enable", unsafe {
        ffi::wl_sdp_enable(
            flash as i32,
            mem_efficient as i32,
            math as i32,
            cudnn as i32,
        )
    })
}

/// Allows TF32 for float32 matmuls (off by default; parity tests need it off).
pub fn set_allow_tf32(allow: bool) -> Result<(), HelperError> {
    check("set_allow_tf32", unsafe {
        ffi::wl_set_allow_tf32(allow as i32)
    })
}

/// SDPA back-end that libtorch picks, by ATen's enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpBackend {
    Math,
    Flash,
    Efficient,
    Cudnn,
    Overrideable,
    Other(i64),
}

impl SdpBackend {
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => SdpBackend::Math,
            1 => SdpBackend::Flash,
            2 => SdpBackend::Efficient,
            3 => SdpBackend::Cudnn,
            4 => SdpBackend::Overrideable,
            c => SdpBackend::Other(c),
        }
    }

    pub fn name(&self) -> String {
        match self {
            SdpBackend::Math => "math".into(),
            SdpBackend::Flash => "flash".into(),
            SdpBackend::Efficient => "mem-efficient".into(),
            SdpBackend::Cudnn => "cudnn".into(),
            SdpBackend::Overrideable => "overrideable".into(),
            SdpBackend::Other(c) => format!("unknown({c})"),
        }
    }
}

/// The SDPA kernel libtorch chooses for these (B, H, L, D) tensors.
pub fn sdp_choice(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
) -> Result<SdpBackend, tch::TchError> {
    let code = tch::Tensor::f_internal_fused_sdp_choice(
        q,
        k,
        v,
        None::<tch::Tensor>,
        0.0,
        false,
        None,
        false,
    )?;
    Ok(SdpBackend::from_code(code))
}

/// Takes ownership of a tensor the helper allocated with `new at::Tensor`.
///
/// # Safety
/// `ptr` must come from a helper call that succeeded and must not be used afterwards.
unsafe fn owned_tensor(ptr: *mut std::ffi::c_void) -> tch::Tensor {
    tch::Tensor::from_ptr(ptr as *mut torch_sys::C_tensor)
}

/// `bytes` bytes (uint8) of uninitialised page-locked host memory. Needs CUDA. libtorch's pinned
/// allocator rounds every request up to a power of two: callers that hold many tensors pack them
/// into buffers of a power-of-two size.
pub fn empty_pinned(bytes: i64) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("empty_pinned", unsafe {
        ffi::wl_empty_pinned(bytes, &mut out)
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// `dst.copy_(src)`, queued on the current stream without waiting when `non_blocking` (between
/// pinned host memory and a GPU); synchronise before reading a device-to-host result.
pub fn copy_into(
    dst: &mut tch::Tensor,
    src: &tch::Tensor,
    non_blocking: bool,
) -> Result<(), HelperError> {
    check("copy", unsafe {
        ffi::wl_copy(
            dst.as_mut_ptr() as *mut _,
            src.as_ptr() as *const _,
            non_blocking as i32,
        )
    })
}

/// Caps this process's CUDA caching allocator at `fraction` (0 < fraction ≤ 1) of each GPU's
/// memory; allocations beyond it fail as out-of-memory. The CUDA allocator reads the cap when it
/// first initialises a device, so call this before any tensor is put on the GPU (later calls do
/// not change a device already in use). Fails without CUDA (the setting is unknown there).
pub fn set_per_process_memory_fraction(fraction: f64) -> Result<(), HelperError> {
    check("set_memory_fraction", unsafe {
        ffi::wl_set_memory_fraction(fraction)
    })?;
    MEMORY_FRACTION.store(fraction.to_bits(), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The allocator cap set by [`set_per_process_memory_fraction`] (its bits; 0 = none set).
static MEMORY_FRACTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes of device `device` a new allocation may still take: the driver's free memory plus what
/// the caching allocator holds unused, and under an allocator cap at most the cap less what the
/// allocator has reserved. Call [`empty_cache`] first for a figure that other processes also see.
pub fn available_bytes(device: usize) -> Result<u64, HelperError> {
    let (free, total) = memory_info(device)?;
    let stats = memory_stats(device)?;
    let cached_unused = (stats.reserved - stats.allocated).max(0);
    let mut available = free + cached_unused;
    let fraction = f64::from_bits(MEMORY_FRACTION.load(std::sync::atomic::Ordering::Relaxed));
    if fraction > 0.0 {
        let cap = (fraction * total as f64) as i64;
        available = available.min(cap - stats.allocated);
    }
    Ok(available.max(0) as u64)
}

/// Row-wise float8 e4m3fn quantisation along the last dimension: `(codes, scale)` with
/// `scale = max|row| / 448` (fp32, shape `[..., 1]`) and `codes = round(x / scale)`, so that
/// `x ≈ codes · scale` and every row's largest magnitude becomes ±448.
pub fn fp8_quantize_rows(x: &tch::Tensor) -> Result<(tch::Tensor, tch::Tensor), HelperError> {
    let (mut codes, mut scale) = (std::ptr::null_mut(), std::ptr::null_mut());
    check("fp8_quantize_rows", unsafe {
        ffi::wl_fp8_quantize_rows(x.as_ptr() as *const _, &mut codes, &mut scale)
    })?;
    // SAFETY: the call succeeded, so both pointers hold fresh tensors.
    Ok(unsafe { (owned_tensor(codes), owned_tensor(scale)) })
}

/// The fp8 linear `y = (x quantised per row) · (codes · scale)ᵀ + bias` in `x`'s dtype, for `x`
/// `[..., in]`, e4m3fn `codes` `[out, in]` and fp32 `scale` `[out, 1]`. On CUDA one row-wise scaled
/// GEMM (sm89 or newer); on the CPU libtorch's per-tensor kernel followed by the scales. When grad
/// mode is on and `x` requires grad, the result backpropagates `dX = dY · (codes · scale)` in the
/// compute dtype (no gradient for the frozen weight or bias).
pub fn fp8_linear(
    x: &tch::Tensor,
    codes: &tch::Tensor,
    scale: &tch::Tensor,
    bias: Option<&tch::Tensor>,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    let bias = bias.map_or(std::ptr::null(), |b| b.as_ptr() as *const std::ffi::c_void);
    check("fp8_linear", unsafe {
        ffi::wl_fp8_linear(
            x.as_ptr() as *const _,
            codes.as_ptr() as *const _,
            scale.as_ptr() as *const _,
            bias,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// A LoRA'd linear `y = x·Wᵀ + bias + scale·(x·Aᵀ)·Bᵀ` whose frozen weight `W` `[out, in]` is the
/// first `out` rows of `w_ext` `[out + r, in]`: `a` (A `[r, in]`) is copied into the last `r`
/// rows, so that one GEMM over `x` gives both `x·Wᵀ` and `x·Aᵀ`; `b` is B `[out, r]`. `x`, `w_ext`,
/// `a` and `b` share one dtype. With grad mode on and `x`, `a` or `b` requiring grad, the result
/// backpropagates to all three (the input gradient `[dY, scale·dY·B]·w_ext` in one GEMM where
/// `out ≤ in`); `w_ext` and `bias` are frozen. The A rows must not be rewritten (by another call
/// with this buffer) before the backward: autograd then refuses the backward.
pub fn fused_lora_linear(
    x: &tch::Tensor,
    w_ext: &tch::Tensor,
    a: &tch::Tensor,
    b: &tch::Tensor,
    bias: Option<&tch::Tensor>,
    scale: f64,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    let bias = bias.map_or(std::ptr::null(), |b| b.as_ptr() as *const std::ffi::c_void);
    check("fused_lora_linear", unsafe {
        ffi::wl_fused_lora_linear(
            x.as_ptr() as *const _,
            w_ext.as_ptr() as *const _,
            a.as_ptr() as *const _,
            b.as_ptr() as *const _,
            bias,
            scale,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// AI Toolkit's 4-bit weight (`packed` `[out, in/2]` uint8, `scale` `[out, in/64]` bf16,
/// `zero_point` `[out, in/64]` uint8) dequantised to bf16: `(q − zp) · scale`, one kernel on CUDA.
pub fn uint4_dequantize(
    packed: &tch::Tensor,
    scale: &tch::Tensor,
    zero_point: &tch::Tensor,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("uint4_dequantize", unsafe {
        ffi::wl_uint4_dequantize(
            packed.as_ptr() as *const _,
            scale.as_ptr() as *const _,
            zero_point.as_ptr() as *const _,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// The 4-bit frozen linear `x · deq(W)ᵀ + bias` in `x`'s dtype. The weight is dequantised right
/// before the matmul and dropped; when grad mode is on and `x` requires grad, the backward
/// dequantises it again for `dX = dY · deq(W)`, so no dequantised weight is kept in between.
pub fn uint4_linear(
    x: &tch::Tensor,
    packed: &tch::Tensor,
    scale: &tch::Tensor,
    zero_point: &tch::Tensor,
    bias: Option<&tch::Tensor>,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    let bias = bias.map_or(std::ptr::null(), |b| b.as_ptr() as *const std::ffi::c_void);
    check("uint4_linear", unsafe {
        ffi::wl_uint4_linear(
            x.as_ptr() as *const _,
            packed.as_ptr() as *const _,
            scale.as_ptr() as *const _,
            zero_point.as_ptr() as *const _,
            bias,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// What a replay of one attention call needs: its output and softmax statistics, and the fused
/// kernel family that made them (see [`attention_record`]).
pub struct RecordedAttention(std::ptr::NonNull<std::ffi::c_void>);

// SAFETY: the record owns libtorch tensors, which may move between threads like `tch::Tensor`.
unsafe impl Send for RecordedAttention {}

impl Drop for RecordedAttention {
    fn drop(&mut self) {
        // SAFETY: the pointer came from wl_attention_record and is freed once, here.
        unsafe { ffi::wl_attention_free(self.0.as_ptr()) }
    }
}

/// softmax(q kᵀ/√d) v for `q`, `k`, `v` `[B, H, L, d]` (no mask), without a graph, keeping what a
/// later [`attention_replay`] needs when libtorch picks a fused kernel with a backward (cuDNN or
/// flash on CUDA, flash on the CPU); `None` otherwise.
pub fn attention_record(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
) -> Result<(tch::Tensor, Option<RecordedAttention>), HelperError> {
    let (mut record, mut out) = (std::ptr::null_mut(), std::ptr::null_mut());
    check("attention_record", unsafe {
        ffi::wl_attention_record(
            q.as_ptr() as *const _,
            k.as_ptr() as *const _,
            v.as_ptr() as *const _,
            &mut record,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor and `record` is null or owned.
    let out = unsafe { owned_tensor(out) };
    Ok((out, std::ptr::NonNull::new(record).map(RecordedAttention)))
}

/// The recorded attention output as a function of `q`, `k`, `v` (the same values, recomputed):
/// no attention forward runs; the backward is the fused kernel's, from the recorded output and
/// log-sum-exp.
pub fn attention_replay(
    record: &RecordedAttention,
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("attention_replay", unsafe {
        ffi::wl_attention_replay(
            record.0.as_ptr(),
            q.as_ptr() as *const _,
            k.as_ptr() as *const _,
            v.as_ptr() as *const _,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// Whether the fused kernels (CUDA C compiled at run time by NVRTC, launched through the driver)
/// work on CUDA device `device`; the error says why not (no NVRTC, no driver, a compile error).
/// The first call compiles them; later calls are answered from that result.
pub fn fused_kernels(device: i64) -> Result<(), HelperError> {
    match unsafe { ffi::wl_fused_available(device) } {
        1 => Ok(()),
        _ => check("fused_kernels", -1),
    }
}

/// Rotary embedding in one pass: `x` `[B, N, H, D]` bf16 on CUDA, `cos` and `sin_signed` `[N, D]`
/// (any shape of that many elements) bf16, as in the model's `Rope` tables:
/// `x·cos + swap_pairs(x)·sin_signed`, rounded once. Its backward is the inverse rotation, also
/// one pass. Needs [`fused_kernels`].
pub fn fused_rope(
    x: &tch::Tensor,
    cos: &tch::Tensor,
    sin_signed: &tch::Tensor,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("fused_rope", unsafe {
        ffi::wl_fused_rope(
            x.as_ptr() as *const _,
            cos.as_ptr() as *const _,
            sin_signed.as_ptr() as *const _,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// `rope(rms_norm(x)·weight)` in one pass, for self-attention's q and k: `x` `[B, N, D]` bf16 on
/// CUDA with the RMSNorm over all of D (every head of a token), `weight` `[D]` bf16, `cos` and
/// `sin_signed` `[N, head_dim]` bf16 as for [`fused_rope`]. The normalised value is rounded to
/// bf16 before the rotation, as the two separate kernels round. No backward: only for tensors
/// that need no graph (sampling, the checkpointed forward). Needs [`fused_kernels`].
pub fn fused_rms_rope(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    cos: &tch::Tensor,
    sin_signed: &tch::Tensor,
    eps: f64,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("fused_rms_rope", unsafe {
        ffi::wl_fused_rms_rope(
            x.as_ptr() as *const _,
            weight.as_ptr() as *const _,
            cos.as_ptr() as *const _,
            sin_signed.as_ptr() as *const _,
            eps,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// `x + y·gate` in one pass for bf16 CUDA `x`, `y` `[B, N, D]` and a constant `gate` `[1 or B, 1, D]`
/// (any float dtype; used in bf16), rounded once. Needs [`fused_kernels`].
pub fn fused_gated_add(
    x: &tch::Tensor,
    y: &tch::Tensor,
    gate: &tch::Tensor,
) -> Result<tch::Tensor, HelperError> {
    let mut out = std::ptr::null_mut();
    check("fused_gated_add", unsafe {
        ffi::wl_fused_gated_add(
            x.as_ptr() as *const _,
            y.as_ptr() as *const _,
            gate.as_ptr() as *const _,
            &mut out,
        )
    })?;
    // SAFETY: the call succeeded, so `out` holds a fresh tensor.
    Ok(unsafe { owned_tensor(out) })
}

/// Backpropagates `grad` (shaped like `output`) through `output`'s graph into the leaves' `.grad`.
pub fn backward_with_grad(output: &tch::Tensor, grad: &tch::Tensor) -> Result<(), HelperError> {
    check("backward_with_grad", unsafe {
        ffi::wl_backward_with_grad(output.as_ptr() as *const _, grad.as_ptr() as *const _)
    })
}
