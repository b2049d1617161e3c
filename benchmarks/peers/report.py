"""The report of compare.py: summary numbers, ratios against TierDB memory, Markdown, PNG, console.

Every sentence of the analysis is derived from the measured numbers of this run (a rerun that
changes an outcome changes the sentence); the explanations attached to an outcome are the
mechanisms behind it, with the measurement that supports each one.
"""

from __future__ import annotations

import math
from pathlib import Path

from common import markdown_table

REF = "tierdb_memory"
LABELS = {
    "hnswlib": "raw hnswlib (floor)",
    "tierdb_memory": "TierDB memory",
    "tierdb_http": "TierDB memory / HTTP",
    "tierdb_memory_s3": "TierDB memory_s3",
    "tierdb_s3_only": "TierDB s3_only",
    "lancedb_local": "LanceDB local",
    "lancedb_s3": "LanceDB on S3",
    "chroma": "Chroma",
}
TIERDB = ("tierdb_memory", "tierdb_http", "tierdb_memory_s3", "tierdb_s3_only")
PEERS = ("lancedb_local", "lancedb_s3", "chroma")
RECALL_LEVELS = (0.90, 0.95, 0.99)
MB = 1e6
CLIP = 0.9995   # where recall 1.0 is drawn on the logit axis

# AWS S3 Standard, us-east-1 list prices (2025): the unit to add up requests of different kinds.
PRICE_TIER1 = 0.005 / 1000     # PUT, COPY, POST, LIST
PRICE_TIER2 = 0.0004 / 1000    # GET, HEAD and the rest
PRICE_GB_MONTH = 0.023
TIER1 = {"PUT", "POST", "COPY", "LIST"}
FREE = {"DELETE"}


# -- picking points ---------------------------------------------------------------------------------


