#!/usr/bin/env python3
"""PyTorch float32 eager reference for `vlm bench --torch` (not part of the library).

Runs the same cases as models/bench at the same dimensions with random weights, with torch's
default CPU threads, and prints one JSON line: {"info": "...", "cases": [{"name", "ms"}]}.
Decoder layers are written out with plain torch ops in the HF v4.40 eager form (RMSNorm, rotary,
GQA via repeat_kv, softmax in float32, SwiGLU) so that no transformers install is needed.
"""
import json
import math
import os
import statistics
import sys
import time

import torch

torch.manual_seed(0)
# Same cores as ours (Debian's torch may default to 1 thread): VLM_TORCH_THREADS overrides.
torch.set_num_threads(int(os.environ.get("VLM_TORCH_THREADS", os.cpu_count() or 1)))

QWEN2 = dict(E=3584, H=28, KV=4, I=18944, V=151666, bias=True)
MISTRAL = dict(E=4096, H=32, KV=8, I=14336, V=32000, bias=False)


def rms(x, w, eps=1e-6):
    v = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(v + eps))


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


class Layer:
    def __init__(self, c):
        E, H, KV, I = c["E"], c["H"], c["KV"], c["I"]
        D = E // H
        self.c, self.D = c, D
        lin = lambda o, i, b: (torch.randn(o, i) * 0.02, torch.zeros(o) if b else None)
        self.q = lin(H * D, E, c["bias"]); self.k = lin(KV * D, E, c["bias"]); self.v = lin(KV * D, E, c["bias"])
        self.o = lin(E, H * D, False)
        self.g = lin(I, E, False); self.u = lin(I, E, False); self.d = lin(E, I, False)
        self.n1 = torch.ones(E); self.n2 = torch.ones(E)
        inv = 1.0 / (1e6 ** (torch.arange(0, D, 2).float() / D))
        t = torch.arange(4096).float()
        emb = torch.cat([torch.outer(t, inv)] * 2, -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    @staticmethod
    def lin(x, wb):
        return torch.nn.functional.linear(x, wb[0], wb[1])

    def __call__(self, x, past_k, past_v):
        c, D = self.c, self.D
        B, T, E = x.shape
        P = 0 if past_k is None else past_k.shape[2]
        h = rms(x, self.n1)
        q = self.lin(h, self.q).view(B, T, c["H"], D).transpose(1, 2)
        k = self.lin(h, self.k).view(B, T, c["KV"], D).transpose(1, 2)
        v = self.lin(h, self.v).view(B, T, c["KV"], D).transpose(1, 2)
        cos, sin = self.cos[P:P + T], self.sin[P:P + T]
        q = q * cos + rot_half(q) * sin
        k = k * cos + rot_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], 2); v = torch.cat([past_v, v], 2)
        g = c["H"] // c["KV"]
        k = k.repeat_interleave(g, 1); v = v.repeat_interleave(g, 1)
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
        S = P + T
        if T > 1:
            mask = torch.full((T, S), torch.finfo(torch.float32).min).triu(P + 1)
            s = s + mask
        a = torch.softmax(s, -1, dtype=torch.float32)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, T, E)
        x = x + self.lin(o, self.o)
        h = rms(x, self.n2)
        return x + self.lin(torch.nn.functional.silu(self.lin(h, self.g)) * self.lin(h, self.u), self.d)


class VitLayer:
    """Pre-LN ViT encoder layer (HF CLIPEncoderLayer / SiglipEncoderLayer), eager attention."""

    def __init__(self, E, H, I, act):
        self.E, self.H, self.act = E, H, act
        w = lambda o, i: (torch.randn(o, i) * 0.02, torch.zeros(o))
        self.q, self.k, self.v, self.o = w(E, E), w(E, E), w(E, E), w(E, E)
        self.f1, self.f2 = w(I, E), w(E, I)
        self.ln1 = (torch.ones(E), torch.zeros(E)); self.ln2 = (torch.ones(E), torch.zeros(E))

    def __call__(self, x):
        B, N, E = x.shape
        H, D = self.H, E // self.H
        lin = torch.nn.functional.linear
        h = torch.nn.functional.layer_norm(x, (E,), *self.ln1, eps=1e-6)
        sp = lambda t: t.view(B, N, H, D).transpose(1, 2)
        q, k, v = sp(lin(h, *self.q)), sp(lin(h, *self.k)), sp(lin(h, *self.v))
        a = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * D ** -0.5, -1, dtype=torch.float32)
        x = x + lin(torch.matmul(a, v).transpose(1, 2).reshape(B, N, E), *self.o)
        h = torch.nn.functional.layer_norm(x, (E,), *self.ln2, eps=1e-6)
        h = lin(h, *self.f1)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else torch.nn.functional.gelu(h, approximate="tanh")
        return x + lin(h, *self.f2)


def resampler(E=3584, H=28, Q=64, KV=1152, L=1024):
    """MiniCPM-V Resampler forward for one image (kv_proj, LNs, nn.MultiheadAttention, proj)."""
    query = torch.randn(Q, E) * 0.02
    kv = torch.randn(E, KV) * 0.02
    attn = torch.nn.MultiheadAttention(E, H)
    proj = torch.randn(E, E) * 0.02
    pos = torch.randn(L, 1, E)
    x = torch.randn(1, L, KV)
    ln = lambda t: torch.nn.functional.layer_norm(t, (E,), eps=1e-6)

    def run():
        y = ln(torch.nn.functional.linear(x, kv)).permute(1, 0, 2)  # [L, 1, E]
        q = ln(query).unsqueeze(1)
        out = attn(q, y + pos, y, need_weights=False)[0]
        return ln(out.permute(1, 0, 2)) @ proj
    return run


