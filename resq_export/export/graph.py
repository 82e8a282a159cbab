"""Build the decoder ONNX graph straight from a loaded artifact (no tracing): one graph for prefill
and decode, inputs input_ids, position_ids and the past KV of every layer; outputs logits and the
present KV. Custom ops carry their standard-op bodies as model-local functions (ORT flavour)."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper

from ..artifact import linear_tensors
from ..config import QuantConfig
from ..decoder import Decoder, FloatLinear, Layer, TiedHead
from ..reference import QuantLinear
from .builder import DOUBLE, FLOAT, FLOAT16, INT8, INT32, INT64, OPSET, UINT8, Builder, ExternalData
from .functions import (
    AttentionSignature, LinearSignature, attention_function, causal_attention, filled_rows, hadamard_function,
    leading_rows, linear_function, write_rows,
)
from .kernel_layout import PaddedLayout, prepare_lqer_a, prepare_weights
from .spec import CACHE_DIM, DOMAIN, PAST_LENGTH, PREPARED_LINEAR, load_spec, op_spec, op_version, present_inputs

IR_VERSION = 10  # onnx 1.23 writes 14 by default, which ONNX Runtime rejects
KV_TENSORS = ("codes", "scales", "zeros")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _spec_inputs(op: str) -> list[str]:
    return [i["name"] for i in op_spec(op)["inputs"]]


class GraphExporter:
    """float_islands: compute the float islands of decoder.py (norms, RoPE's angles, silu, attention)
    in float64 like the reference executor, so that ONNX Runtime reproduces its quantiser inputs bit
    for bit. Off for float models (nothing downstream quantises) and for the TensorRT flavour (the
    GPU computes those parts in its own precision).

    tensorrt: the TensorRT flavour (writer.tensorrt_flavour says what differs). external: where the
    initializers' bytes go as they are made (None: into the graph)."""

    def __init__(self, model: Decoder, quant: QuantConfig, float_islands: bool, tensorrt: bool = False,
                 external: ExternalData | None = None):
        self.model, self.quant, self.cfg = model, quant, model.config
        self.islands = float_islands
        self.tensorrt = tensorrt
        self.b = Builder(prefix="/model", inline_constants=False, external=external)
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    # --- custom op nodes ------------------------------------------------------------------------
    def _custom(self, b: Builder, op: str, inputs: list[str], n_out: int, overload: str, fn, attrs: dict,
                outputs: list[str] | None = None, name: str | None = None):
        """A resq node. ORT flavour: with its function body (selected by overload), absent optional
        inputs "" where later ones follow. TensorRT flavour: no body, absent inputs left out (the
        parser would make "" a null tensor of no type; the plugins find inputs by attributes and count)."""
        if self.tensorrt:
            inputs, overload = [i for i in inputs if i], ""
        elif (op, overload) not in self.functions:
            self.functions[(op, overload)] = fn()
        while inputs and inputs[-1] == "":
            inputs.pop()
        return b.op(op, *inputs, outputs=outputs or n_out, name=name or op, domain=DOMAIN, overload=overload,
                    plugin_namespace=load_spec()["plugin_namespace"], plugin_version=str(op_version(op)), **attrs)

    def linear(self, b: Builder, x: str, lin: FloatLinear | QuantLinear, name: str) -> str:
        init = f"model.{name}"
        if isinstance(lin, FloatLinear):
            y = b.op("MatMul", x, self.b.initializer(f"{init}.weight_t", _np(lin.weight.T)), name="MatMul")
            return y if lin.bias is None else b.op("Add", y, self.b.initializer(f"{init}.bias", _np(lin.bias)))
        lay = lin.layout
        n_low_groups = lay.op_parts(name).low_groups
        sig = LinearSignature(
            k=lin.in_features, k_low=lay.low_channels, n=lin.out_features, low_groups=n_low_groups,
            high_groups=len(lay.w_bits) - n_low_groups, a_bits_low=lay.a_bits[0], a_bits_high=lay.a_bits[-1],
            lqer_rank=0 if lin.lqer is None else lin.lqer.a_q.shape[0], has_bias=lin.bias is not None,
        )
        t = {k: _np(v) for k, v in linear_tensors("", lin).items()}  # the artifact's storage layout, packing included
        attrs = dict(low_groups=sig.low_groups, high_groups=sig.high_groups, a_bits_low=sig.a_bits_low,
                     a_bits_high=sig.a_bits_high, lqer_rank=sig.lqer_rank)
        op = "ResQMixedLinear"
        if self.tensorrt:  # only the inputs the spec's presence rule lists, as the plugin reads them
            op, t = PREPARED_LINEAR, _prepared_tensors(sig, t)
            attrs["k_low"] = sig.k_low
            listed = present_inputs(op, attrs)[1:]
            if listed != [k for k in _spec_inputs(op)[1:] if t.get(k) is not None]:
                raise AssertionError(f"{name}: ops.json's present_if rule and the exported tensors disagree")
            names = [x] + [self.b.initializer(f"{init}.{k}", t[k]) for k in listed]
        else:
            names = [x] + [self.b.initializer(f"{init}.{k}", t[k]) if t.get(k) is not None else ""
                           for k in _spec_inputs(op)[1:]]
        return self._custom(b, op, names, 1, sig.overload, lambda: linear_function(sig), attrs, name="ResQMixedLinear")

    # --- graph --------------------------------------------------------------------------------------
    def _io_type(self, dtype: int) -> int:
        # uint8 graph I/O (only the KV codes and zero points) is int8 with the same bytes for TensorRT,
        # which supports neither uint8 plugin I/O nor uint8 network I/O outside Cast/Identity layers
        return INT8 if self.tensorrt and dtype == UINT8 else dtype

    def _input(self, name: str, dtype: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, self._io_type(dtype), shape))
        return name

    def _output(self, name: str, dtype: int, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, self._io_type(dtype), shape))

    @property
    def _float(self) -> tuple[int, type]:
        return (DOUBLE, np.float64) if self.islands else (FLOAT, np.float32)

    def _enter_island(self, b: Builder, x: str) -> str:
        return b.f64(x) if self.islands else x

    def _leave_island(self, b: Builder, x: str) -> str:
        return b.f32(x) if self.islands else x

    def rms_norm(self, b: Builder, x: str, weight: str | None = None) -> str:
        """RMSNorm over the last axis; weight (an initializer, Qwen3's per-head q/k norms) multiplied
        inside the island as the Decoder does. The residual-stream norms have theirs folded away."""
        x = self._enter_island(b, x)
        ms = b.op("ReduceMean", b.op("Mul", x, x), b.i64(-1), keepdims=1)
        rms = b.op("Sqrt", b.op("Add", ms, b.const(self.cfg.rms_norm_eps, self._float[1])))
        y = b.op("Mul", x, b.op("Reciprocal", rms))
        return self._leave_island(b, y if weight is None else b.op("Mul", y, self._enter_island(b, weight)))

    def rope(self, positions: str) -> tuple[str, str]:
        """cos, sin [B, 1, S, rope_dim]. LongRoPE: both frequency sets are in the graph and a call
        takes the long one when its last position is at or past the original context (the Decoder's
        rule, per call); YaRN's and LongRoPE's attention factor scales both."""
        b = self.b.scope("/model/rope")
        dtype, np_dtype = self._float
        m = self.model
        inv_freq = self.b.initializer("model.rope.inv_freq", _np(m.inv_freq.float()).astype(np_dtype))
        pos = b.op("Cast", positions, to=dtype)
        if m.long_after is not None:
            # the last position, compared in the float type the angles are formed in (exact below 2^24)
            long = self.b.initializer("model.rope.long_inv_freq", _np(m.long_inv_freq.float()).astype(np_dtype))
            last = b.op("ReduceMax", pos, keepdims=0)
            inv_freq = b.op("Where", b.op("Greater", last, b.const(m.long_after - 1, np_dtype)), long, inv_freq)
        freqs = b.op("Mul", b.op("Unsqueeze", pos, b.i64(-1)), inv_freq)
        emb = b.op("Unsqueeze", b.op("Concat", freqs, freqs, axis=-1), b.i64(1))  # [B, 1, S, D]
        cos, sin = b.op("Cos", emb), b.op("Sin", emb)
        if m.rope_scale != 1.0:
            scale = b.const(m.rope_scale, np_dtype)
            cos, sin = b.op("Mul", cos, scale), b.op("Mul", sin, scale)
        return self._leave_island(b, cos), self._leave_island(b, sin)

    def apply_rope(self, b: Builder, x: str, cos: str, sin: str) -> str:
        """RoPE on the first rope_dim channels of each head, the rest (partial rotary) concatenated back."""
        dim, hd = self.cfg.rope_dim, self.cfg.head_dim
        kept = None
        if dim < hd:
            x, kept = b.op("Split", x, b.i64(dim, hd - dim), axis=-1, outputs=2)
        first, second = b.op("Split", x, axis=-1, num_outputs=2, outputs=2)
        rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
        y = b.op("Add", b.op("Mul", x, cos), b.op("Mul", rotated, sin))
        return y if kept is None else b.op("Concat", y, kept, axis=-1)

    def attention(self, b: Builder, i: int, layer: Layer, q: str, k: str, v: str) -> str:
        """The past and present of a layer are one fixed-capacity buffer each (the op contract's
        in-place update): same dims, the new rows written at past_length."""
        cfg = self.cfg
        kv_dims = ["batch", cfg.num_kv_heads, CACHE_DIM]
        kvq = self.model.kv_quantizer
        if kvq is None:
            caches = []
            for kind, new in (("key", k), ("value", v)):
                past = self._input(f"past.{i}.{kind}", FLOAT, kv_dims + [cfg.head_dim])
                self._output(f"present.{i}.{kind}", FLOAT, kv_dims + [cfg.head_dim])
                caches.append((past, f"present.{i}.{kind}"))
            if layer.key_rotation is not None:
                rot = self.b.initializer(f"model.layers.{i}.attn.key_rotation", _np(layer.key_rotation))
                rot = self._enter_island(b, rot)
                q, k = (self._leave_island(b, b.op("MatMul", self._enter_island(b, x), rot)) for x in (q, k))
            rows = filled_rows(b, self.past_length, k)
            keys, values = (leading_rows(b, write_rows(b, past, new, self.past_length, present), rows)
                            for (past, present), new in zip(caches, (k, v)))
            return causal_attention(b, q, keys, values, self.past_length, cfg.num_heads, cfg.num_kv_heads,
                                    cfg.head_dim, float64=self.islands)
        high = kvq.group_sizes[1] if len(kvq.group_sizes) > 1 else 0
        sig = AttentionSignature(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, high, kvq.bits[0],
                                 kvq.bits[-1] if high else 8, layer.key_rotation is not None)
        groups = len(kvq.group_sizes)
        inputs = [q, k, v]
        outputs = [b.prefix + "/attn_out"]
        for kind in ("key", "value"):
            for t, dtype, last in (("codes", UINT8, kvq.row_bytes), ("scales", FLOAT, groups), ("zeros", UINT8, groups)):
                inputs.append(self._input(f"past.{i}.{kind}_{t}", dtype, kv_dims + [last]))
                outputs.append(f"present.{i}.{kind}_{t}")
                self._output(outputs[-1], dtype, kv_dims + [last])
        inputs.append(self.past_length)
        if layer.key_rotation is not None:
            inputs.append(self.b.initializer(f"model.layers.{i}.attn.key_rotation", _np(layer.key_rotation)))
        attrs = dict(num_heads=sig.num_heads, num_kv_heads=sig.num_kv_heads, head_dim=sig.head_dim,
                     high_channels=sig.high_channels, kv_bits=sig.kv_bits, high_bits=sig.high_bits)
        return self._custom(b, "ResQKVCacheAttention", inputs, 7, sig.overload,
                            lambda: attention_function(sig), attrs, outputs=outputs)[0]

    def layer(self, i: int, layer: Layer, h: str, cos: str, sin: str) -> str:
        cfg = self.cfg
        b = self.b.scope(f"/model/layers.{i}/attn")
        qkv = self.linear(b.scope(b.prefix + "/qkv_proj"), self.rms_norm(b, h), layer.qkv, f"layers.{i}.attn.qkv_proj")
        nq, nkv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        q, k, v = b.op("Split", qkv, b.i64(nq, nkv, nkv), axis=-1, outputs=3)

        def heads(x: str, n: int) -> str:
            return b.op("Transpose", b.op("Reshape", x, b.i64(0, 0, n, cfg.head_dim)), perm=[0, 2, 1, 3])

        q, k = heads(q, cfg.num_heads), heads(k, cfg.num_kv_heads)
        if layer.q_norm is not None:  # Qwen3: per-head RMSNorm before RoPE, a float island
            q = self.rms_norm(b, q, self.b.initializer(f"model.layers.{i}.attn.q_norm.weight", _np(layer.q_norm)))
            k = self.rms_norm(b, k, self.b.initializer(f"model.layers.{i}.attn.k_norm.weight", _np(layer.k_norm)))
        q = self.apply_rope(b, q, cos, sin)
        k = self.apply_rope(b, k, cos, sin)
        attn = self.attention(b, i, layer, q, k, heads(v, cfg.num_kv_heads))
        if layer.o_input_perm is not None:
            perm = self.b.initializer(f"model.layers.{i}.attn.o_input_perm", _np(layer.o_input_perm))
            attn = b.op("Gather", attn, perm, axis=2)
        h = b.op("Add", h, self.linear(b.scope(b.prefix + "/o_proj"), attn, layer.o, f"layers.{i}.attn.o_proj"))
        b = self.b.scope(f"/model/layers.{i}/mlp")
        gu = self.linear(b.scope(b.prefix + "/gate_up_proj"), self.rms_norm(b, h), layer.gate_up,
                         f"layers.{i}.mlp.gate_up_proj")
        gate, up = b.op("Split", gu, axis=-1, num_outputs=2, outputs=2)
        gate, up = self._enter_island(b, gate), self._enter_island(b, up)
        act = self._leave_island(b, b.op("Mul", b.op("Mul", gate, b.op("Sigmoid", gate)), up))
        if layer.down_rotation is not None:
            n, a = cfg.intermediate_size, layer.down_rotation.shape[0]
            left = self.b.initializer("model.down_rotation.left", _np(layer.down_rotation)) if i == 0 \
                else "model.down_rotation.left"
            act = self._custom(b.scope(b.prefix + "/down_hadamard"), "ResQHadamard", [act, left], 1,
                               f"n{n}_a{a}", lambda: hadamard_function(n, a), {})
        return b.op("Add", h, self.linear(b.scope(b.prefix + "/down_proj"), act, layer.down,
                                          f"layers.{i}.mlp.down_proj"))

    def build(self) -> onnx.ModelProto:
        m, cfg = self.model, self.cfg
        ids = self._input("input_ids", INT64, ["batch", "sequence"])
        positions = self._input("position_ids", INT64, ["batch", "sequence"])
        self.past_length = self._input(PAST_LENGTH, INT32, ["batch"])
        embed_dtype = torch.float16 if m.embed.dtype == torch.float16 else torch.float32
        embed = self.b.initializer("model.embed_tokens.weight", _np(m.embed.to(embed_dtype)))
        h = self.b.scope("/model/embed_tokens").op("Cast", self.b.op("Gather", embed, ids, axis=0), to=FLOAT)
        cos, sin = self.rope(positions)
        for i, layer in enumerate(m.layers):
            h = self.layer(i, layer, h, cos, sin)
        b = self.b.scope("/model/lm_head")
        x = self.rms_norm(b, h)
        if isinstance(m.lm_head, TiedHead):  # the embedding stored once, read by the head too
            head = embed
            factor_t = _symmetric(m.lm_head.factor.T) if self.tensorrt else m.lm_head.factor.T
            x = b.op("MatMul", x, self.b.initializer("lm_head.factor_t", _np(factor_t)))
        else:
            head = self.b.initializer("lm_head.weight", _np(m.lm_head.weight.to(embed_dtype)))
        # Gemm with transB reads the [vocab, hidden] weight as it is stored: a Transpose (or a float32
        # Cast) of it is a vocab x hidden copy per call wherever the runtime does not fold it (ONNX
        # Runtime folds up to 1 GB: not at 8B, where it is 2.1 GB)
        half_head = self.tensorrt and embed_dtype != torch.float32
        if embed_dtype != torch.float32 and not half_head:
            head = b.op("Cast", head, to=FLOAT)
        lead = b.op("Slice", b.op("Shape", x), b.i64(0), b.i64(2), b.i64(0))  # [batch, sequence]
        x = b.op("Reshape", x, b.i64(-1, cfg.hidden_size))
        if half_head:
            # TensorRT folds a Cast of the table into new FP32 constants, one per layout its kernels
            # want (the tied table stored three times, issue 34): the head runs on the fp16 table as
            # stored, the one copy the Gather reads, with fp16 x and logits (docs/ops.md, the LM head)
            logits = b.op("Cast", b.op("Gemm", b.op("Cast", x, to=FLOAT16), head, transB=1), to=FLOAT)
        else:
            logits = b.op("Gemm", x, head, transB=1)
        b.op("Reshape", logits, b.op("Concat", lead, b.i64(cfg.vocab_size), axis=0), outputs=["logits"])
        self._output("logits", FLOAT, ["batch", "sequence", cfg.vocab_size])
        # the outputs in a stable order: logits first, then the present KV layer by layer
        self.outputs.sort(key=lambda v: (v.name != "logits",))
        graph = helper.make_graph(self.b.nodes, "resq_decoder", self.inputs, self.outputs, self.b.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, load_spec()["spec_version"])]
        model = helper.make_model(graph, opset_imports=opsets, functions=list(self.functions.values()),
                                  ir_version=IR_VERSION, producer_name="resq-export")
        return model


