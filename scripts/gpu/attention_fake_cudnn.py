"""A CPU stand-in for cudnn-frontend's SDPA graphs, for `attention.py --dry-run --fake-frontend` only.

It checks what attention.py hands the graph API (uids bound exactly once, every declared tensor present
in the variant pack with the declared dtype, shape and strides) and computes what the real graphs
compute, in fp32 (the e4m3 inputs descaled, the outputs scaled and cast, the amax outputs), so that the
fp8 calibration, dequantisation and error code of attention.py runs end to end without a GPU. It says
nothing about the real API beyond the names attention.py calls, which were read off cudnn-frontend
1.32.0's sources (cudnn/_pygraph.py, test/python/sdpa/fp8.py).
"""

import enum
import sys
import types

import torch
import torch.nn.functional as F


class DataType(enum.Enum):
    FLOAT = torch.float32
    BFLOAT16 = torch.bfloat16
    FP8_E4M3 = torch.float8_e4m3fn


class HeurMode(enum.Enum):
    A = 0
    FALLBACK = 1


class FakeTensor:
    def __init__(self, uid=None, dim=None, stride=None, data_type=None, is_input=True):
        self.uid, self.dim, self.stride, self.data_type = uid, dim, stride, data_type
        self.is_input, self.is_output = is_input, False

    def set_uid(self, uid):
        self.uid = uid
        return self

    def set_output(self, value):
        self.is_output = value
        return self

    def set_dim(self, dim):
        self.dim = tuple(dim)
        return self

    def set_stride(self, stride):
        self.stride = tuple(stride)
        return self

    def set_data_type(self, data_type):
        self.data_type = data_type
        return self


