"""Module benchmarks: Mini-Fold building blocks against their PyPI peers, same process, equal shapes.

    python benchmarks/modules.py                   # every bench_* defined below, CPU (1 thread) + GPU if present
    python benchmarks/modules.py --only triangle   # just bench_triangle
    python benchmarks/modules.py --threads 2 --reps 7
    python benchmarks/modules.py --out benchmarks/results/modules_cpu.json   # also write every number as JSON

Each comparison is one function `bench_<name>(args)` that prints its own table and returns a dict of numbers;
`main()` runs every `bench_*` function found in this module, so a new comparison is added by appending a
function (e.g. `bench_ipa`).

Timing: forward + backward of one call (loss = mean of squares of the output), minimum over `--reps`
repetitions after one warm-up, ours and the peer alternating. On CPU we report the CPU time of the process
(`time.process_time`, all threads) next to wall-clock time, because the benchmark box is shared and
wall-clock is dominated by other jobs; with `--threads 1` (default) the two agree on a quiet machine.
Peak memory: CPU — the largest net allocation seen by the PyTorch profiler (`profile_memory=True`) during
forward + backward, excluding the inputs and parameters; CUDA — `torch.cuda.max_memory_allocated` minus the
memory allocated before the call.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ------------------------------------------------------------------------------------------------ helpers

def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _fwd_bwd(fn, x, device, autocast_dtype=None):
    "One forward + backward of `fn(x)` (x is re-leafed so that the input gradient is part of the work)."
    xx = x.detach().requires_grad_()
    ctx = (torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype) if autocast_dtype
           else torch.autocast(device_type=device.split(":")[0], enabled=False))
    with ctx:
        y = fn(xx)
    y.float().square().mean().backward()


def time_pair(fns: dict, x, device, reps=5, autocast_dtype=None) -> dict:
    "Alternating min-of-reps timing of several callables: {name: (cpu_s, wall_s)}."
    for f in fns.values():  # warm-up
        _fwd_bwd(f, x, device, autocast_dtype)
    best = {k: [float("inf"), float("inf")] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            _sync(device)
            c0, w0 = time.process_time(), time.perf_counter()
            _fwd_bwd(f, x, device, autocast_dtype)
            _sync(device)
            c, w = time.process_time() - c0, time.perf_counter() - w0
            best[k][0], best[k][1] = min(best[k][0], c), min(best[k][1], w)
    return {k: tuple(v) for k, v in best.items()}


def peak_memory(fn, x, device, autocast_dtype=None) -> float:
    "Peak extra memory (MiB) of one forward + backward."
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _fwd_bwd(fn, x, device, autocast_dtype)
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _fwd_bwd(fn, x, device, autocast_dtype)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak / 2**20


def _row(label, ours, peer, unit, fmt="{:.3f}"):
    ratio = peer / ours if ours > 0 else float("nan")
    print(f"  {label:<34} ours {fmt.format(ours):>9} {unit:<4} peer {fmt.format(peer):>9} {unit:<4} "
          f"peer/ours {ratio:5.2f}x")
    return ratio


# ------------------------------------------------------------------------------------------------ triangle

def _triangle_pair(direction, d_pair, hidden, device, seed=0):
    "Our TriangleMultiplicativeUpdate and the PyPI TriangleMultiplicativeModule with *identical* weights."
    from triangle_multiplicative_module import TriangleMultiplicativeModule
    from minifold.pair_stack import TriangleMultiplicativeUpdate
    torch.manual_seed(seed)
    peer = TriangleMultiplicativeModule(dim=d_pair, hidden_dim=hidden,
                                        mix="outgoing" if direction == "outgoing" else "ingoing")
    with torch.no_grad():  # non-trivial gates, so both compute the same non-degenerate function
        for g in (peer.left_gate, peer.right_gate, peer.out_gate):
            torch.nn.init.normal_(g.weight, std=0.05)
    ours = TriangleMultiplicativeUpdate(d_pair, hidden, outgoing=(direction == "outgoing"))
    # peer ingoing computes Σ_k left_kj right_ki = our incoming Σ_k a_ki b_kj with a = right, b = left
    left, right = (peer.left_proj, peer.right_proj), (peer.left_gate, peer.right_gate)
    if direction != "outgoing":
        left, right = (peer.right_proj, peer.left_proj), (peer.right_gate, peer.left_gate)
    with torch.no_grad():
        ours.proj.weight.copy_(torch.cat([left[0].weight, left[1].weight, right[0].weight, right[1].weight]))
        ours.proj.bias.copy_(torch.cat([left[0].bias, left[1].bias, right[0].bias, right[1].bias]))
        ours.gate.load_state_dict(peer.out_gate.state_dict())
        ours.norm_in.load_state_dict(peer.norm.state_dict())
        ours.norm_out.load_state_dict(peer.to_out_norm.state_dict())
        ours.out.load_state_dict(peer.to_out.state_dict())
    return ours.to(device), peer.to(device)


def _min_cpu_time(run, device, reps) -> float:
    "Process CPU-seconds of `run()`, minimum over `reps` calls after one warm-up."
    run()
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        c0 = time.process_time()
        run()
        _sync(device)
        best = min(best, time.process_time() - c0)
    return best


def _matmul_floor(B, L, C, D, device, reps) -> float:
    "CPU-seconds of just the matrix products that *any* implementation of the update must run (fwd + bwd, fp32)."
    N = B * L * L
    g = torch.Generator().manual_seed(0)
    x, W5, Wo = torch.randn(N, C, generator=g), torch.randn(5 * D, C, generator=g), torch.randn(C, D, generator=g)
    gp, y, go = torch.randn(N, 5 * D, generator=g), torch.randn(N, D, generator=g), torch.randn(N, C, generator=g)
    a = torch.randn(D * B, L, L, generator=g)
    x, W5, Wo, gp, y, go, a = (t.to(device) for t in (x, W5, Wo, gp, y, go, a))

    def run():
        x @ W5.t(); y @ Wo.t(); torch.bmm(a, a.transpose(1, 2))           # forward: projections, output, triangle
        gp @ W5; gp.t() @ x; go @ Wo; go.t() @ y                            # backward: input and weight grads
        torch.bmm(a, a); torch.bmm(a.transpose(1, 2), a)                    # backward of the triangle product
    return _min_cpu_time(run, device, reps)


def bench_triangle(args) -> dict:
    """TriangleMultiplicativeUpdate (minifold.pair_stack) vs triangle-multiplicative-module (PyPI, lucidrains),
    B=4, L=125, d_pair=128, hidden 64, pair mask given to both; outgoing and incoming; forward + backward."""
    B, L, C, D = 4, 125, 128, 64
    print(f"\n== triangle multiplicative update: B={B} L={L} d_pair={C} hidden={D}, forward+backward ==")
    res = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(B, L, L, C, generator=g).to(device)
        mask = torch.ones(B, L, L, dtype=torch.bool, device=device)
        precisions = [None, torch.bfloat16]  # fp32, and the bf16 autocast that training uses (preset.amp)
        for direction in ("outgoing", "incoming"):
            ours, peer = _triangle_pair(direction, C, D, device)
            with torch.no_grad():  # same function (fp32): the comparison is apples to apples
                y_peer = peer(z, mask=mask.float())
                diff = (ours(z, mask) - y_peer).abs().max().item()
                scale = y_peer.abs().max().item()
            fns = {"ours": lambda x: ours(x, mask), "peer": lambda x: peer(x, mask=mask.float())}
            for prec in precisions:
                tag = f"{device} {'fp32' if prec is None else 'bf16 autocast'} {direction}"
                print(f" [{tag}] copied weights, fp32: max |ours - peer| = {diff:.2e} (max |peer| = {scale:.2f})")
                t = time_pair(fns, z, device, args.reps, prec)
                mem = {k: peak_memory(f, z, device, prec) for k, f in fns.items()}
                r_cpu = _row("time, CPU-seconds (min)" if device == "cpu" else "time (s, min)",
                             t["ours"][0] if device == "cpu" else t["ours"][1],
                             t["peer"][0] if device == "cpu" else t["peer"][1], "s")
                if device == "cpu":
                    _row("time, wall-clock (min)", t["ours"][1], t["peer"][1], "s")
                r_mem = _row("peak memory fwd+bwd", mem["ours"], mem["peer"], "MiB", "{:.1f}")
                res[tag] = dict(time_ours=t["ours"], time_peer=t["peer"], mem_ours=mem["ours"], mem_peer=mem["peer"],
                                speedup=r_cpu, mem_ratio=r_mem, max_abs_diff=diff)
    floor = _matmul_floor(B, L, C, D, "cpu", args.reps)
    peer_cpu = res["cpu fp32 outgoing"]["time_peer"][0]
    print(f" [cpu fp32] matrix products alone (same FLOPs in both implementations): {floor:.3f} CPU-s; "
          f"even with zero overhead ours could be at most {peer_cpu / floor:.2f}x faster than the peer")
    res["cpu_matmul_floor_s"] = floor
    if not torch.cuda.is_available():
        print(" [cuda] skipped: torch.cuda.is_available() is False (no GPU on this machine); bf16 timing not run")
    return res


# ------------------------------------------------------------------------------------------------ IPA

def _ipa_matmul_floor(B, L, D, Cp, H, C, Pq, Pv, device, reps) -> float:
    """CPU-seconds of just the matrix products that *any* IPA of these widths must run, forward + backward (fp32):
    the q/k/v (scalar + point) projection, the pair-bias projection, the logits q·k, the value aggregation a·v,
    the pair aggregation aᵀ·z and the output projection, each with its input- and weight-gradient products."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)
    P = 3 * H * C + 3 * H * (2 * Pq + Pv)                       # projection width
    F = H * (C + 4 * Pv + Cp)                                   # output-projection input width
    Ck, Cv = C + 3 * Pq + 1, C + 3 * Pv                         # augmented key width, value width
    s, Wp, gp = r(B * L, D), r(P, D), r(B * L, P)
    z, Wb, gb = r(B * L * L, Cp), r(H, Cp), r(B * L * L, H)
    q, k, gl = r(B * H, L, Ck), r(B * H, L, Ck), r(B * H, L, L)
    a, v, go = r(B * H, L, L), r(B * H, L, Cv), r(B * H, L, Cv)
    aT, zz, goz = r(B * L, H, L), r(B * L, L, Cp), r(B * L, H, Cp)
    f, Wo, gf = r(B * L, F), r(D, F), r(B * L, D)

    def run():
        s @ Wp.t(); gp @ Wp; gp.t() @ s                                       # projection: fwd, dX, dW
        z @ Wb.t(); gb @ Wb; gb.t() @ z                                       # pair bias
        torch.bmm(q, k.transpose(1, 2)); torch.bmm(gl, k); torch.bmm(gl.transpose(1, 2), q)   # logits
        torch.bmm(a, v); torch.bmm(go, v.transpose(1, 2)); torch.bmm(a.transpose(1, 2), go)  # a·v
        torch.bmm(aT, zz); torch.bmm(goz, zz.transpose(1, 2)); torch.bmm(aT.transpose(1, 2), goz)  # aᵀ·z
        f @ Wo.t(); gf @ Wo; gf.t() @ f                                       # output projection
    return _min_cpu_time(run, device, reps)


