"""A Llama-family forward step in plain torch over a preallocated, slot-indexed KV cache.

transformers' generic forward costs milliseconds of Python per step (cache objects, mask
building, hooks), more than the embedded model's own arithmetic at one stream. This step does
only the arithmetic: fused q/k/v and gate/up projections, one rotary table, and a cache of
fixed slots (one per sequence, written in place) so that neither a sequence joining nor one
leaving moves anyone else's keys.

One call runs any mix of spans: decode rows (one new token each, attended together in one
batched attention call) and prefill chunks (many tokens of one prompt, attended causally over
what that slot already holds). All their tokens share the projection matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import Span

# Architectures whose decoder layer is exactly: RMSNorm, GQA attention with rotary positions
# (optional q/k/v bias), RMSNorm, SiLU-gated MLP.
SUPPORTED = {"llama", "mistral", "qwen2"}


def supports(config) -> str | None:
    """None when this step computes the model exactly; else why not (the caller falls back)."""
    if config.model_type not in SUPPORTED:
        return f"architecture {config.model_type!r} is not one of {sorted(SUPPORTED)}"
    if getattr(config, "mlp_bias", False):
        return "MLP biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    window = getattr(config, "sliding_window", None)
    if (
        window
        and getattr(config, "use_sliding_window", True)
        and window < config.max_position_embeddings
    ):
        return "sliding-window attention"
    return None


class Int8Weight:
    """Weight-only int8, one scale per output channel: a quarter of fp32's bytes, which is
    what a memory-bound decode step pays for. Matmuls take bf16 activations
    (torch._weight_int8pack_mm) and return the input's dtype."""

    def __init__(self, w: torch.Tensor):
        scale = w.float().abs().amax(1).clamp(min=1e-8) / 127
        self.q = (w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(torch.bfloat16)
        # Prompt tokens keep the exact weights: prefill is compute-bound, where int8's
        # conversion costs more than it saves (256 tokens: 771 ms int8, 454 ms fp32).
        self.full = w

    def int8(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale).to(x.dtype)


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None, decode_rows: int = 0):
    """x @ w.T (+ bias). With int8 weights the first `decode_rows` rows (generated tokens) use
    int8 and the rest (prompt tokens) the exact weights: a token's numerics depend on its role,
    never on who shares the step."""
    if isinstance(w, Int8Weight):
        if decode_rows >= x.shape[0]:
            out = w.int8(x)
        elif decode_rows == 0:
            out = F.linear(x, w.full)
        else:
            out = torch.cat([w.int8(x[:decode_rows]), F.linear(x[decode_rows:], w.full)])
        return out if bias is None else out + bias
    return F.linear(x, w, bias)


