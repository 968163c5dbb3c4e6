"""How far the learned frames are from the truth's, by noise level: the frame rotation loss as the seed computes it
(`absolute`) and after superposing the predicted Cα trace onto the truth (`superposed`, nbs/30_losses).

    python benchmarks/rot_pose.py                                  # the shipped weights, 32 validation chains
    python benchmarks/rot_pose.py --weights runs/fold/ckpt/last.pt --n-chains 64 --out benchmarks/results/rot_pose.json

An absolute loss near 1.5 (uniformly random rotations) at high t, while the superposed one is lower, means the
frames are consistent with the predicted trace but not in the truth's global pose, which the input cannot tell.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.data import load_chain_splits, default_data_paths, collate, featurize   # noqa: E402
from minifold.geometry import frames_from_ca, frames_from_backbone                     # noqa: E402
from minifold.losses import frame_rotation_loss, superposed_rotations                   # noqa: E402
from minifold.sampling import randn_like_masked                                         # noqa: E402
from minifold.structure_io import DEFAULT_WEIGHTS, load_model                           # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="export_weights file or trainer checkpoint (default: the shipped weights)")
    ap.add_argument("--n-chains", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--t", type=int, nargs="*", default=[0, 50, 100, 300, 600, 999])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _, _ = load_model(args.weights or DEFAULT_WEIGHTS)         # eval mode
    data, splits = default_data_paths("shared")
    val = [c for c in load_chain_splits(data, splits, splits=("validation",))["validation"] if len(c) <= args.max_len]
    val = val[:args.n_chains]
    b = collate([featurize(c) for c in val])
    m = b["mask"].bool() & b["ca_mask"].bool()
    bb = b["bb0"].float()
    R_true, _ = frames_from_backbone(bb[..., 0, :], bb[..., 1, :], bb[..., 2, :])
    has_bb = b["bb_mask"].bool()[..., :3].all(-1) & m
    R_true = torch.where(has_bb[..., None, None], R_true, frames_from_ca(b["x0"].float(), m)[0])
    rows = []
    with torch.no_grad():
        cond = model.condition(b)
        for t in args.t:
            tt = torch.full((len(val),), t)                 # the truth noised to t by the training forward process
            noise = randn_like_masked(b["x0"].shape, b["mask"].bool(), torch.Generator().manual_seed(0))
            x_t = model.schedule.q_sample(b["x0"].float() * m[..., None], tt, noise, b["mask"].bool()).float()
            o = model.denoise(cond, x_t, tt, None)
            row = {"t": t}
            for mode in ("absolute", "superposed"):
                row[mode] = float(frame_rotation_loss(superposed_rotations(o["R"], o["x0"], b["x0"].float(), m, mode), R_true, m))
            rows.append(row)
            print(f"t={t:4d}  rot loss absolute {row['absolute']:.3f}  superposed {row['superposed']:.3f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"benchmark": "rot_pose", "weights": args.weights or "shipped",
                                              "n_chains": len(val), "rows": rows,
                                              "command": "python benchmarks/rot_pose.py " + " ".join(argv or sys.argv[1:])}, indent=1))
    return rows


if __name__ == "__main__":
    main()