def _symmetric(f: torch.Tensor) -> torch.Tensor:
    """A tied head's factor F = U_A^T diag(final_norm) U_A is symmetric, and its float32 rounding
    nearly always exactly so. TensorRT holds an FP32 MatMul's constant as given and transposed, in
    one blob where the two are the same bytes (issue 34: +H*H*4 bytes for an F that is not): the
    TensorRT flavour writes (F + F^T) / 2 (F itself where it is exactly symmetric; else within a
    rounding of it). A factor that is not symmetric up to rounding is written as it is."""
    sym = 0.5 * (f + f.T)  # exactly symmetric: float addition commutes
    return sym if (sym - f).abs().max() <= 1e-6 * f.abs().max() else f


def is_quantised(model: Decoder) -> bool:
    return model.kv_quantizer is not None or any(isinstance(lay.qkv, QuantLinear) for lay in model.layers)


def build_onnx(model: Decoder, quant: QuantConfig, external: ExternalData | None = None) -> onnx.ModelProto:
    """The ORT flavour; float islands on for quantised models."""
    return GraphExporter(model, quant, is_quantised(model), external=external).build()


def _prepared_tensors(sig: LinearSignature, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A linear's contract tensors -> ResQMixedLinearPrepared's: weights in the GEMM's layout (padded
    groups, code sums) and always a bias (zeros where the model has none)."""
    lay = PaddedLayout(sig.k, sig.k_low, sig.low_groups, sig.high_groups)
    out = {k: t.get(k) for k in ("wscale", "lqer_a_scale", "lqer_b", "lqer_b_scale")}
    w_low, out["weight_high"], out["weight_sums"] = prepare_weights(lay, t.get("qweight_low"), t.get("qweight_high"))
    out["weight_low"] = w_low if sig.low_groups else None
    out["bias"] = t["bias"] if t.get("bias") is not None else np.zeros(sig.n, np.float32)
    if sig.lqer_rank:
        out["lqer_a"], out["lqer_a_sums"] = prepare_lqer_a(lay, t["lqer_a"])
    return out
