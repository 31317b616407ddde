"""Measure the toy-world oracle on held-out videos, shuffled prompts and noise; prints one table.

python scripts/toyworld_oracle.py --n 1000 --seed 2024
"""

import argparse

from vidiff.toyworld.evaluate import evaluate_oracle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="held-out videos")
    ap.add_argument("--n-noise", type=int, default=300, help="noise videos")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    r = evaluate_oracle(n=args.n, seed=args.seed, n_noise=args.n_noise, progress=True)
    print(
        f"held-out videos: {r['n']} (of them {r['heldout_mp4']['n']} after an mp4 round trip); noise: {r['n_noise']}"
    )
    print(f"{'':28s}{'color':>8s}{'shape':>8s}{'motion':>8s}")
    rows = [
        ("held-out, true prompt", r["heldout"]),
        ("  of which mp4 round trip", r["heldout_mp4"]),
        ("shuffled prompts", r["shuffled"]),
        ("  perfect oracle would get", r["shuffled_truth"]),
        ("  chance (sum p^2)", r["chance"]),
        ("noise, random prompt", r["noise"]),
        ("  chance (1/K)", r["noise_chance"]),
    ]
    for name, row in rows:
        print(f"{name:28s}" + "".join(f"{row[k]:8.3f}" for k in ("color", "shape", "motion")))
    print(
        f"mean consistency: held-out {r['heldout']['consistency']:.3f}, noise {r['noise']['consistency']:.3f}"
    )


if __name__ == "__main__":
    main()