class FakeGraph:
    def __init__(self, io_data_type=None, intermediate_data_type=None, compute_data_type=None, handle=None):
        assert isinstance(io_data_type, DataType) and intermediate_data_type is DataType.FLOAT
        assert handle is not None, "attention.py builds every graph on its handle"
        self.tensors, self.node, self.steps = [], None, []

    def tensor(self, uid, dim, stride, data_type):
        t = FakeTensor(uid, tuple(dim), tuple(stride), data_type)
        self.tensors.append(t)
        return t

    def _outputs(self, n):
        outs = [FakeTensor(is_input=False) for _ in range(n)]
        self.tensors.extend(outs)
        return outs

    def _op(self, kind, n_out, kwargs):
        assert self.node is None, "one SDPA node per graph"
        for key, value in kwargs.items():
            if isinstance(value, FakeTensor):
                assert value in self.tensors, f"{key} is not a tensor of this graph"
        self.node = (kind, kwargs, self._outputs(n_out))
        return list(self.node[2])

    def sdpa(self, q, k, v, generate_stats, attn_scale, use_causal_mask, name):
        return self._op("bf16_fwd", 2, dict(q=q, k=k, v=v, attn_scale=attn_scale))

    def sdpa_backward(self, q, k, v, o, dO, stats, attn_scale, name):
        return self._op("bf16_bwd", 3, dict(q=q, k=k, v=v, o=o, dO=dO, stats=stats, attn_scale=attn_scale))

    def sdpa_fp8(self, q, k, v, descale_q, descale_k, descale_v, descale_s, scale_s, scale_o,
                 generate_stats, attn_scale, use_causal_mask, name):  # fmt: skip
        kw = dict(q=q, k=k, v=v, descale_q=descale_q, descale_k=descale_k, descale_v=descale_v, descale_s=descale_s,
                  scale_s=scale_s, scale_o=scale_o, attn_scale=attn_scale)  # fmt: skip
        return self._op("fp8_fwd", 4, kw)

    def sdpa_fp8_backward(self, q, k, v, o, dO, stats, descale_q, descale_k, descale_v, descale_o, descale_dO,
                          descale_s, descale_dP, scale_s, scale_dQ, scale_dK, scale_dV, scale_dP, attn_scale,
                          use_padding_mask, name):  # fmt: skip
        kw = dict(q=q, k=k, v=v, o=o, dO=dO, descale_q=descale_q, descale_k=descale_k, descale_v=descale_v,
                  descale_o=descale_o, descale_dO=descale_dO, scale_dQ=scale_dQ, scale_dK=scale_dK,
                  scale_dV=scale_dV, scale_dP=scale_dP, attn_scale=attn_scale)  # fmt: skip
        return self._op("fp8_bwd", 7, kw)

    def validate(self):
        self.steps.append("validate")
        kind, _, outs = self.node
        if kind == "fp8_fwd" and self.io_out_type(outs[0]) is not DataType.FP8_E4M3:
            # What cudnn-frontend 1.32 says on Hopper (sdpa_support_surface.h), to exercise the fallback.
            raise RuntimeError("sdpa fp8 forward with HALF/BFLOAT16 output is only supported on Blackwell")
        if kind == "fp8_bwd" and self.io_out_type(outs[0]) is not DataType.FP8_E4M3:
            raise RuntimeError("sdpa fp8 backward with HALF/BFLOAT16 output is only supported on Blackwell")
        uids = [t.uid for t in self.tensors if t.is_input or t.is_output]
        assert None not in uids and len(uids) == len(set(uids)), f"uids not unique: {uids}"

    @staticmethod
    def io_out_type(t):
        return t.data_type

    def build_operation_graph(self):
        self.steps.append("build_operation_graph")

    def create_execution_plans(self, modes):
        assert all(isinstance(m, HeurMode) for m in modes)
        self.steps.append("create_execution_plans")

    def check_support(self):
        self.steps.append("check_support")

    def build_plans(self):
        assert self.steps == ["validate", "build_operation_graph", "create_execution_plans", "check_support"]
        self.steps.append("build_plans")

    selected_engine = None

    def get_workspace_size(self):
        return 256

    def _view(self, pack, t):
        assert t.uid in pack, f"uid {t.uid} missing from the variant pack"
        data = pack[t.uid]
        assert data.dtype == t.data_type.value, f"uid {t.uid}: {data.dtype} bound, {t.data_type} declared"
        assert data.is_contiguous() and data.numel() == torch.Size(t.dim).numel(), f"uid {t.uid}: shape {tuple(data.shape)}"
        return data.as_strided(t.dim, t.stride)

    def execute(self, pack, workspace, handle):
        assert self.steps[-1] == "build_plans" and workspace.dtype == torch.uint8 and handle is not None
        declared = {t.uid for t in self.tensors if t.is_input and t.uid is not None} | {t.uid for t in self.tensors if t.is_output}
        assert set(pack) == declared, f"variant pack uids {sorted(pack)} != declared {sorted(declared)}"
        kind, kw, outs = self.node

        def val(name):
            return self._view(pack, kw[name]).float()

        def s(name):
            return self._view(pack, kw[name]).float().reshape(())

        def write(t, x):
            if t.is_output:
                self._view(pack, t).copy_(x.to(t.data_type.value))

        fp8 = kind.startswith("fp8")
        q, k, v = (val(n) * (s(f"descale_{n}") if fp8 else 1.0) for n in ("q", "k", "v"))
        scale = kw["attn_scale"]
        if kind.endswith("fwd"):
            o = F.scaled_dot_product_attention(q, k, v, scale=scale)
            write(outs[1], torch.logsumexp((q @ k.transpose(-1, -2)) * scale, dim=-1, keepdim=True))
            if fp8:
                write(outs[3], o.abs().amax().reshape(1, 1, 1, 1))
                o = o * s("scale_o")
            write(outs[0], o)
            return
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        d_out = val("dO") * (s("descale_dO") if fp8 else 1.0)
        grads = torch.autograd.grad(F.scaled_dot_product_attention(qg, kg, vg, scale=scale), (qg, kg, vg), d_out)
        if fp8:
            for t, g in zip(outs[3:6], grads):
                write(t, g.abs().amax().reshape(1, 1, 1, 1))
            write(outs[6], (d_out @ v.transpose(-1, -2)).abs().amax().reshape(1, 1, 1, 1))
            grads = [g * s(n) for g, n in zip(grads, ("scale_dQ", "scale_dK", "scale_dV"))]
        for t, g in zip(outs[:3], grads):
            write(t, g)


class Handle:
    pass


def install():
    """Put the stand-in at sys.modules['cudnn'] and make torch.cuda's stream/sync calls no-ops on the CPU."""
    module = types.ModuleType("cudnn")
    module.__version__ = "fake (CPU stand-in)"
    module.data_type = DataType
    module.heur_mode = HeurMode
    module.pygraph = FakeGraph
    module.backend_version_string = lambda: "none (CPU stand-in)"
    module.create_handle = Handle
    module.set_stream = lambda handle, stream: None
    module.cudnnGraphNotSupportedError = RuntimeError
    sys.modules["cudnn"] = module
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_stream = lambda *a, **k: types.SimpleNamespace(cuda_stream=0)
    return module
