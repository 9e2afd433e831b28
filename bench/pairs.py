"""Paired-window statistics shared by the benches that alternate two cases
in A B B A quartets (metrics.py, vm3d.py): the ratio of sums over pairs of
adjacent windows, the median pair, and a percentile bootstrap interval."""

import random

BOOTSTRAP = 2000  # resamples of the pairs, fixed seed


def quartet_pairs(windows, key, measure):
    """The pairs of neighbouring windows of each quartet in windows: those
    at positions (0, 1) and (3, 2), as ((A count, A per), (B count, B
    per)).  key(w) names w's quartet, w["position"] is its place in it
    (0-3) and w["role"] "A" or "B"; measure(w) is (count, per), or None
    for a window that measured nothing (its pair is left out)."""
    by = {}
    for w in windows:
        by.setdefault(key(w), {})[w["position"]] = w
    out = []
    for q in by.values():
        for x, y in ((0, 1), (3, 2)):
            a, b = q.get(x), q.get(y)
            if a and b and a["role"] == "B":
                a, b = b, a
            ma, mb = (measure(a), measure(b)) if a and b else (None, None)
            if ma and mb:
                out.append((ma, mb))
    return out


def ratio_of_sums(pairs):
    """pairs: ((A frames, A s), (B frames, B s)); B's rate over A's."""
    af = sum(a[0] for a, _ in pairs)
    at = sum(a[1] for a, _ in pairs)
    bf = sum(b[0] for _, b in pairs)
    bt = sum(b[1] for _, b in pairs)
    return (bf / bt) / (af / at) if af and at and bt else None


def pair_stats(pairs, seed=1):
    """Ratio of sums, median of the per-pair ratios and a percentile
    bootstrap 95% interval of the ratio of sums, resampling pairs."""
    if not pairs:
        return {"pairs": 0, "ratio": None, "median": None, "ci95": None, "per_pair": []}
    per = [(b[0] / b[1]) / (a[0] / a[1]) if a[0] else None for a, b in pairs]
    ok = sorted(r for r in per if r is not None)
    med = None
    if ok:
        n = len(ok)
        med = ok[n // 2] if n % 2 else (ok[n // 2 - 1] + ok[n // 2]) / 2
    rng = random.Random(seed)
    boots = sorted(r for r in (ratio_of_sums([rng.choice(pairs) for _ in pairs])
                               for _ in range(BOOTSTRAP)) if r is not None)
    ci = ([boots[int(0.025 * (len(boots) - 1))], boots[int(0.975 * (len(boots) - 1))]]
          if len(pairs) > 1 and boots else None)
    return {"pairs": len(pairs), "ratio": ratio_of_sums(pairs), "median": med, "ci95": ci,
            "per_pair": per}


def half_width(ci):
    """How far from 1 the interval reaches (None: no interval)."""
    return max(abs(ci[0] - 1.0), abs(ci[1] - 1.0)) if ci else None
