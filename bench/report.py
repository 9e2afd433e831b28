"""Table and target verdicts for bench.py results (one run, several rounds)."""

import bench as B


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(runs):
    """(config, scenario) -> averaged figures over rounds."""
    out = {}
    for r in runs:
        out.setdefault((r["config"], r["scenario"]), []).append(r)
    summary = {}
    for key, rs in out.items():
        rss = [k for r in rs for k in r.get("worker_rss_kib", [])]
        summary[key] = {
            "fps": mean([r["fps"] for r in rs]),
            "fairness": mean([r["fairness"] for r in rs]),
            "sup_cpu": max((r["supervisor_cpu_pct"] for r in rs if "supervisor_cpu_pct" in r),
                           default=None),
            "srv_cpu": mean([100.0 * r["worker_cpu_s"] / r["wall_s"]
                             for r in rs if "worker_cpu_s" in r]),
            "cli_cpu": mean([100.0 * r["client_cpu_s"] / r["wall_s"]
                             for r in rs if r.get("client_cpu_s") is not None]),
            "rss_mib": (sum(rss) / len(rss) / 1024.0) if rss else None,
            "scenes": [s for r in rs for s in r.get("scenes", []) if s],
            "per_tenant": [r["per_tenant_fps"] for r in rs],
        }
    return summary


def ref_of(cfg):
    """The reference a config is compared with: the same clients' Mesa."""
    return "reference" + B.M25 if cfg.endswith(B.M25) else "reference"


def native_of(cfg):
    return None if cfg.endswith(B.M25) else "native"


def print_report(meta, runs):
    s = summarize(runs)
    scenarios = []
    for r in runs:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    configs = []
    for r in runs:
        if r["config"] not in configs:
            configs.append(r["config"])

    print()
    print(f"vgpu bench  {meta['started']}  {meta['cpus']} CPUs, llvmpipe, "
          f"client Mesa {'+'.join(meta.get('mesa', ['22']))}, "
          f"vtest clients via {meta['launcher']}, rounds={meta['rounds']}, "
          f"load avg {meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}")
    for cfg, why in meta["unavailable"].items():
        print(f"  {cfg}: not measured ({why})")
    hdr = (f"{'config':16s} {'scenario':10s} {'FPS(agg)':>9s} {'x native':>8s} {'x ref':>6s} "
           f"{'fair':>5s} {'sup CPU%':>8s} {'srv CPU%':>8s} {'cli CPU%':>8s} {'RSS MiB':>8s} "
           f"{'x refRSS':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for sc in scenarios:
        for cfg in configs:
            v = s.get((cfg, sc))
            if v is None:
                continue
            nat = s.get((native_of(cfg), sc), {}).get("fps")
            ref = s.get((ref_of(cfg), sc), {})
            print(f"{cfg:16s} {sc:10s} {fmt(v['fps'], '9.1f'):>9s} "
                  f"{fmt(ratio(v['fps'], nat), '8.2f'):>8s} "
                  f"{fmt(ratio(v['fps'], ref.get('fps')), '6.2f'):>6s} "
                  f"{fmt(v['fairness'], '5.3f'):>5s} {fmt(v['sup_cpu'], '8.2f'):>8s} "
                  f"{fmt(v['srv_cpu'], '8.1f'):>8s} {fmt(v['cli_cpu'], '8.1f'):>8s} "
                  f"{fmt(v['rss_mib'], '8.1f'):>8s} "
                  f"{fmt(ratio(v['rss_mib'], ref.get('rss_mib')), '8.2f'):>8s}")
    print()
    print("FPS(agg): sum over tenants (glxgears: mean of the 5 s lines after the first;")
    print("  glmark2: mean FPS of the scenes).  fair: Jain's index over tenants.")
    print("sup CPU%: server main process (vgpud / virgl_test_server) utime+stime over")
    print("  the run's wall time, % of one core.  srv CPU%: its per-client processes.")
    print("cli CPU%: the clients' own CPU time (wait4 rusage), same unit.")
    print("RSS MiB: mean over per-client processes of each one's peak VmRSS.")

    print_scenes(s, configs)
    print_targets(s, scenarios, configs)


def print_scenes(s, configs):
    key = "glmark2-1"
    rows = {cfg: s[(cfg, key)]["scenes"] for cfg in configs if (cfg, key) in s}
    if not rows:
        return
    print()
    print(f"glmark2 per scene, one tenant ({', '.join(B.GLMARK2_SCENES)}):")
    for cfg, lst in rows.items():
        if not lst:
            continue
        names = list(lst[0].keys())
        avg = {n: sum(d.get(n, 0) for d in lst) / len(lst) for n in names}
        line = "  ".join(f"{n.split(':')[0]}={avg[n]:.0f}" for n in names)
        print(f"  {cfg:16s} {line}")


def verdict(ok):
    return "n/a   " if ok is None else ("met   " if ok else "MISSED")


def print_targets(s, scenarios, configs):
    vg = [c for c in configs if c.startswith("vgpud")]
    if not vg or not any((ref_of(c), sc) in s for c in vg for sc in scenarios):
        print("\ntargets: need both vgpud and reference results")
        return
    print("\ntargets (vs virgl_test_server in this run):")
    for sc in scenarios:
        for cfg in vg:
            v = s.get((cfg, sc))
            if v is None:
                continue
            ref = s.get((ref_of(cfg), sc), {})
            r = ratio(v["fps"], ref.get("fps"))
            if sc.endswith("-1"):
                ok = None if r is None else r >= B.TARGET_ONE_TENANT
                aim = "" if r is None else (" (aim 1.15x reached)" if r >= B.AIM_ONE_TENANT
                                            else " (aim 1.15x not reached)")
                print(f"  {verdict(ok)} {cfg} {sc}: {fmt(r, '.2f')}x reference, "
                      f"target >= {B.TARGET_ONE_TENANT:.2f}x{aim}")
            else:
                ok = None if r is None else r >= B.TARGET_FOUR_AGG
                print(f"  {verdict(ok)} {cfg} {sc}: aggregate {fmt(r, '.2f')}x reference, "
                      f"target >= {B.TARGET_FOUR_AGG:.2f}x")
                f = v["fairness"]
                okf = None if f is None else f >= B.TARGET_FAIRNESS
                print(f"  {verdict(okf)} {cfg} {sc}: fairness {fmt(f, '.3f')}, "
                      f"target >= {B.TARGET_FAIRNESS:.2f}")
    sup = [s[(c, sc)]["sup_cpu"] for c in vg for sc in scenarios
           if (c, sc) in s and s[(c, sc)]["sup_cpu"] is not None]
    worst = max(sup) if sup else None
    print(f"  {verdict(None if worst is None else worst < B.TARGET_SUPERVISOR_CPU)} "
          f"supervisor CPU: worst {fmt(worst, '.2f')}% of a core, target < 1%")
    for sc in scenarios:
        for cfg in vg:
            v = s.get((cfg, sc))
            ref = s.get((ref_of(cfg), sc), {}).get("rss_mib")
            if v is None or v["rss_mib"] is None or ref is None:
                continue
            print(f"  {verdict(v['rss_mib'] <= ref)} {cfg} {sc}: worker RSS "
                  f"{v['rss_mib']:.1f} MiB vs reference per-client {ref:.1f} MiB")