def _ipa_pair(d_single, d_pair, heads, c, p_qk, p_v, device, seed=0):
    "Our InvariantPointAttention and the PyPI invariant-point-attention module with *identical* weights."
    from invariant_point_attention import InvariantPointAttention as PeerIPA
    from minifold.ipa import InvariantPointAttention
    torch.manual_seed(seed)
    peer = PeerIPA(dim=d_single, heads=heads, scalar_key_dim=c, scalar_value_dim=c, point_key_dim=p_qk,
                   point_value_dim=p_v, pairwise_repr_dim=d_pair)
    ours = InvariantPointAttention(d_single, d_pair, heads, c, p_qk, p_v)
    # Same logit scales in both (w_L/√c, w_L·w_C/2 for points, w_L for the pair bias) and the same output
    # layout [scalar | points (h p xyz) | point norms | pair]; the peer has bias-free q/k/v projections.
    with torch.no_grad():
        ours.proj.weight.copy_(torch.cat([peer.to_scalar_q.weight, peer.to_scalar_k.weight, peer.to_scalar_v.weight,
                                          peer.to_point_q.weight, peer.to_point_k.weight, peer.to_point_v.weight]))
        ours.proj.bias.zero_()
        ours.pair_bias.load_state_dict(peer.to_pairwise_attn_bias[0].state_dict())
        ours.head_weight.copy_(peer.point_weights)
        ours.out.load_state_dict(peer.to_out.state_dict())
    return ours.to(device), peer.to(device)


