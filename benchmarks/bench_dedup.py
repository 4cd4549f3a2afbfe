"""Near-duplicate dedup at scale: xmodal's LSH dedup against exact blocked matmul, same embeddings.

The embeddings (1,000,000 x 512 float16 unit vectors; ``--quick``: 50,000) are seeded and
clustered like image embeddings: every vector is a shared mean direction (cosine 0.4 between
unrelated rows) plus one of N/1000 topic centres (cosine 0.65 within a topic) plus its own
part; on top of that ~8% of the rows are planted near-duplicate groups of 2-5 (a base row and
copies with noise: cosine 0.96-0.995 between members, so every member is at >= 0.95 of every
other and the answer is known: every member but the best-ranked one is a duplicate).

(a) xmodal's dedup as ``pipeline/run/dataset_checks.py`` runs it on Ray (local Ray, 2 CPUs, in a
child process): the signatures are given as a ``ray.data`` dataset of blocks (the signature
step itself, which builds them from staged rows, is not timed), then ``band_buckets`` per block
(``map_batches``), ``groupby("bucket").map_groups(duplicate_verdicts)`` and the verdicts
materialised and merged -- the same calls, parameters (``DuplicateParams`` defaults: threshold
0.95, 8 bands x 10 bits, blocks of at most 8,192 rows) and partitioning (one per signature
block) as ``dataset_checks_on_ray``. ``--local`` runs the same functions in one process as
``dataset_checks_local`` does.

(b) the reference: exact cosine of every query against all N rows, float32 numpy matmul in
blocks of 4,096 queries x 32,768 keys (2 BLAS threads), keeping the neighbours at >= the same
threshold; a row is a duplicate when one of them ranks above it (the same keep rule). The
full reference is N/4096 query blocks (~1e15 flops at 1 M: hours on 2 cores), so only
``--ref-blocks`` random query blocks are run and the time is extrapolated linearly (each block
costs the same: every query meets every key); the output says so.

Printed: both times and their ratio, recall of the duplicates (vs the planted answer on all
rows and vs the exact reference on the sampled rows), the LSH buckets' sizes and the cosines
each side computes, and peak memory: each side's ``VmHWM``, and for the Ray side the peak, sampled
every 0.25 s, of the private memory (``RssAnon``) of the driver and every Ray process it
started plus the largest shared (object store) resident set among them.

Run: ``python -m benchmarks.bench_dedup [--quick] [--n N] [--ref-blocks K] [--local]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._result import report  # noqa: E402

DIM, SEED, THREADS = 512, 0, 2
QUERY_BLOCK, KEY_BLOCK = 4096, 32768
ROW_BLOCK = 10_000  # rows per signature block handed to Ray (100 blocks, 100 partitions at 1 M)


# --- data -------------------------------------------------------------------------------------

def make_data(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Embeddings (n, 512) float16 unit rows; ``group`` (-1 or the planted group); ``pixels``
    and ``score`` (the keep rule's inputs)."""
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(DIM).astype(np.float32)
    mean /= np.linalg.norm(mean)
    topics = max(16, n // 1000)
    centres = rng.standard_normal((topics, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, topics, n)
    g, t, r = np.sqrt([0.40, 0.25, 0.35]).astype(np.float32)
    emb = np.empty((n, DIM), np.float16)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        x = rng.standard_normal((e - s, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x = g * mean + t * centres[topic[s:e]] + r * x
        emb[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    # planted groups: sizes 2-5, their rows spread over the whole dataset
    sizes = rng.integers(2, 6, max(1, n // 40))
    members = rng.permutation(n)[:int(sizes.sum())]
    group = np.full(n, -1, np.int64)
    spread = rng.uniform(0.005, 0.035, len(sizes)).astype(np.float32)  # |noise|^2 of a copy
    start = 0
    for k, size in enumerate(sizes):
        rows = members[start:start + size]
        start += size
        group[rows] = k
        base = emb[rows[0]].astype(np.float32)
        noise = rng.standard_normal((size - 1, DIM), dtype=np.float32) * np.sqrt(spread[k] / DIM)
        copies = base + noise
        emb[rows[1:]] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    pixels = rng.choice(np.array([224 * 224, 512 * 512, 640 * 480, 1024 * 768]), n)
    score = rng.random(n)
    return {"emb": emb, "group": group, "pixels": pixels.astype(np.int64), "score": score}


def global_rank(pixels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each row's place in the keep order (0 = kept first): most pixels, highest score, smallest
    id (ids are ``r%07d`` of the row number), as ``stages.near_duplicates.keep_order``."""
    order = np.lexsort((np.arange(len(pixels)), -score, -pixels))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def planted_answer(group: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Rows that are duplicates by construction: every planted member but its group's best."""
    rows = np.flatnonzero(group >= 0)
    best: dict[int, int] = {}
    for i in rows[np.argsort(rank[rows])]:
        best.setdefault(int(group[i]), int(i))
    keep = np.fromiter(best.values(), np.int64)
    return np.setdiff1d(rows, keep)


def row_id(i: int) -> str:
    return f"r{i:07d}"


def signature_blocks(data: dict[str, np.ndarray], block: int = ROW_BLOCK) -> list[Any]:
    """The columns of a signature table that ``band_buckets`` reads, in blocks of ``block`` rows."""
    import pyarrow as pa

    n = len(data["emb"])
    out = []
    for s in range(0, n, block):
        e = min(n, s + block)
        flat = pa.array(data["emb"][s:e].reshape(-1), pa.float16())
        emb = pa.FixedSizeListArray.from_arrays(flat, DIM).cast(pa.list_(pa.float16()))
        ids = [row_id(i) for i in range(s, e)]
        out.append(pa.table({"ref": pa.array(ids, pa.string()), "id": pa.array(ids, pa.string()),
                             "pixels": pa.array(data["pixels"][s:e], pa.int64()),
                             "score": pa.array(data["score"][s:e], pa.float64()), "emb": emb}))
    return out


# --- memory -----------------------------------------------------------------------------------

def _status(pid: int | str, *fields: str) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name = line.split(":", 1)[0]
                if name in fields:
                    out[name] = int(line.split()[1])
    except OSError:
        pass
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class TreeMemory:
    """Peak, sampled every 0.25 s, of this process and its descendants (Ray's processes):
    the sum of their private memory (``RssAnon``) and the largest shared resident set
    (``RssShmem``: the object store's pages)."""

    def __init__(self) -> None:
        self.peak_private = self.peak_shared = self.peak_total = 0
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        private = shared = 0
        for pid in _descendants(os.getpid()):
            st = _status(pid, "RssAnon", "RssShmem", "VmHWM")
            private += st.get("RssAnon", 0)
            shared = max(shared, st.get("RssShmem", 0))
            self.hwm[pid] = max(self.hwm.get(pid, 0), st.get("VmHWM", 0))
        self.peak_private = max(self.peak_private, private)
        self.peak_shared = max(self.peak_shared, shared)
        self.peak_total = max(self.peak_total, private + shared)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def stop(self) -> dict[str, int]:
        self._sample()
        self._stop.set()
        self._thread.join()
        return {"tree_private_kib": self.peak_private, "tree_shared_kib": self.peak_shared,
                "tree_total_kib": self.peak_total, "processes": len(self.hwm)}


# --- (a) xmodal's dedup -----------------------------------------------------------------------

def _params() -> Any:
    from stages.dataset_checks import DatasetChecksParams

    return DatasetChecksParams.model_validate({"after": "x", "score_column": "score",
                                               "duplicates": {"embedding_column": "emb"}})


def _rejected_rows(verdicts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rejected rows, the kept row each names), from merged verdict tables."""
    from stages.dataset_verdicts import merge_verdicts

    merged = merge_verdicts(verdicts)
    rows = np.array([int(r[1:]) for r in merged["ref"].to_pylist()], np.int64)
    kept = np.array([int(w[1:]) for w in merged["w_id"].to_pylist()], np.int64)
    return rows, kept


def _renamed(p: Any, table: Any) -> Any:
    """Signature blocks name their embedding column as the pipeline does (``emb__<column>``)."""
    from stages.dataset_checks import emb_field

    return table.rename_columns([emb_field(p.duplicates.embedding_column) if c == "emb" else c
                                 for c in table.column_names])


def dedup_ray(blocks: list[Any], work: Path) -> tuple[Any, dict[str, Any]]:
    import ray

    from pipeline.run.dataset_checks import _CPUS, _Bound, _bucket_verdicts, _buckets

    p = _params()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"), log_to_driver=False)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        sig = ray.data.from_arrow([_renamed(p, b) for b in blocks]).materialize()
        t0 = time.perf_counter()
        # as dataset_checks_on_ray: buckets per block, a hash shuffle by bucket, verdicts per bucket
        kw: dict[str, Any] = {"batch_format": "pyarrow", "num_cpus": _CPUS}
        parts = p.partitions or max(1, sig.num_blocks())
        buckets = sig.map_batches(_Bound(_buckets, p), **kw)
        verdicts = buckets.groupby("bucket", num_partitions=parts).map_groups(_Bound(_bucket_verdicts, p), **kw)
        refs = verdicts.materialize().to_arrow_refs()
        tables = ray.get(refs)
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return tables, {"seconds": seconds, "partitions": parts, "path": "ray"}


def dedup_local(blocks: list[Any]) -> tuple[Any, dict[str, Any]]:
    import pyarrow as pa

    from pipeline.run.dataset_checks import _bucket_verdicts, _buckets, iter_groups

    p = _params()
    blocks = [_renamed(p, b) for b in blocks]
    t0 = time.perf_counter()
    buckets = pa.concat_tables([_buckets(p, b) for b in blocks])  # as dataset_checks_local
    tables = [_bucket_verdicts(p, g) for g in iter_groups(buckets, "bucket")]
    return tables, {"seconds": time.perf_counter() - t0, "path": "local"}


def child_dedup(work: Path, local: bool) -> None:
    arrays = np.load(work / "data.npz")
    data = {k: arrays[k] for k in ("emb", "pixels", "score")}
    blocks = signature_blocks(data)
    del data, arrays
    inputs_kib = _status("self", "VmRSS")["VmRSS"]
    tree = TreeMemory()
    tables, out = dedup_local(blocks) if local else dedup_ray(blocks, work)
    out.update(tree.stop())
    rows, kept = _rejected_rows(tables)
    np.savez(work / "dedup.npz", rows=rows, kept=kept)
    out.update(hwm_kib=_status("self", "VmHWM")["VmHWM"], inputs_kib=inputs_kib)
    print("CHILD " + json.dumps(out), flush=True)


# --- (b) the exact reference ------------------------------------------------------------------

def reference_block(emb32: np.ndarray, start: int, stop: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(query row, neighbour row) of every pair at cosine >= ``threshold`` for queries
    ``start:stop`` against all rows (the query itself left out)."""
    q = emb32[start:stop]
    qs, ks = [], []
    for k0 in range(0, len(emb32), KEY_BLOCK):
        sims = q @ emb32[k0:k0 + KEY_BLOCK].T
        i, j = np.nonzero(sims >= threshold)
        qs.append(i + start)
        ks.append(j + k0)
    qi, kj = np.concatenate(qs), np.concatenate(ks)
    other = qi != kj
    return qi[other], kj[other]


def child_reference(work: Path, blocks: list[int], threshold: float) -> None:
    arrays = np.load(work / "data.npz")
    emb = arrays["emb"]
    t0 = time.perf_counter()
    emb32 = emb.astype(np.float32)
    norm = np.linalg.norm(emb32, axis=1, keepdims=True)
    emb32 /= norm  # as unit_matrix: float16 rows are unit only to ~1e-3
    prep = time.perf_counter() - t0
    inputs_kib = _status("self", "VmRSS")["VmRSS"]
    per_block, pairs = [], []
    for b in blocks:
        t1 = time.perf_counter()
        qi, kj = reference_block(emb32, b * QUERY_BLOCK, min(len(emb), (b + 1) * QUERY_BLOCK), threshold)
        per_block.append(time.perf_counter() - t1)
        pairs.append(np.stack([qi, kj], axis=1))
    np.save(work / "reference.npy", np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    print("CHILD " + json.dumps({"prep_s": prep, "block_s": per_block, "inputs_kib": inputs_kib,
                                 "hwm_kib": _status("self", "VmHWM")["VmHWM"]}), flush=True)


# --- driver -----------------------------------------------------------------------------------

def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_dedup", *args], env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CHILD "))
    return dict(json.loads(line[len("CHILD "):]))


def bucket_stats(emb: np.ndarray, p: Any) -> dict[str, Any]:
    """Sizes of the LSH buckets ``band_buckets`` makes of these rows (the same hyperplanes) and
    the cosines the verdicts compute: a bucket of s <= max_block_rows rows costs s(s-1)/2, a
    larger one is split into pieces of at most max_block_rows (bounded by s x max_block_rows)."""
    from stages.near_duplicates import hyperplanes

    d = p.duplicates
    planes = hyperplanes(DIM, d.bands * d.bits, d.seed)
    weights = 1 << np.arange(d.bits, dtype=np.int64)
    sizes = []
    for band in range(d.bands):
        keys = np.empty(len(emb), np.int64)
        for s in range(0, len(emb), 65536):
            signs = (emb[s:s + 65536].astype(np.float32) @ planes[band * d.bits:(band + 1) * d.bits].T) >= 0
            keys[s:s + 65536] = signs @ weights
        sizes.append(np.unique(keys, return_counts=True)[1])
    c = np.concatenate(sizes).astype(np.float64)
    small = c[c <= d.max_block_rows]
    return {"buckets": len(c), "largest": int(c.max()), "median": float(np.median(c)),
            "mean_rows_per_row": float((c * c).sum() / c.sum()),
            "over_max": int((c > d.max_block_rows).sum()), "rows_over_max": int(c[c > d.max_block_rows].sum()),
            "cosines_small": float((small * (small - 1) / 2).sum()),
            "cosines_split_bound": float((c[c > d.max_block_rows] * d.max_block_rows).sum())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="rows (default 1,000,000; --quick 50,000)")
    ap.add_argument("--ref-blocks", type=int, default=None, help="query blocks of 4,096 the reference runs "
                    "(default 2; --quick: 4)")
    ap.add_argument("--local", action="store_true", help="xmodal's dedup in-process instead of on Ray")
    ap.add_argument("--child", choices=["dedup", "reference"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--blocks", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    p = _params()
    threshold = p.duplicates.threshold
    if args.child == "dedup":
        child_dedup(Path(args.work), args.local)
        return 0
    if args.child == "reference":
        child_reference(Path(args.work), [int(b) for b in args.blocks.split(",") if b], threshold)
        return 0

    n = args.n or (50_000 if args.quick else 1_000_000)
    n_blocks = -(-n // QUERY_BLOCK)
    ref_blocks = min(n_blocks, args.ref_blocks or (4 if args.quick else 2))
    with tempfile.TemporaryDirectory(prefix="xdd-", dir="/tmp") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        data = make_data(n)
        np.savez(work / "data.npz", emb=data["emb"], group=data["group"], pixels=data["pixels"],
                 score=data["score"])
        print(f"{n:,} x {DIM} float16 embeddings ({n * DIM * 2 / 2**20:.0f} MiB), "
              f"{int((data['group'] >= 0).sum()):,} rows in {int(data['group'].max()) + 1:,} planted groups, "
              f"made in {time.perf_counter() - t0:.1f} s", flush=True)
        token = work / "ray-token"
        token.write_text(os.urandom(16).hex())
        env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(ROOT))
        ref_env = dict(env, OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
                       MKL_NUM_THREADS=str(THREADS))
        # Ray sets each worker's thread count from its CPUs; the in-process dedup gets 2 threads
        dedup = _child(["--child", "dedup", "--work", tmp, *(["--local"] if args.local else [])],
                       ref_env if args.local else env)
        picked = sorted(np.random.default_rng(SEED + 1).choice(n_blocks, ref_blocks, replace=False).tolist())
        ref = _child(["--child", "reference", "--work", tmp, "--blocks", ",".join(map(str, picked))], ref_env)
        got = np.load(work / "dedup.npz")
        rej, kept = got["rows"], got["kept"]
        pairs = np.load(work / "reference.npy")
    stats = bucket_stats(data["emb"], p)
    rank = global_rank(data["pixels"], data["score"])
    truth = planted_answer(data["group"], rank)

    # the exact reference's duplicates among the sampled queries: a neighbour ranks above
    sampled = np.concatenate([np.arange(b * QUERY_BLOCK, min(n, (b + 1) * QUERY_BLOCK)) for b in picked])
    above = pairs[rank[pairs[:, 1]] < rank[pairs[:, 0]]]
    ref_rej = np.unique(above[:, 0])
    truth_sampled = np.intersect1d(truth, sampled)
    rej_sampled = np.intersect1d(rej, sampled)
    recall_ref = len(np.intersect1d(rej_sampled, ref_rej)) / max(1, len(ref_rej))
    recall_truth = len(np.intersect1d(rej, truth)) / max(1, len(truth))
    not_planted = len(np.setdiff1d(rej, truth))
    # the kept row each verdict names: the best-ranked member of the group
    best_of = {int(data["group"][i]): int(i) for i in np.setdiff1d(np.flatnonzero(data["group"] >= 0), truth)}
    planted_rej = np.isin(rej, truth)
    named = [best_of.get(int(data["group"][r]), -1) == int(k)
             for r, k in zip(rej[planted_rej], kept[planted_rej], strict=True)]
    right_keeper = float(np.mean(named)) if named else 1.0

    measured = float(sum(ref["block_s"]))
    full = ref_blocks == n_blocks
    ref_s = ref["prep_s"] + (measured if full else measured / ref_blocks * n_blocks)
    how = "measured" if full else f"extrapolated from {ref_blocks} random blocks of {n_blocks}"
    ratio = ref_s / dedup["seconds"]
    ref_cos = float(n) * n
    dedup_cos = stats["cosines_small"] + stats["cosines_split_bound"]
    print(f"\nxmodal dedup ({dedup['path']}, {dedup.get('partitions', 1)} partitions): {dedup['seconds']:.1f} s; "
          f"{len(rej):,} rows rejected")
    print(f"exact reference (blocked float32 matmul {QUERY_BLOCK} x {KEY_BLOCK}, {THREADS} threads): "
          f"{ref_s:.0f} s {how} ({np.mean(ref['block_s']):.1f} s per block of {QUERY_BLOCK} queries x {n:,})")
    print(f"time ratio reference / dedup = {ratio:.1f}")
    print(f"recall of the planted duplicates (all {n:,} rows): {recall_truth:.4f} "
          f"({len(np.intersect1d(rej, truth)):,} of {len(truth):,}); rejected but not planted: {not_planted}; "
          f"verdict names the group's best-ranked row: {right_keeper:.4f}")
    print(f"recall vs the exact reference on the {len(sampled):,} sampled rows: {recall_ref:.4f} "
          f"({len(np.intersect1d(rej_sampled, ref_rej))} of {len(ref_rej)}); the reference's duplicates "
          f"{'==' if np.array_equal(ref_rej, truth_sampled) else '!='} the planted ones there")
    print(f"LSH buckets: {stats['buckets']:,} over {p.duplicates.bands} bands, largest {stats['largest']:,} rows, "
          f"median {stats['median']:.0f}, a row shares a bucket with {stats['mean_rows_per_row']:,.0f} rows on "
          f"average; {stats['over_max']} buckets ({stats['rows_over_max']:,} rows) over max_block_rows "
          f"{p.duplicates.max_block_rows:,} are split")
    print(f"cosines computed: dedup ~{dedup_cos:.3g} (at most; {stats['cosines_small']:.3g} in unsplit buckets), "
          f"reference {ref_cos:.3g} ({ref_cos / dedup_cos:.0f}x)")
    mib = 1 / 1024
    print(f"peak memory, dedup: driver VmHWM {dedup['hwm_kib'] * mib:,.0f} MiB "
          f"(inputs {dedup['inputs_kib'] * mib:,.0f}); all {dedup['processes']} processes: "
          f"private {dedup['tree_private_kib'] * mib:,.0f} MiB + object "
          f"store resident {dedup['tree_shared_kib'] * mib:,.0f} MiB (peak sum {dedup['tree_total_kib'] * mib:,.0f})")
    print(f"peak memory, reference: VmHWM {ref['hwm_kib'] * mib:,.0f} MiB (inputs and float32 copy "
          f"{ref['inputs_kib'] * mib:,.0f})")
    tag = f"{n // 1000}k x {DIM} fp16"
    report("dedup", f"time reference exact matmul ({how.split(' ')[0]}) / xmodal dedup, {tag}", round(ratio, 2))
    report("dedup", f"xmodal dedup seconds ({dedup['path']}, 2 CPUs), {tag}", round(dedup["seconds"], 1))
    report("dedup", f"reference seconds ({how.split(' ')[0]}), {tag}", round(ref_s, 1))
    report("dedup", "recall of planted duplicates", round(recall_truth, 4))
    report("dedup", "recall vs exact reference (sampled rows)", round(recall_ref, 4))
    report("dedup", "dedup peak MiB (private, all processes + object store)", round(dedup["tree_total_kib"] * mib))
    report("dedup", "reference peak MiB (VmHWM)", round(ref["hwm_kib"] * mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