def stc(D=1024, H=4096, T=16, g=24, depth=4):
    """VideoLLaMA2 STCConnector (`stc_connector`) in plain torch: timm RegStage (Bottleneck blocks,
    bottle_ratio 1, group_size 1, SE 0.25 of the block's input channels, LayerNorm2d, SiLU), the
    Conv3d(2, 2, 2) sampler with padding 1 + SiLU, a second RegStage, then the 2-layer GELU readout."""
    F = torch.nn.functional
    w = lambda *shape: torch.randn(*shape) * 0.02
    ln2d = lambda x, p: F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), p[0], p[1], 1e-5).permute(0, 3, 1, 2)
    norm = lambda C: (torch.ones(C), torch.zeros(C))

    def block(cin, cout):
        se = int(round(cin * 0.25))
        b = dict(c1=w(cout, cin, 1, 1), n1=norm(cout), c2=w(cout, 1, 3, 3), n2=norm(cout),
                 f1=(w(se, cout, 1, 1), torch.zeros(se)), f2=(w(cout, se, 1, 1), torch.zeros(cout)),
                 c3=w(cout, cout, 1, 1), n3=norm(cout))
        if cin != cout:
            b["ds"] = (w(cout, cin, 1, 1), norm(cout))

        def run(x):
            y = F.silu(ln2d(F.conv2d(x, b["c1"]), b["n1"]))
            y = F.silu(ln2d(F.conv2d(y, b["c2"], padding=1, groups=cout), b["n2"]))
            s = y.mean((2, 3), keepdim=True)
            s = F.conv2d(F.silu(F.conv2d(s, *b["f1"])), *b["f2"])
            y = y * torch.sigmoid(s)
            y = ln2d(F.conv2d(y, b["c3"]), b["n3"])
            sc = ln2d(F.conv2d(x, b["ds"][0]), b["ds"][1]) if "ds" in b else x
            return F.silu(y + sc)
        return run

    s1 = [block(D if i == 0 else H, H) for i in range(depth)]
    s2 = [block(H, H) for _ in range(depth)]
    conv3 = (w(H, H, 2, 2, 2), torch.zeros(H))
    r1, r2 = (w(H, H), torch.zeros(H)), (w(H, H), torch.zeros(H))
    x = torch.randn(1, T, g * g, D)

    def run():
        h = x.reshape(T, g, g, D).permute(0, 3, 1, 2)  # b t (h w) d -> (b t) d h w
        for b in s1:
            h = b(h)
        v = F.silu(F.conv3d(h.reshape(1, T, H, g, g).permute(0, 2, 1, 3, 4), *conv3, stride=2, padding=1))  # b d t h w
        To, go = v.shape[2], v.shape[3]
        h = v.permute(0, 2, 1, 3, 4).reshape(To, H, go, go)
        for b in s2:
            h = b(h)
        h = h.reshape(1, To, H, go * go).permute(0, 1, 3, 2).reshape(1, To * go * go, H)
        return F.linear(F.gelu(F.linear(h, *r1)), *r2)
    return run


def case(name):
    if name == "siglip.layer.1024":
        L = VitLayer(1152, 16, 4304, "gelu_tanh"); x = torch.randn(1, 1024, 1152)
        return lambda: L(x)
    if name == "clip.layer.577x16":
        L = VitLayer(1024, 16, 4096, "quick_gelu"); x = torch.randn(16, 577, 1024)
        return lambda: L(x)
    if name == "resampler.1024":
        return resampler()
    if name == "stc.16x24x24":
        return stc()
    fam, kind = name.split(".", 1)
    c = QWEN2 if fam == "qwen2" else MISTRAL if fam == "mistral" else None
    if c is None:
        return None
    E, KV, D = c["E"], c["KV"], c["E"] // c["H"]
    if kind == "layer.prefill512":
        L = Layer(c); x = torch.randn(1, 512, E)
        return lambda: L(x, None, None)
    if kind == "layer.decode@1024":
        L = Layer(c); x = torch.randn(1, 1, E)
        pk, pv = torch.randn(1, KV, 1024, D), torch.randn(1, KV, 1024, D)
        return lambda: L(x, pk, pv)
    if kind == "lm_head.decode":
        w = torch.randn(c["V"], E) * 0.02; x = torch.randn(1, 1, E)
        return lambda: torch.nn.functional.linear(x, w)
    return None


def main():
    args = sys.argv[1:]
    repeats = 5
    if args[:1] == ["--repeats"]:
        repeats, args = int(args[1]), args[2:]
    out = []
    with torch.inference_mode():
        for name in args:
            f = case(name)
            if f is None:
                continue
            f()
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter(); f(); runs.append((time.perf_counter() - t0) * 1000)
            out.append({"name": name, "ms": round(statistics.median(runs), 2)})
            del f
    info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(json.dumps({"info": info, "cases": out}))


if __name__ == "__main__":
    main()
