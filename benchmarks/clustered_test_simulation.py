"""False-positive rates of the paired tests when examples cluster by photo and nothing differs.

    python benchmarks/clustered_test_simulation.py [--sims 1000] [--photos 150] [--per-photo 8]

Simulates many pairs of runs A and B with NO true difference: each photo has a latent difficulty
shared by both models, plus a photo-level random effect per model drawn from the same
distribution for A and B (so both have the same expected accuracy), and each example is correct
with probability sigmoid(mu + difficulty + effect). The photo effects make the examples of one
photo strongly correlated (latent-scale ICC printed below). On each simulated pair it runs

- the paired sign-flip permutation test over photos (`densecap_eval.metrics.paired`, what
  `densecap-eval compare` reports first), with ``--n-perm`` Monte Carlo sign flips;
- the exact McNemar test on the discordant examples, which assumes independent examples;
- the paired cluster bootstrap 95% interval of B - A (a "rejection" when it excludes 0);

and prints how often each rejects at ``--alpha``. A valid test rejects at most about alpha of
the time; McNemar rejects far more often, because it counts 8 correlated examples of a photo as
8 independent pieces of evidence. Seeded: the same arguments print the same figures.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from densecap_eval.metrics import paired


def simulate_pair(
    rng: np.random.Generator,
    *,
    photos: int,
    per_photo: int,
    mu: float,
    sigma_photo: float,
    sigma_model: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correct flags of A and B (photos * per_photo examples) and their photo labels."""
    difficulty = rng.normal(0.0, sigma_photo, size=photos)  # shared by both models
    effect = rng.normal(0.0, sigma_model, size=(2, photos))  # per model, same distribution
    logits = mu + difficulty[None, :] + effect  # (2, photos)
    prob = 1.0 / (1.0 + np.exp(-logits))
    draws = rng.random((2, photos, per_photo)) < prob[:, :, None]
    clusters = np.repeat(np.arange(photos), per_photo)
    return draws[0].reshape(-1), draws[1].reshape(-1), clusters


def anova_icc(flags: np.ndarray, per_photo: int) -> float:
    """One-way ANOVA estimate of the within-photo correlation of 0/1 outcomes."""
    x = flags.reshape(-1, per_photo).astype(np.float64)
    k, m = x.shape
    means = x.mean(axis=1)
    msb = per_photo * np.sum((means - x.mean()) ** 2) / (k - 1)
    msw = np.sum((x - means[:, None]) ** 2) / (k * (m - 1))
    return float((msb - msw) / (msb + (m - 1) * msw))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000, help="simulated comparisons")
    parser.add_argument("--photos", type=int, default=150)
    parser.add_argument("--per-photo", type=int, default=8, help="examples per photo")
    parser.add_argument("--mu", type=float, default=0.5, help="logit of the typical accuracy")
    parser.add_argument("--sigma-photo", type=float, default=1.8, help="shared photo difficulty")
    parser.add_argument("--sigma-model", type=float, default=1.9, help="per-model photo effect")
    parser.add_argument("--n-perm", type=int, default=999, help="Monte Carlo sign flips")
    parser.add_argument("--n-boot", type=int, default=999, help="bootstrap resamples (0: skip)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    latent = args.sigma_photo**2 + args.sigma_model**2
    icc_latent = latent / (latent + math.pi**2 / 3)
    reject = {"clustered": 0, "mcnemar": 0, "bootstrap": 0}
    iccs, accs = [], []
    start = time.perf_counter()
    for i in range(args.sims):
        a, b, clusters = simulate_pair(
            rng, photos=args.photos, per_photo=args.per_photo, mu=args.mu,
            sigma_photo=args.sigma_photo, sigma_model=args.sigma_model,
        )  # fmt: skip
        iccs.append(anova_icc(a, args.per_photo))
        accs.append(float(a.mean()))
        clustered = paired.paired_sign_flip_test(a, b, clusters, n_perm=args.n_perm, seed=i)
        reject["clustered"] += clustered.p_value <= args.alpha
        counts = paired.paired_counts(a, b)
        reject["mcnemar"] += paired.mcnemar_exact(counts.only_a, counts.only_b) <= args.alpha
        if args.n_boot > 0:
            ci = paired.paired_cluster_bootstrap(a, b, clusters, n_boot=args.n_boot, seed=i)
            reject["bootstrap"] += ci is not None and not ci[0] <= 0.0 <= ci[1]
    elapsed = time.perf_counter() - start

    se = math.sqrt(args.alpha * (1 - args.alpha) / args.sims)
    print(
        f"{args.sims} simulated comparisons with no true difference: {args.photos} photos x "
        f"{args.per_photo} examples, seed {args.seed}"
    )
    print(
        f"within-photo correlation: latent ICC {icc_latent:.2f}, outcome ICC (ANOVA, mean) "
        f"{np.mean(iccs):.2f}; mean accuracy {np.mean(accs):.3f}"
    )
    print(f"false-positive rate at alpha = {args.alpha} (Monte Carlo s.e. at alpha: {se:.4f})")
    print(
        f"  paired sign-flip permutation over photos ({args.n_perm} flips): "
        f"{reject['clustered'] / args.sims:.3f}"
    )
    print(
        f"  McNemar (assumes independent examples):            {reject['mcnemar'] / args.sims:.3f}"
    )
    if args.n_boot > 0:
        print(
            f"  paired cluster bootstrap 95% CI excludes 0 ({args.n_boot} resamples): "
            f"{reject['bootstrap'] / args.sims:.3f}"
        )
    print(f"time: {elapsed:.1f} s")


if __name__ == "__main__":
    main()