def _model_fwd_bwd_bench(name, device, B, L, reps, compile_model):
    "v13/v14 training step cost (forward + backward, bf16 autocast) at B×L: ms/step, chains/s, peak MiB."
    import warnings
    from minifold.model import build_model
    warnings.filterwarnings("ignore", message="build_encoder")
    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    g = torch.Generator().manual_seed(0)
    batch = dict(tokens=torch.randint(4, 24, (B, L), generator=g).to(device),
                 mask=torch.ones(B, L, dtype=torch.bool, device=device),
                 residue_index=torch.arange(L, device=device).expand(B, L))
    x_t = torch.randn(B, L, 3, generator=g).to(device)
    t = torch.randint(0, model.preset.T, (B,), generator=g).to(device)
    fwd = torch.compile(model) if compile_model else model

    def step():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            out = fwd(batch, x_t, t)
        loss = out["x0"].float().square().mean() + out["aux_logits"].float().square().mean() + out["log_rg"].float().square().mean()
        if out.get("atoms") is not None: loss = loss + out["atoms"].float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
    for _ in range(3): step()                       # warm-up (and compilation)
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    w0 = time.perf_counter()
    for _ in range(reps): step()
    _sync(device)
    dt = (time.perf_counter() - w0) / reps
    return dict(ms_per_step=1e3 * dt, chains_per_s=B / dt, peak_mib=torch.cuda.max_memory_allocated(device) / 2**20)