# Prompt tokens a reusing request still prefills, at least, on this step. CPU matmuls give a row the same
# bits whatever the rows beside it only from 12 rows up (measured on this machine's BLAS:
# 1-3, 5-7 and 9-11 rows differ in the last bits, any 12+ match), so a tail of 16 prefills
# exactly as it would inside the whole prompt and greedy output with reuse equals greedy
# output without. Reusing all but the last token diverged after 6 tokens on a repeated
# prompt (bench/: 141 of 142 tokens reused).
MIN_PREFILL = 16


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    ln2: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class TorchLlamaStep:
    min_prefill = MIN_PREFILL
    library = "plain torch"
    uses_torch = True
    verifies_drafts = True  # a draft's span returns a row a token (forward)
    kv_tokens = None  # each slot reserves its own room; no shared pool

    def __init__(self, model, max_slots: int, max_len: int, int8: bool = False):
        cfg = model.config
        inner = model.model
        self.device = inner.embed_tokens.weight.device
        self.dtype = inner.embed_tokens.weight.dtype
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.layers = [self._layer(layer) for layer in inner.layers]
        if int8:
            for layer in self.layers:
                for name in ("qkv", "o", "gate_up", "down"):
                    setattr(layer, name, Int8Weight(getattr(layer, name)))
            self.lm_head = Int8Weight(self.lm_head)
        # The rotary table, from the model's own rotary module (so every rope_scaling type
        # transformers knows is honoured), once for every position.
        positions = torch.arange(max_len, device=self.device)[None]
        probe = torch.empty(0, device=self.device, dtype=self.dtype)
        cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0], sin[0]  # (max_len, head_dim)
        # torch.empty leaves pages untouched until written: only what is used costs memory.
        shape = (len(self.layers), max_slots, self.kv_heads, max_len, self.head_dim)
        self.keys = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.values = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.q_width = self.heads * self.head_dim
        self.kv_width = self.kv_heads * self.head_dim

    @staticmethod
    def _layer(layer) -> _Layer:
        att, mlp = layer.self_attn, layer.mlp
        bias = None
        if att.q_proj.bias is not None:
            bias = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
        return _Layer(
            ln1=layer.input_layernorm.weight,
            qkv=torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).contiguous(),
            qkv_bias=bias,
            o=att.o_proj.weight,
            ln2=layer.post_attention_layernorm.weight,
            gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
            down=mlp.down_proj.weight,
        )

    def release(self, slot: int) -> None:
        """Nothing to give back: a slot's room is its own."""

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy a slot's first `length` positions to another slot (compaction)."""
        self.keys[:, dst, :, :length] = self.keys[:, src, :, :length]
        self.values[:, dst, :, :length] = self.values[:, src, :, :length]

    # Prefix reuse (services/decode/prefix_cache.py): a slot's first positions, copied out
    # and back in. 30 layers x 3 KV heads x 64 x fp32 on the embedded model: 46 KB a token,
    # about 4 ms to copy 500 tokens back, against ~1 s to prefill them.
    def save(self, slot: int, length: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        """A copy of a slot's first `length` positions, and its size in bytes."""
        k = self.keys[:, slot, :, :length].clone()
        v = self.values[:, slot, :, :length].clone()
        return (k, v), k.nbytes + v.nbytes

    def load(self, slot: int, saved, length: int) -> None:
        """Put the first `length` positions of a saved copy into a slot."""
        k, v = saved
        self.keys[:, slot, :, :length] = k[:, :, :length]
        self.values[:, slot, :, :length] = v[:, :, :length]

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Another slot's first `length` positions into `dst` (src keeps its own)."""
        self.move(src, dst, length)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # As transformers does it: normalize in fp32, scale in the model's dtype.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, decode: list[Span], prefill: list[Span]) -> torch.Tensor:
        """Logits (fp32) of the last token of each span (each token of an `every_row` span),
        decode spans first, in span order.

        One-token decode spans are attended together in one batched call: over a view of the
        cache when their slots are consecutive and ascending (the engine keeps them so), else
        over a gathered copy (a sequence between them is verifying a draft). A draft's span
        (`every_row`) attends causally over its slot, as a prefill chunk does, and its rows run
        on the decode weights (int8 where on): its tokens are generated ones, so their
        numerics are a generated token's.
        """
        single = [s for s in decode if not s.every_row]
        chunks = [s for s in decode if s.every_row] + prefill
        n_drafted = len(chunks) - len(prefill)
        ids, pos = [], []
        for s in single:
            ids.append(s.tokens[0])
            pos.append(s.start)
        for s in chunks:
            ids.extend(s.tokens)
            pos.extend(range(s.start, s.start + len(s.tokens)))
        dev = self.device
        ids_t = torch.tensor(ids, device=dev)
        pos_t = torch.tensor(pos, device=dev)
        cos = self.cos[pos_t][:, None, :]  # (tokens, 1, head_dim): broadcast over heads
        sin = self.sin[pos_t][:, None, :]
        nd = len(single)
        # Rows on the decode weights: the one-token spans and the drafts' spans, first in x.
        generated = nd + sum(len(s.tokens) for s in chunks[:n_drafted])
        if nd:
            slot_ids = [s.slot for s in single]
            first = slot_ids[0]
            slots = torch.tensor(slot_ids, device=dev)
            dec_rows: slice | torch.Tensor = (
                slice(first, first + nd) if slot_ids == list(range(first, first + nd)) else slots
            )
            dec_pos = pos_t[:nd]
            dec_len = max(s.start for s in single) + 1
            # (rows, 1, 1, len): each row sees its own positions 0..start only.
            dec_mask = (torch.arange(dec_len, device=dev)[None, :] <= dec_pos[:, None])[
                :, None, None
            ]
        chunk_masks = []
        for s in chunks:
            end = s.start + len(s.tokens)
            cols = torch.arange(end, device=dev)[None, :]
            rows = torch.arange(s.start, end, device=dev)[:, None]
            chunk_masks.append(cols <= rows)  # causal, offset by what the slot already holds

        x = self.embed[ids_t]
        qw, kw = self.q_width, self.kv_width
        for li, layer in enumerate(self.layers):
            h = self._norm(x, layer.ln1)
            qkv = linear(h, layer.qkv, layer.qkv_bias, generated)
            q = qkv[:, :qw].view(-1, self.heads, self.head_dim)
            k = qkv[:, qw : qw + kw].view(-1, self.kv_heads, self.head_dim)
            v = qkv[:, qw + kw :].view(-1, self.kv_heads, self.head_dim)
            q = self._rotate(q, cos, sin)
            k = self._rotate(k, cos, sin)
            kc, vc = self.keys[li], self.values[li]
            outs = []
            if nd:
                kc[slots, :, dec_pos] = k[:nd]
                vc[slots, :, dec_pos] = v[:nd]
                att = F.scaled_dot_product_attention(
                    q[:nd, :, None, :],
                    kc[dec_rows, :, :dec_len],
                    vc[dec_rows, :, :dec_len],
                    attn_mask=dec_mask,
                    enable_gqa=True,
                )
                outs.append(att.reshape(nd, qw))
            at = nd
            for s, mask in zip(chunks, chunk_masks):
                n, end = len(s.tokens), s.start + len(s.tokens)
                kc[s.slot, :, s.start : end] = k[at : at + n].transpose(0, 1)
                vc[s.slot, :, s.start : end] = v[at : at + n].transpose(0, 1)
                att = F.scaled_dot_product_attention(
                    q[at : at + n].transpose(0, 1)[None],
                    kc[s.slot : s.slot + 1, :, :end],
                    vc[s.slot : s.slot + 1, :, :end],
                    attn_mask=mask,
                    enable_gqa=True,
                )
                outs.append(att[0].transpose(0, 1).reshape(n, qw))
                at += n
            att = outs[0] if len(outs) == 1 else torch.cat(outs)
            x = x + linear(att, layer.o, decode_rows=generated)
            h = self._norm(x, layer.ln2)
            gate, up = linear(h, layer.gate_up, decode_rows=generated).chunk(2, dim=-1)
            x = x + linear(F.silu(gate) * up, layer.down, decode_rows=generated)
        # The rows that need logits, in the contract's order (decode spans as given, then
        # prefill): x holds the one-token spans first, then the drafts, then the prefills.
        wanted: list[int] = []
        single_row, at = 0, nd
        for s in decode:  # the drafts sit in x in decode order, after the one-token rows
            if s.every_row:
                wanted.extend(range(at, at + len(s.tokens)))
                at += len(s.tokens)
            else:
                wanted.append(single_row)
                single_row += 1
        for s in prefill:
            at += len(s.tokens)
            wanted.append(at - 1)
        x = x[wanted] if wanted != list(range(x.shape[0])) else x
        return linear(
            self._norm(x, self.norm), self.lm_head, decode_rows=len(wanted) - len(prefill)
        ).float()