def _ordered(systems: dict) -> list[tuple[str, dict]]:
    order = list(LABELS)
    return sorted(systems.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def _ok(res: dict | None) -> bool:
    return bool(res and res.get("ok") and res.get("sweep"))


def headline(res: dict, target: float | None) -> dict:
    """The default operating point (ef=128) when the system has one, else the fastest sweep
    point reaching ``target`` recall (TierDB memory's default recall - 0.005), else the most
    accurate point."""
    sweep = res["sweep"]
    if res.get("default_knob"):
        for p in sweep:
            if p["knob"] == res["default_knob"]:
                return p
    if target is not None:
        good = [p for p in sweep if p["recall_at_10"] >= target]
        if good:
            return min(good, key=lambda p: p["p50_ms"])
    return max(sweep, key=lambda p: (p["recall_at_10"], -p["p50_ms"]))


def at_recall(res: dict, level: float) -> dict | None:
    good = [p for p in res["sweep"] if p["recall_at_10"] >= level]
    return min(good, key=lambda p: p["p50_ms"]) if good else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def _fmt(x, nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if x != 0 and abs(x) < 0.01:
            return f"{x:.2g}"
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _mb(b: float | None) -> float | None:
    return None if b is None else round(b / MB, 1)


# -- S3 -------------------------------------------------------------------------------------------------


def _cost(requests: dict[str, int]) -> float:
    return sum(v * (0 if k in FREE else PRICE_TIER1 if k in TIER1 else PRICE_TIER2) for k, v in requests.items())


def s3_summary(res: dict, n: int) -> dict | None:
    s3 = res.get("s3")
    if not s3:
        return None
    per_m = 1_000_000 / n
    out: dict = {"prefix": s3.get("prefix")}
    ing = (s3.get("ingest") or {}).get("server")
    if ing:
        out["ingest_requests_per_1m_docs"] = {k: round(v * per_m) for k, v in ing["requests"].items()}
        out["ingest_requests_total_per_1m_docs"] = round(ing["total_requests"] * per_m)
        out["ingest_mb_uploaded_per_1m_docs"] = round(ing["bytes_uploaded"] * per_m / MB, 1)
        out["ingest_usd_requests_per_1m_docs"] = round(_cost(ing["requests"]) * per_m, 4)
        out["ingest_error_responses"] = ing["error_responses"]
    eng = (s3.get("ingest") or {}).get("engine")
    if eng is not None:
        out["ingest_engine_counter_per_1m_docs"] = {k: round(v * per_m) for k, v in eng.items()}
    if s3.get("bucket"):
        b = s3["bucket"]
        live = b.get("live_bytes", b["bytes"])
        out["stored_objects"] = b["objects"]
        out["stored_mb"] = round(b["bytes"] / MB, 1)
        out["stored_mb_per_1m_docs"] = round(b["bytes"] * per_m / MB, 1)
        out["live_mb"] = round(live / MB, 1)
        out["live_mb_per_1m_docs"] = round(live * per_m / MB, 1)
        out["live_what"] = ("objects the current manifest references (the rest is garbage until GC)"
                            if "live_bytes" in b else "everything in the prefix")
        out["usd_storage_month_per_1m_docs"] = round(live * per_m / 1e9 * PRICE_GB_MONTH, 4)
    q = s3.get("queries") or {}
    if q.get("server") and q.get("queries"):
        per_k = 1000 / q["queries"]
        out["query_requests_per_1k_queries"] = round(q["server"]["total_requests"] * per_k, 1)
        out["query_mb_downloaded_per_1k_queries"] = round(q["server"]["bytes_downloaded"] * per_k / MB, 2)
        out["query_usd_per_1m_queries"] = round(_cost(q["server"]["requests"]) * 1000 * per_k, 4)
    if q.get("engine") is not None:
        out["query_engine_counter"] = q["engine"]
    cold = res.get("cold") or {}
    cs = (cold.get("s3") or {}).get("server")
    if cs:
        out["cold_requests"] = cs["requests"]
        out["cold_mb_downloaded"] = round(cs["bytes_downloaded"] / MB, 1)
    if (cold.get("s3") or {}).get("engine") is not None:
        out["cold_engine_counter"] = cold["s3"]["engine"]
    return out


# -- summary ---------------------------------------------------------------------------------------------


def build(results: dict) -> tuple[dict, str]:
    systems = results["systems"]
    n = results["dataset"]["n"]
    ref = systems.get(REF)
    ref_point = headline(ref, None) if _ok(ref) else None
    target = round(ref_point["recall_at_10"] - 0.005, 4) if ref_point else 0.99
    summary: dict = {"reference": REF, "recall_target_for_peers": target, "systems": {}}
    for name, res in _ordered(systems):
        if not _ok(res):
            summary["systems"][name] = {"ok": False, "error": res.get("error")}
            continue
        hp = headline(res, target)
        cold = res.get("cold") or {}
        s = {
            "ok": True,
            "headline": hp,
            "ingest_docs_per_sec": res["ingest"]["docs_per_sec"],
            "peak_rss_mb": _mb(res["rss"]["peak_bytes"]),
            "peak_rss_over_baseline_mb": _mb(res["rss"]["peak_bytes"] - res["rss"]["baseline_bytes"]),
            "disk_mb": _mb(res.get("disk_bytes")),
            "cold_spawn_to_first_result_secs": cold.get("spawn_to_first_result_secs"),
            "cold_open_plus_first_query_ms": cold.get("open_plus_first_query_ms"),
            "cold_serve_rss_mb": _mb(cold.get("serve_peak_rss_bytes")),
            "cold_serve_steady_rss_mb": _mb(cold.get("serve_rss_bytes")),
            "at_recall": {str(lv): at_recall(res, lv) for lv in RECALL_LEVELS},
            "s3": s3_summary(res, n),
        }
        summary["systems"][name] = s
    ref_s = summary["systems"].get(REF, {})
    if ref_s.get("ok"):
        for name, s in summary["systems"].items():
            if not s.get("ok"):
                continue
            r = {
                "ingest": _ratio(s["ingest_docs_per_sec"], ref_s["ingest_docs_per_sec"]),
                "p50": _ratio(s["headline"]["p50_ms"], ref_s["headline"]["p50_ms"]),
                "p99": _ratio(s["headline"]["p99_ms"], ref_s["headline"]["p99_ms"]),
                "peak_rss": _ratio(s["peak_rss_mb"], ref_s["peak_rss_mb"]),
                "disk": _ratio(s["disk_mb"], ref_s["disk_mb"]) if s["disk_mb"] else None,
                "cold": _ratio(s["cold_spawn_to_first_result_secs"], ref_s["cold_spawn_to_first_result_secs"]),
            }
            for lv in RECALL_LEVELS:
                a, b = s["at_recall"][str(lv)], ref_s["at_recall"][str(lv)]
                r[f"p50_at_recall_{lv}"] = _ratio(a and a["p50_ms"], b and b["p50_ms"])
            s["ratios_vs_tierdb_memory"] = r
    summary["verdicts"], summary["analysis"] = analyse(results, summary)
    summary["goal"] = goal_status(summary)
    return summary, markdown(results, summary)


# -- analysis -------------------------------------------------------------------------------------------------


def goal_status(summary: dict) -> list[str]:
    """The issue's two goals, answered in one line each from the verdict data."""
    S = summary["systems"]
    ok = lambda k: S.get(k, {}).get("ok")  # noqa: E731
    out: list[str] = []
    if not ok(REF):
        return ["TierDB memory did not run: no verdict."]
    ahead, behind = [], []
    for peer in PEERS:
        if not ok(peer):
            continue
        for lv in RECALL_LEVELS:
            mine, theirs = S[REF]["at_recall"][str(lv)], S[peer]["at_recall"][str(lv)]
            if mine is None:
                continue
            (ahead if theirs is None or theirs["p50_ms"] > mine["p50_ms"] else behind).append(
                f"{LABELS[peer]} @ {lv}" + (f" ({theirs['p50_ms'] / mine['p50_ms']:.2f}x)" if theirs else ""))
    fastest = min((S[p]["at_recall"]["0.99"]["p50_ms"] / S[REF]["at_recall"]["0.99"]["p50_ms"], LABELS[p])
                  for p in PEERS if ok(p) and S[p]["at_recall"]["0.99"] and S[REF]["at_recall"]["0.99"]) \
        if any(ok(p) for p in PEERS) and S[REF]["at_recall"]["0.99"] else None
    out.append(
        f"Query latency at equal recall (TierDB memory in-process vs every embedded peer, recall ≥ {', '.join(map(str, RECALL_LEVELS))}): "
        + ("MET — ahead in all " + str(len(ahead)) + " comparisons" if not behind else f"NOT MET — behind in {behind}")
        + (f"; the closest peer at recall ≥ 0.99 is {fastest[1]} at {fastest[0]:.2f}x TierDB's p50" if fastest else "")
        + (f"; raw hnswlib (no engine) is {S['hnswlib']['at_recall']['0.99']['p50_ms'] / S[REF]['at_recall']['0.99']['p50_ms']:.2f}x "
           "TierDB's p50 at recall ≥ 0.99" if ok("hnswlib") and S["hnswlib"]["at_recall"]["0.99"] and S[REF]["at_recall"]["0.99"] else "")
        + ".")
    if ok("lancedb_s3"):
        lance = S["lancedb_s3"]["s3"] or {}
        parts, misses = [], []
        for mine_name in ("tierdb_memory_s3", "tierdb_s3_only"):
            if not ok(mine_name):
                continue
            me = S[mine_name]["s3"] or {}
            for key, what in (("ingest_usd_requests_per_1m_docs", "ingest request $"),
                              ("query_usd_per_1m_queries", "query request $"),
                              ("usd_storage_month_per_1m_docs", "storage $/month")):
                if me.get(key) is None or lance.get(key) is None:
                    continue
                (parts if me[key] <= lance[key] else misses).append(
                    f"{LABELS[mine_name]} {what} {me[key]} vs {lance[key]}")
        out.append("S3 cost vs LanceDB on S3 (per 1M docs / 1M queries, AWS list prices): "
                   + ("MET on every item" if not misses else f"NOT MET on {misses}")
                   + (f"; ahead on {parts}" if parts else "") + ".")
    return out


def analyse(results: dict, summary: dict) -> tuple[list[str], list[str]]:
    S = summary["systems"]
    R = results["systems"]
    n = results["dataset"]["n"]
    verdicts: list[str] = []
    why: list[str] = []
    ok = lambda k: S.get(k, {}).get("ok")  # noqa: E731

    # query latency at equal recall, in-process peers against TierDB in-process
    for lv in RECALL_LEVELS:
        mine = S[REF]["at_recall"][str(lv)] if ok(REF) else None
        if mine is None:
            continue
        for peer in ("hnswlib", *PEERS):
            if not ok(peer):
                continue
            theirs = S[peer]["at_recall"][str(lv)]
            if theirs is None:
                verdicts.append(f"recall ≥ {lv}: {LABELS[peer]} never reaches it in its sweep; TierDB memory does at "
                                f"{mine['p50_ms']} ms p50 ({mine['knob']}) — AHEAD")
                continue
            r = theirs["p50_ms"] / mine["p50_ms"]
            state = "AHEAD" if r > 1.0 else "BEHIND"
            verdicts.append(f"recall ≥ {lv}: TierDB memory {mine['p50_ms']} ms ({mine['knob']}) vs {LABELS[peer]} "
                            f"{theirs['p50_ms']} ms ({theirs['knob']}): {r:.2f}x — {state}")
    # the S3 tiers against LanceDB on S3
    for mine_name in ("tierdb_memory_s3", "tierdb_s3_only"):
        if not (ok(mine_name) and ok("lancedb_s3")):
            continue
        for lv in (0.95, 0.99):
            a, b = S[mine_name]["at_recall"][str(lv)], S["lancedb_s3"]["at_recall"][str(lv)]
            if a and b:
                r = b["p50_ms"] / a["p50_ms"]
                verdicts.append(f"recall ≥ {lv}, warm, data in S3: {LABELS[mine_name]} {a['p50_ms']} ms vs LanceDB on S3 "
                                f"{b['p50_ms']} ms: {r:.2f}x — {'AHEAD' if r > 1 else 'BEHIND'}")
    # HTTP against in-process peers (different transport: stated, not hidden)
    if ok("tierdb_http"):
        h = S["tierdb_http"]["at_recall"]["0.95"]
        for peer in PEERS:
            if ok(peer) and h and S[peer]["at_recall"]["0.95"]:
                p = S[peer]["at_recall"]["0.95"]
                verdicts.append(f"recall ≥ 0.95, TierDB over HTTP ({h['p50_ms']} ms) vs {LABELS[peer]} in-process "
                                f"({p['p50_ms']} ms): {p['p50_ms'] / h['p50_ms']:.2f}x — "
                                f"{'AHEAD' if p['p50_ms'] > h['p50_ms'] else 'BEHIND'} (HTTP round trip included)")
    # S3 cost
    for mine_name in ("tierdb_memory_s3", "tierdb_s3_only"):
        if not (ok(mine_name) and ok("lancedb_s3")):
            continue
        a, b = S[mine_name]["s3"] or {}, S["lancedb_s3"]["s3"] or {}
        for key, what, nd in (("ingest_usd_requests_per_1m_docs", "S3 request cost of ingest per 1M docs ($)", 4),
                              ("ingest_requests_total_per_1m_docs", "S3 requests of ingest per 1M docs", 0),
                              ("live_mb_per_1m_docs", "S3 bytes stored per 1M docs, steady state (MB)", 0),
                              ("usd_storage_month_per_1m_docs", "S3 storage cost per 1M docs per month ($)", 4),
                              ("query_requests_per_1k_queries", "S3 requests per 1k warm queries", 1)):
            if a.get(key) is None or b.get(key) is None:
                continue
            state = "AHEAD" if a[key] < b[key] else "EQUAL" if a[key] == b[key] else "BEHIND"
            verdicts.append(f"{what}: {LABELS[mine_name]} {_fmt(float(a[key]), nd)} vs LanceDB on S3 {_fmt(float(b[key]), nd)} — {state}")
    # cold start of the S3 tiers against LanceDB on S3
    for mine_name in ("tierdb_memory_s3", "tierdb_s3_only"):
        if ok(mine_name) and ok("lancedb_s3"):
            a, b = S[mine_name], S["lancedb_s3"]
            if a["cold_spawn_to_first_result_secs"] and b["cold_spawn_to_first_result_secs"]:
                verdicts.append(f"cold start to first result, empty node, data in S3: {LABELS[mine_name]} "
                                f"{a['cold_spawn_to_first_result_secs']} s vs LanceDB on S3 {b['cold_spawn_to_first_result_secs']} s — "
                                f"{'AHEAD' if a['cold_spawn_to_first_result_secs'] < b['cold_spawn_to_first_result_secs'] else 'BEHIND'}")
            ma, mb_ = (a["s3"] or {}).get("cold_mb_downloaded"), (b["s3"] or {}).get("cold_mb_downloaded")
            if ma is not None and mb_ is not None:
                verdicts.append(f"S3 MB downloaded before the first answer: {LABELS[mine_name]} {ma} vs LanceDB on S3 {mb_} — "
                                f"{'AHEAD' if ma < mb_ else 'BEHIND'}")
    # ingest, RAM, disk, cold start against the in-process peers
    for key, what, higher_better in (("cold_serve_steady_rss_mb", "RSS to serve (fresh process, after open + 101 queries, MB)", False),
                                     ("ingest_docs_per_sec", "ingest docs/s (indexed)", True),
                                     ("peak_rss_over_baseline_mb", "peak RSS over the dataset baseline (MB)", False),
                                     ("disk_mb", "disk (MB)", False),
                                     ("cold_spawn_to_first_result_secs", "cold start to first result (s)", False)):
        if not ok(REF):
            continue
        mine = S[REF][key]
        for peer in PEERS:
            if not ok(peer) or S[peer][key] in (None, 0) or mine is None:
                continue
            theirs = S[peer][key]
            ahead = mine > theirs if higher_better else mine < theirs
            verdicts.append(f"{what}: TierDB memory {_fmt(mine)} vs {LABELS[peer]} {_fmt(theirs)} — {'AHEAD' if ahead else 'BEHIND'}")

    # -- why -------------------------------------------------------------------------------------------
    if ok(REF) and ok("hnswlib"):
        bd = R[REF].get("overhead_breakdown") or {}
        t, h = S[REF]["headline"], S["hnswlib"]["headline"]
        if bd:
            why.append(
                f"TierDB memory vs raw hnswlib at ef=128: {t['p50_ms']} vs {h['p50_ms']} ms p50. Measured inside the "
                f"TierDB run: hnswlib search on the segment alone {bd.get('segment_search_p50_ms')} ms, one "
                f"asyncio.to_thread round trip {bd.get('to_thread_hop_p50_ms')} ms, the whole collection.query "
                f"{bd.get('collection_query_p50_ms')} ms. The gap is the engine leaving the event loop for a worker "
                "thread on every query (Collection.query -> asyncio.to_thread) plus the read lock, the memtable probe, "
                "the merge of per-source hits and Hit objects; hnswlib itself costs the same in both.")
    for peer in ("lancedb_local", "chroma"):
        if not (ok(REF) and ok(peer)):
            continue
        behind = [lv for lv in RECALL_LEVELS
                  if S[REF]["at_recall"][str(lv)] and S[peer]["at_recall"][str(lv)]
                  and S[peer]["at_recall"][str(lv)]["p50_ms"] < S[REF]["at_recall"][str(lv)]["p50_ms"]]
        if behind:
            why.append(f"{LABELS[peer]} is faster than TierDB memory at recall ≥ {behind}: see the numbers above; "
                       "TierDB's per-query fixed cost (thread hop, see the breakdown) is the first thing to remove.")
    if ok(REF) and ok("lancedb_local"):
        lq, tq = S["lancedb_local"]["headline"], S[REF]["headline"]
        if lq["p50_ms"] > tq["p50_ms"]:
            plain = [p for p in R["lancedb_local"]["sweep"] if p["knobs"].get("refine", 1) == 1]
            lo_p, hi_p = min(plain, key=lambda p: p["knobs"]["ef"]), max(plain, key=lambda p: p["knobs"]["ef"])
            hn_range = ""
            if ok("hnswlib"):
                hs = R["hnswlib"]["sweep"]
                hn_range = (f", while hnswlib's goes from {min(p['p50_ms'] for p in hs)} to "
                            f"{max(p['p50_ms'] for p in hs)} ms over the same ef range")
            why.append(
                f"LanceDB local answers in {lq['p50_ms']} ms p50 at {lq['knob']} vs {tq['p50_ms']} ms for TierDB. Its cost "
                f"is mostly fixed per query: from {lo_p['knob']} to {hi_p['knob']} p50 only moves from {lo_p['p50_ms']} to "
                f"{hi_p['p50_ms']} ms{hn_range}. Each LanceDB "
                "search plans and runs a DataFusion query on its async runtime and returns Arrow batches through "
                "pyarrow; refine_factor adds a read of the float32 rows.")
        if S["lancedb_local"]["ingest_docs_per_sec"] > S[REF]["ingest_docs_per_sec"]:
            why.append(
                "LanceDB ingests faster: appends are only written (no index work per batch), the index is built once at "
                "the end, and its HNSW graph works on 8-bit scalar-quantised codes rather than float32 — the same "
                "quantisation caps its recall below 0.99 unless refine_factor re-reads the float32 vectors (see the "
                "sweep).")
    if ok(REF):
        raw_mb = n * results["dataset"]["dim"] * 4 / MB
        disk = S[REF]["disk_mb"]
        serve = {LABELS[k]: S[k]["cold_serve_steady_rss_mb"] for k in ("hnswlib", REF, *PEERS) if ok(k)}
        peak = {LABELS[k]: S[k]["cold_serve_rss_mb"] for k in ("hnswlib", REF, *PEERS) if ok(k)}
        why.append(
            f"RAM to serve and disk: the float32 vectors alone are {raw_mb:.1f} MB. A fresh process serving the data "
            f"holds (VmRSS after open + 101 queries, MB) {serve}; its peak during open was {peak}. TierDB keeps "
            f"{disk} MB on disk. (1) A TierDB segment stores the raw vectors *and* hnswlib's serialisation, which "
            "contains every vector again, and both stay resident (SegmentData.raw + the index): 2x the vector bytes "
            "in RAM, on disk and in S3; LanceDB's index holds 8-bit SQ codes (1/4 of float32) next to one float32 "
            "copy, Chroma one hnswlib index. (2) Opening a segment reads the whole object into one bytes value, "
            "copies the vectors out of it and reloads the index through a memfd, so the peak at open is about 3x "
            "the segment size.")
    if ok("tierdb_s3_only"):
        c = R["tierdb_s3_only"].get("cold") or {}
        s3c = (S["tierdb_s3_only"].get("s3") or {})
        if c.get("ok"):
            why.append(
                f"s3_only cold start: a new node opens in {c.get('open_secs')} s and answers its first query "
                f"{c.get('first_query_ms')} ms later; it downloads {s3c.get('cold_mb_downloaded')} MB from S3 "
                f"({s3c.get('cold_requests')}) before the first answer — whole segments, not the pages a query touches.")
    if ok("tierdb_memory_s3"):
        s3m = S["tierdb_memory_s3"].get("s3") or {}
        down, live = s3m.get("cold_mb_downloaded"), s3m.get("live_mb")
        if down and live and down > 1.1 * live:
            twice = down >= 1.9 * live
            wal_extra = down - live * (2 if twice else 1)
            text = (f"memory_s3 restore (new node, empty disk) downloads {down} MB for {live} MB of live objects "
                    f"({s3m.get('cold_requests')}): ")
            if twice:
                text += (f"2 x {live:.0f} MB because restore_collection GETs every segment once in verify_manifest "
                         "(size + sha256) and again to copy it (commit 844b8de changes this to one GET per segment, "
                         "verified in memory), plus ")
            text += (f"{wal_extra:.0f} MB of WAL: wal_tail always GETs the newest WAL object, even when the "
                     "manifest's wal_seq already covers all of it, and restore writes it to the local WAL directory "
                     "(the restored node's data directory is that much bigger). Skipping WAL objects whose records "
                     "are all <= wal_seq would bring restore egress down to the live bytes.")
            why.append(text)
    if ok(REF):
        rr = R[REF]["rss"]
        if rr.get("after_upserts_bytes"):
            up = (rr["after_upserts_bytes"] - rr["baseline_bytes"]) / MB
            raw_mb = n * results["dataset"]["dim"] * 4 / MB
            peers_ingest = {LABELS[p]: round((R[p]["rss"]["after_ingest_peak_bytes"] - R[p]["rss"]["baseline_bytes"]) / MB)
                            for p in ("hnswlib", *PEERS) if ok(p)}
            why.append(
                f"Ingest RAM: after the upserts (before any flush) TierDB memory holds {up:.0f} MB more than its baseline "
                f"for {raw_mb:.0f} MB of vectors, and peaks at "
                f"{(rr['after_ingest_peak_bytes'] - rr['baseline_bytes']) / MB:.0f} MB during flush + merge (peers' ingest "
                f"peaks over their baseline: {peers_ingest} MB). The memtable grows its float32 array by doubling "
                "(capacity up to 2x its rows, and old + new array while growing) and keeps an id str and a "
                "metadata dict per document plus the id -> row map; a flush or merge then holds the source rows, the "
                "new hnswlib index (its own copy of the vectors) and the encoded segment bytes (sections + their "
                "join) at the same time.")
    if ok(REF) and ok("hnswlib") and S[REF]["ingest_docs_per_sec"] < S["hnswlib"]["ingest_docs_per_sec"]:
        comp = R[REF]["ingest"].get("compaction") or {}
        flushed = comp.get("flushed_rows", 0)
        inserted = (n - flushed) + flushed + (n if comp.get("merged_segments", 0) > 1 else 0)
        why.append(
            f"TierDB memory ingests at {S[REF]['ingest_docs_per_sec']} docs/s vs hnswlib's single build at "
            f"{S['hnswlib']['ingest_docs_per_sec']}: it builds HNSW graphs over {inserted:,} rows for {n:,} documents "
            f"(≥ {inserted / n:.1f}x). Here the background flush at compaction.threshold_ops (10k) indexed "
            f"{n - flushed:,} rows, compact(full=True) flushed the other {flushed:,} into a second indexed segment and "
            f"then merged {comp.get('merged_segments')} segments into a new index built from scratch "
            f"({comp.get('duration_secs')} s). A merge that adds the smaller segments' rows to the largest segment's "
            "index (hnswlib resize_index + add_items) instead of rebuilding would remove most of the gap; LanceDB "
            "builds its index once, after the rows are in.")
    if ok("tierdb_http") and ok(REF):
        h, t = S["tierdb_http"]["headline"], S[REF]["headline"]
        why.append(
            f"HTTP adds {h['p50_ms'] - t['p50_ms']:.2f} ms p50 to the in-process query at ef=128 ({h['p50_ms']} vs "
            f"{t['p50_ms']} ms): a loopback round trip, JSON decoding of 384 floats and the ASGI stack; p99 "
            f"{h['p99_ms']} ms. In-process peers (Chroma, LanceDB) pay no such cost, so TierDB-over-HTTP vs an "
            "embedded library is not like for like; it is listed for completeness.")
    for mine_name in ("tierdb_s3_only", "tierdb_memory_s3"):
        if ok(mine_name) and ok("lancedb_s3"):
            a, b = S[mine_name]["s3"] or {}, S["lancedb_s3"]["s3"] or {}
            if a.get("cold_mb_downloaded") and b.get("cold_mb_downloaded") and a["cold_mb_downloaded"] > b["cold_mb_downloaded"]:
                ta, tb = S[mine_name]["cold_spawn_to_first_result_secs"], S["lancedb_s3"]["cold_spawn_to_first_result_secs"]
                imp = (R["lancedb_s3"].get("cold") or {}).get("import_secs")
                first = "TierDB still answers first" if ta and tb and ta < tb else "LanceDB answers first"
                why.append(
                    f"Cold start bytes: {LABELS[mine_name]} downloads {a['cold_mb_downloaded']} MB before its first answer, "
                    f"LanceDB on S3 {b['cold_mb_downloaded']} MB (ranged reads of what the query touches). On loopback "
                    f"{first} (TierDB {ta} s vs LanceDB {tb} s, LanceDB's {imp} s of imports included); on a real "
                    "network TierDB's time grows with the size of its segments (downloaded whole before the first "
                    "answer), LanceDB's with the number of request round trips.")
    if ok("tierdb_s3_only") or ok("tierdb_memory_s3"):
        for mine_name in ("tierdb_memory_s3", "tierdb_s3_only"):
            s3x = (S.get(mine_name) or {}).get("s3") or {}
            if s3x.get("stored_mb") and s3x.get("live_mb") and s3x["stored_mb"] > 1.2 * s3x["live_mb"]:
                why.append(
                    f"{LABELS[mine_name]} had {s3x['stored_mb']} MB in S3 at the end of the run for {s3x['live_mb']} MB live: "
                    "superseded segments and WAL objects stay until the GC's grace period (gc.grace_secs = 600 s) "
                    "has passed; the table prices the live bytes.")
                break
    if ok("lancedb_s3") and (ok("tierdb_memory_s3") or ok("tierdb_s3_only")):
        mine_name = "tierdb_memory_s3" if ok("tierdb_memory_s3") else "tierdb_s3_only"
        me, la = S[mine_name]["s3"] or {}, S["lancedb_s3"]["s3"] or {}
        raw_mb = n * results["dataset"]["dim"] * 4 / MB
        if me.get("live_mb") and la.get("live_mb") and me["live_mb"] > la["live_mb"]:
            extra = me["usd_storage_month_per_1m_docs"] - la["usd_storage_month_per_1m_docs"]
            per_query = (la.get("query_usd_per_1m_queries") or 0) / 1e6
            line = (f"S3 storage is where TierDB is behind: {me['live_mb']} MB live for {raw_mb:.1f} MB of float32 vectors "
                    f"({me['live_mb'] / raw_mb:.2f}x; the segment holds the vectors twice, see above) vs LanceDB's "
                    f"{la['live_mb']} MB ({la['live_mb'] / raw_mb:.2f}x: float32 columns + an SQ index), "
                    f"{extra:.4f} $ per 1M docs per month more.")
            if per_query > 0:
                line += (f" LanceDB pays {la['query_usd_per_1m_queries']} $ per 1M warm queries in GET requests that "
                         f"TierDB does not make, so TierDB's total S3 bill is lower as soon as a collection of 1M "
                         f"documents serves more than {extra / per_query:,.0f} queries a month; its one-off ingest "
                         f"requests are also cheaper ({me.get('ingest_usd_requests_per_1m_docs')} vs "
                         f"{la.get('ingest_usd_requests_per_1m_docs')} $ per 1M docs). Storing the vectors once (for "
                         "cosine, hnswlib keeps the normalised vectors: raw = normalised x a stored per-row norm) would "
                         "put TierDB near 1.1x the vector bytes, below LanceDB on storage too.")
            why.append(line)
    skipped = [w for name in TIERDB for w in (R.get(name) or {}).get("warnings") or [] if "skipped: maximum number" in w]
    if skipped:
        why.append(
            f"Engine warnings: {len(skipped)} x apscheduler 'Execution of job \"Engine._upload_job\" skipped: maximum "
            "number of running instances reached' while memory_s3 uploaded its segments: an upload run that lasts "
            "longer than uploader.interval_secs (1 s) — shipping a 160 MB segment does — makes the scheduler log a "
            "WARNING for each skipped tick. Nothing is lost (the running job ships everything), but operators see "
            "warnings on every large flush or merge; coalescing the job (or logging this at DEBUG) would fix it.")
    if ok("lancedb_s3"):
        s3l = S["lancedb_s3"].get("s3") or {}
        why.append(
            f"LanceDB on S3 issues {s3l.get('query_requests_per_1k_queries')} S3 requests per 1000 warm queries "
            f"({s3l.get('query_mb_downloaded_per_1k_queries')} MB) and {s3l.get('ingest_requests_total_per_1m_docs')} "
            "per 1M ingested documents: every add is a new fragment plus a manifest commit (several PUTs, GETs "
            "and LISTs), and queries read vector pages with ranged GETs (refine) — TierDB's S3 tiers serve warm "
            "queries from RAM with zero S3 requests.")
    return verdicts, why


# -- output ------------------------------------------------------------------------------------------------------


def _rows_main(summary: dict, results: dict) -> list[list]:
    rows = []
    for name, s in summary["systems"].items():
        if not s.get("ok"):
            rows.append([LABELS.get(name, name), "FAILED: " + str(s.get("error"))[:80]] + [""] * (len(MAIN_HEADER) - 2))
            continue
        h = s["headline"]
        s3 = s.get("s3") or {}
        rows.append([
            LABELS.get(name, name), h["knob"], _fmt(s["ingest_docs_per_sec"], 0), _fmt(h["p50_ms"], 3), _fmt(h["p95_ms"], 3),
            _fmt(h["p99_ms"], 3), _fmt(h["recall_at_10"], 4), _fmt(s["peak_rss_mb"], 0),
            _fmt(s["cold_serve_steady_rss_mb"], 0), _fmt(s["disk_mb"], 1),
            _fmt(s3.get("live_mb_per_1m_docs"), 0), _fmt(s3.get("ingest_requests_total_per_1m_docs")),
            _fmt(s["cold_spawn_to_first_result_secs"], 2),
        ])
    return rows


MAIN_HEADER = ["system", "knob", "ingest docs/s", "p50 ms", "p95 ms", "p99 ms", "recall@10", "peak RSS MB",
               "serve RSS MB", "disk MB", "S3 MB / 1M docs (live)", "S3 req / 1M docs", "cold start s"]


def _rows_ratios(summary: dict) -> list[list]:
    rows = []
    for name, s in summary["systems"].items():
        r = s.get("ratios_vs_tierdb_memory")
        if not r:
            continue
        rows.append([LABELS.get(name, name), _fmt(r["ingest"]), _fmt(r["p50"]), _fmt(r["p99"])]
                    + [_fmt(r[f"p50_at_recall_{lv}"]) for lv in RECALL_LEVELS]
                    + [_fmt(r["peak_rss"]), _fmt(r["disk"]), _fmt(r["cold"])])
    return rows


RATIO_HEADER = ["system", "ingest ×", "p50 ×", "p99 ×"] + [f"p50 @ recall≥{lv} ×" for lv in RECALL_LEVELS] + \
               ["peak RSS ×", "disk ×", "cold start ×"]


def console(results: dict) -> str:
    summary = results["summary"]
    out = ["", "== headline operating points (TierDB / hnswlib / Chroma: ef=128; LanceDB: fastest point with recall ≥ "
           f"{summary['recall_target_for_peers']}) ==",
           markdown_table(MAIN_HEADER, _rows_main(summary, results)),
           "== ratios against TierDB memory (in-process): > 1 = more (slower / bigger / faster ingest) ==",
           markdown_table(RATIO_HEADER, _rows_ratios(summary)),
           "== goal =="]
    out += ["  " + g for g in summary.get("goal", [])]
    out += ["== verdicts =="]
    out += ["  " + v for v in summary["verdicts"]]
    return "\n".join(out)


def markdown(results: dict, summary: dict) -> str:
    m, ds = results["machine"], results["dataset"]
    S, R = summary["systems"], results["systems"]
    lines = [
        "# TierDB against its peers",
        "",
        f"One run of `benchmarks/compare.py` on one machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; "
        f"load average (1 min) {m['loadavg_1m_at_start']} at start, {m['loadavg_1m_at_end']} at end"
        + (f" (waited {results['idle_wait']['waited_secs']} s for it to drop)" if results.get("idle_wait") else "")
        + f"; {results['total_secs']} s in total.",
        f"Dataset `{ds['dir']}`: {ds['n']:,} × {ds['dim']} float32, {ds['queries']} queries, k=10, cosine; ingest in "
        f"batches of {results['batch']} documents (id, vector, metadata {{row}}) for every system.",
        f"S3: {results.get('s3_server', {}).get('kind', 'none')} on loopback "
        f"({'requests and bytes counted by the server' if results.get('s3_server', {}).get('server_side_metrics') else 'no server-side counters'}).",
        "",
        "## Headline",
        "",
        "Knob: TierDB, hnswlib and Chroma at ef=128 (TierDB's default `ef_search`, M=16, ef_construction=200 "
        f"everywhere); LanceDB at its fastest setting reaching recall@10 ≥ {summary['recall_target_for_peers']} "
        "(TierDB memory's recall - 0.005). Ingest = documents per second until searchable with the index built. "
        "Query = single query, sequential, after 20 warm-up queries; each sweep point runs all queries or stops "
        "after 15 s of query time (at least 200 queries; only LanceDB on S3 is that slow). Peak RSS = VmHWM of the "
        "process that ingested and queried (the server's for HTTP), the dataset arrays (base, queries) included. "
        "Serve RSS = VmRSS of a fresh process after opening the stored data and answering 101 queries (no dataset "
        "loaded). Cold start = spawn of a fresh process to the first answer (interpreter, imports, open, first "
        "query; HTTP: server start to first answer; S3 tiers: a new node with an empty data directory).",
        "",
        markdown_table(MAIN_HEADER, _rows_main(summary, results)),
        "## Ratios against TierDB memory (in-process)",
        "",
        "`> 1` means more: slower queries, more RAM or disk, longer cold start — or faster ingest.",
        "",
        markdown_table(RATIO_HEADER, _rows_ratios(summary)),
        "## Latency at equal recall",
        "",
        "The fastest sweep point of each system reaching the recall level: p50 ms (knob).",
        "",
    ]
    rows = []
    for name, s in S.items():
        if s.get("ok"):
            rows.append([LABELS.get(name, name)] + [
                f"{p['p50_ms']} ({p['knob']})" if p else "not reached" for p in (s["at_recall"][str(lv)] for lv in RECALL_LEVELS)])
    lines += [markdown_table(["system"] + [f"recall ≥ {lv}" for lv in RECALL_LEVELS], rows)]

    lines += ["## S3 cost", "",
              "Requests and bytes counted by the S3 server (SeaweedFS metrics) for the bucket, per phase; TierDB's own "
              "`storage_s3_requests_total` counter alongside as a cross-check. Scaled linearly to 1M documents "
              "(TierDB memory_s3 uploads on a 1 s timer, so its count scales with ingest time, not documents). "
              f"Dollars: AWS S3 Standard list prices (${PRICE_TIER1 * 1000:.3f} per 1k PUT/POST/LIST, "
              f"${PRICE_TIER2 * 1000:.4f} per 1k GET/HEAD, DELETE free, ${PRICE_GB_MONTH}/GB-month).", ""]
    rows = []
    for name, s in S.items():
        s3 = s.get("s3") if s.get("ok") else None
        if not s3:
            continue
        rows.append([
            LABELS.get(name, name),
            ", ".join(f"{k} {v:,}" for k, v in (s3.get("ingest_requests_per_1m_docs") or {}).items()) or "—",
            ", ".join(f"{k} {v:,}" for k, v in (s3.get("ingest_engine_counter_per_1m_docs") or {}).items()) or "—",
            _fmt(s3.get("ingest_mb_uploaded_per_1m_docs"), 0), _fmt(s3.get("ingest_usd_requests_per_1m_docs"), 4),
            f'{_fmt(s3.get("live_mb_per_1m_docs"), 0)} ({_fmt(s3.get("stored_mb_per_1m_docs"), 0)})',
            _fmt(s3.get("usd_storage_month_per_1m_docs"), 3),
            _fmt(s3.get("query_requests_per_1k_queries"), 1), _fmt(s3.get("query_usd_per_1m_queries"), 3),
            (", ".join(f"{k} {v}" for k, v in (s3.get("cold_requests") or {}).items()) or "—")
            + f" / {_fmt(s3.get('cold_mb_downloaded'), 1)} MB",
        ])
    lines += [markdown_table(["system", "ingest requests / 1M docs (server)", "(TierDB counter)", "MB uploaded / 1M docs",
                              "ingest $ / 1M docs", "MB stored / 1M docs: live (all, at end of run)", "storage $ / month / 1M docs (live)",
                              "requests / 1k warm queries", "query $ / 1M queries", "cold open: requests / MB down"], rows)]

    lines += ["## Cold start", ""]
    rows = []
    for name, res in _ordered(R):
        c = res.get("cold") if res.get("ok") else None
        if not c:
            continue
        if not c.get("ok"):
            rows.append([LABELS.get(name, name), "FAILED " + str(c.get("error")), "", "", "", "", "", "", ""])
            continue
        rows.append([LABELS.get(name, name), c.get("what", ""), _fmt(c.get("import_secs"), 2), _fmt(c.get("open_secs"), 3),
                     _fmt(c.get("first_query_ms"), 1), _fmt(c.get("spawn_to_first_result_secs"), 2),
                     _fmt((c.get("next_queries") or {}).get("p50_ms"), 3), _fmt(_mb(c.get("serve_peak_rss_bytes")), 0),
                     _fmt(_mb(c.get("serve_rss_bytes")), 0)])
    lines += [markdown_table(["system", "what", "imports s", "open s", "first query ms", "spawn → first answer s",
                              "next 100 queries p50 ms", "peak RSS MB (open + queries)", "RSS MB after"], rows)]

    lines += ["## Sweeps (latency vs recall)", "", "![p50 latency vs recall@10](compare.png)", ""]
    rows = []
    for name, res in _ordered(R):
        if _ok(res):
            for p in res["sweep"]:
                rows.append([LABELS.get(name, name), p["knob"], p["p50_ms"], p["p95_ms"], p["p99_ms"], p["recall_at_10"]])
    lines += [markdown_table(["system", "knob", "p50 ms", "p95 ms", "p99 ms", "recall@10"], rows)]

    lines += ["## Ingest detail", ""]
    rows = []
    for name, res in _ordered(R):
        if res.get("ok"):
            i = res["ingest"]
            rows.append([LABELS.get(name, name), i.get("what", ""), _fmt(i.get("ack_docs_per_sec"), 0), _fmt(i["docs_per_sec"], 0),
                         _fmt(i.get("secs_until_all_in_s3"), 1),
                         _fmt(_mb(res["rss"]["after_ingest_peak_bytes"]), 0), _fmt(_mb(res["rss"]["baseline_bytes"]), 0)])
    lines += [markdown_table(["system", "what is timed", "docs/s acknowledged", "docs/s indexed", "s until all in S3",
                              "peak RSS after ingest MB", "RSS baseline (dataset loaded) MB"], rows)]

    lines += ["## Verdicts", "", "Against the issue's goal (TierDB ahead of every peer on query latency at equal recall "
              "and on S3 cost):", ""]
    lines += [f"**{g}**" + "\n" for g in summary.get("goal", [])]
    lines += ["Every comparison:", ""]
    lines += [f"- {v}" for v in summary["verdicts"]]
    lines += ["", "## Why", ""]
    lines += [f"- {w}" for w in summary["analysis"]]
    problems = []
    for name, res in _ordered(R):
        if not res.get("ok"):
            problems.append(f"- {LABELS.get(name, name)} FAILED: {res.get('error')}")
        for w in res.get("warnings") or []:
            problems.append(f"- {LABELS.get(name, name)}: {w}")
        c = res.get("cold") or {}
        if res.get("ok") and c and not c.get("ok"):
            problems.append(f"- {LABELS.get(name, name)} cold start FAILED: {c.get('error')}")
    if problems:
        lines += ["", "## Failures and engine warnings", ""] + problems
    lines += ["", "## Method and caveats", "",
              "- Each system runs in its own process (`compare.py --run SYSTEM`); its peak RSS is VmHWM, reset after the "
              "dataset is loaded (Linux clear_refs) so the ground-truth computation is not charged to it. The cold "
              "start runs in a third process (`compare.py --cold SYSTEM`).",
              "- The S3 server is on loopback: no network latency or bandwidth limit. Cold-start times on a remote "
              "store grow with the MB downloaded shown above.",
              "- LanceDB: IVF_HNSW_SQ, 1 partition, m=16, ef_construction=200, cosine; `ef` sweep, plus "
              "`refine_factor=2` points (see benchmarks/peers/lance.py for why not IVF_PQ).",
              "- Chroma: ef_search changed with `collection.modify` + reopen (a live collection keeps its loaded "
              "ef; see benchmarks/peers/chroma.py); its peak RSS includes those reopens.",
              "- hnswlib is the floor: no ids, metadata, WAL or durability.",
              ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        return False
    styles = {
        "hnswlib": ("black", "o", ":"), "tierdb_memory": ("tab:blue", "o", "-"), "tierdb_http": ("tab:cyan", "s", "-"),
        "tierdb_memory_s3": ("tab:green", "^", "-"), "tierdb_s3_only": ("tab:olive", "v", "-"),
        "lancedb_local": ("tab:red", "D", "--"), "lancedb_s3": ("tab:orange", "P", "--"), "chroma": ("tab:purple", "X", "--"),
    }
    fig, ax = plt.subplots(figsize=(12.5, 6.5), dpi=110)
    for name, res in _ordered(results["systems"]):
        if not _ok(res):
            continue
        pts = sorted(res["sweep"], key=lambda p: p["recall_at_10"])
        color, marker, ls = styles.get(name, ("gray", "o", "-"))
        xs = [min(p["recall_at_10"], CLIP) for p in pts]
        ys = [p["p50_ms"] for p in pts]
        ax.plot(xs, ys, ls, marker=marker, color=color, label=LABELS.get(name, name), linewidth=1.6, markersize=6)
        for p in pts:
            ax.annotate(p["knob"].replace("ef=", ""), (min(p["recall_at_10"], CLIP), p["p50_ms"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=6.5, color=color)
    ax.set_yscale("log")
    # logit: spreads 0.9 / 0.99 / 0.999 evenly, where the systems differ; recall 1.0 is drawn at CLIP
    ax.set_xscale("logit")
    lo = min((p["recall_at_10"] for r in results["systems"].values() if _ok(r) for p in r["sweep"]), default=0.8)
    ax.set_xlim(max(0.5, math.floor(lo * 20) / 20 - 0.01), CLIP * 1.00003)
    ticks = [t for t in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999) if t >= ax.get_xlim()[0]]
    ax.set_xticks(ticks + [CLIP])
    ax.set_xticklabels([str(t) for t in ticks] + ["1.0"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("recall@10 (logit scale)")
    ax.set_ylabel("p50 query latency, ms (log scale)")
    ds = results["dataset"]
    ax.set_title(f"p50 latency vs recall@10 — {ds['n']:,} × {ds['dim']}, k=10, single query "
                 f"({results['machine']['cpus']} CPUs); labels = ef (rf = LanceDB refine_factor)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