def bench_ipa(args) -> dict:
    """InvariantPointAttention (minifold.ipa) vs invariant-point-attention (PyPI, lucidrains) at the seed's v12+
    widths (d_single 512, d_pair 128, 8 heads × 64 scalar channels, 8 query/key points and `--v-points` value
    points: 16 in the v12+ presets, AF2's 2× the query points), B=4, L=125, forward + backward with gradients to the
    single and pair inputs; plus, on CUDA, v13/v14 training-step cost."""
    B, L, D, Cp, H, C, Pq, Pv = 4, 125, 512, 128, 8, 64, 8, args.v_points
    print(f"\n== invariant point attention: B={B} L={L} d_single={D} d_pair={Cp} heads={H} c={C} "
          f"points qk/v={Pq}/{Pv}, forward+backward ==")
    from minifold.geometry import random_rotation
    res = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        g = torch.Generator().manual_seed(0)
        s = torch.randn(B, L, D, generator=g).to(device)
        z = torch.randn(B, L, L, Cp, generator=g).to(device).requires_grad_()
        R = random_rotation(B * L, generator=g).view(B, L, 3, 3).to(device)
        tr = (3.0 * torch.randn(B, L, 3, generator=g)).to(device)
        mask = torch.ones(B, L, dtype=torch.bool, device=device)
        mask[-1, L - 20:] = False                               # one padded chain, as in a real batch
        ours, peer = _ipa_pair(D, Cp, H, C, Pq, Pv, device)
        Rt = R.transpose(-1, -2).contiguous()                   # the peer uses row vectors: x_global = x R + t
        fns = {"ours": lambda x: ours(x, z, R, tr, mask),
               "peer": lambda x: peer(x, z, rotations=Rt, translations=tr, mask=mask)}
        with torch.no_grad():
            y_o, y_p = fns["ours"](s), fns["peer"](s)
            diff = (y_o - y_p)[mask].abs().max().item()
            scale = y_p[mask].abs().max().item()
        for prec in [None, torch.bfloat16]:
            tag = f"{device} {'fp32' if prec is None else 'bf16 autocast'}"
            print(f" [{tag}] copied weights, fp32: max |ours - peer| on real residues = {diff:.2e} "
                  f"(max |peer| = {scale:.2f})")
            try:
                t = time_pair(fns, s, device, args.reps, prec)
                mem = {k: peak_memory(f, s, device, prec) for k, f in fns.items()}
            except Exception as e:                              # the peer mixes dtypes under autocast
                print(f"  skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                res[tag] = dict(error=f"{type(e).__name__}: {e}")
                continue
            r_t = _row("time, CPU-seconds (min)" if device == "cpu" else "time (s, min)",
                       t["ours"][0] if device == "cpu" else t["ours"][1],
                       t["peer"][0] if device == "cpu" else t["peer"][1], "s")
            if device == "cpu":
                _row("time, wall-clock (min)", t["ours"][1], t["peer"][1], "s")
            r_m = _row("peak memory fwd+bwd", mem["ours"], mem["peer"], "MiB", "{:.1f}")
            res[tag] = dict(time_ours=t["ours"], time_peer=t["peer"], mem_ours=mem["ours"], mem_peer=mem["peer"],
                            speedup=r_t, mem_ratio=r_m, max_abs_diff=diff)
    floor = _ipa_matmul_floor(B, L, D, Cp, H, C, Pq, Pv, "cpu", args.reps)
    if "time_peer" in res.get("cpu fp32", {}):
        print(f" [cpu fp32] matrix products alone (same FLOPs in both implementations): {floor:.3f} CPU-s; "
              f"even with zero overhead ours could be at most {res['cpu fp32']['time_peer'][0] / floor:.2f}x faster than the peer")
    res["cpu_matmul_floor_s"] = floor
    if torch.cuda.is_available():
        print(f"\n== v13/v14 training step (forward + backward, bf16 autocast, grad checkpointing per preset), "
              f"B={B} L={L} ==")
        for name in ("v13", "v14"):
            for comp in (False, True):
                tag = f"cuda {name} {'torch.compile' if comp else 'eager'}"
                try:
                    r = _model_fwd_bwd_bench(name, "cuda", B, L, max(args.reps, 5), comp)
                except Exception as e:
                    print(f"  {tag:<28} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                    res[tag] = dict(error=f"{type(e).__name__}: {e}")
                    continue
                print(f"  {tag:<28} {r['ms_per_step']:8.1f} ms/step  {r['chains_per_s']:7.1f} chains/s  "
                      f"peak {r['peak_mib']:8.0f} MiB")
                res[tag] = r
    else:
        print(" [cuda] skipped: torch.cuda.is_available() is False (no GPU on this machine); bf16 IPA timing and "
              "the v13/v14 training-step throughput (eager and torch.compile) not run")
    return res


# ------------------------------------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run only bench_<ONLY>")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (min is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--v-points", type=int, default=None,
                    help="IPA value points (default: the v12+ presets' n_v_points, 16)")
    ap.add_argument("--out", default=None, help="write all results (and the machine) to this JSON file")
    args = ap.parse_args(argv)
    if args.v_points is None:
        from minifold.config import get_preset
        args.v_points = get_preset("v13").n_v_points
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    benches = {k[len("bench_"):]: v for k, v in globals().items() if k.startswith("bench_") and callable(v)}
    if args.only is not None:
        if args.only not in benches:
            raise SystemExit(f"unknown benchmark {args.only!r}; available: {sorted(benches)}")
        benches = {args.only: benches[args.only]}
    results = {name: fn(args) for name, fn in benches.items()}
    if args.out:
        meta = dict(command="python " + " ".join(sys.argv), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(meta=meta, results=results), indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
