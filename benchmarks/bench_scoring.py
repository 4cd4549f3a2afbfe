"""Scoring benchmark: clip_score and clap_score through Ray Data against the raw model forward.

Inputs: object records of the sample world (one to three shapes, two to four captions, one crop
per box), decoded once by ``decode_media`` (64 px, as the demo model wants) and repeated to
``--rows`` rows. The model is the shipped demo CLIP (``models/demo-clip``), on ``--device``
(CPU with ``--threads`` torch threads in both measurements, or CUDA with fp16 autocast in both).

- raw forward: ``encode_image`` on every image and crop of a batch plus ``encode_text`` on its
  distinct texts, in the stage's chunks, on tensors built beforehand (model time only);
- stage: the same batches through ``map_batches`` with the runner's keywords (an actor pool of
  one ``ClipScore`` actor), consumed with ``iter_batches``, once for N rows and once for 2N
  rows: N / (T(2N) - T(N)) is the steady throughput (actor start-up and model load cancel).

clap_score, the same way: segment records of the sample world (one audio clip each, 8 s at
16 kHz), decoded once by ``decode_media`` at the demo CLAP's input settings
(``models/demo-clap``: 16 kHz, first 8 s) and repeated to ``--clap-rows`` rows. Decoding is
measured on neither side: both start from the ``decoded_audio`` column.

- raw forward: the ClapModel's audio and text embeddings of each batch of ``--clap-batch`` rows,
  in the stage's chunks: ``ClapFeatureExtractor`` on the clips (already float32 arrays at the
  model's rate) + ``audio_model`` + ``audio_projection``, the tokenizer on the batch's distinct
  texts + ``text_model`` + ``text_projection`` (featurisation included: any CLAP scorer pays it);
- stage: the same rows through ``map_batches`` with one ``ClapScore`` actor, N and 2N rows, as
  for clip_score.

The three are repeated, interleaved, and the best of each is kept (a shared machine's load
drifts). The local Ray's files go to a temp dir of the run's own and its token auth is said
explicitly (``pipeline.run.local_ray``, as ``xmodal run`` does).

Prints rows/s of both and their ratio. Target: stage / raw >= 0.9 on CPU. With ``--device cuda``
the actor takes one GPU and ``nvidia-smi`` samples the GPU's utilisation every 100 ms while the 2N
rows run: its mean is the GPU busy fraction (the share of time a kernel was running).
Run: ``python -m benchmarks.bench_scoring`` (``--quick`` for a short smoke run; ``--scorers
clap_score`` for one of the two).
"""

from __future__ import annotations

import os

# On a shared machine OpenMP threads that spin at barriers lose their core to other processes;
# waiting passively keeps both measurements stable (set before torch loads; Ray workers inherit).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, cast  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._result import report  # noqa: E402

DEMO = ROOT / "models" / "demo-clip"
DEMO_CLAP = ROOT / "models" / "demo-clap"
# The demo CLAP's input (models/demo-clap/card.json "input"), as configs/demo.yaml decodes it.
CLAP_DECODE: dict[str, object] = {"images": False, "audio": True, "audio_sample_rate": 16_000,
                                  "max_audio_s": 8}


def decoded_objects(n: int, seed: int = 0) -> pa.Table:
    """``n`` object rows of the sample world, decoded as the demo model wants them."""
    from pipeline.run.local_runner import read_inputs, run_stages
    from pipeline.world.objects import build_object_record, plan_object_scene
    from stages.decode_media import DecodeMedia

    out = Path(tempfile.mkdtemp(prefix="xmodal-bench-"))
    common: dict[str, object] = {"source": "bench", "license": "CC0-1.0"}
    with open(out / "manifest.jsonl", "w") as manifest:
        for i in range(n):
            scene = plan_object_scene(f"obj-{i:05d}", np.random.default_rng([seed, i]))
            manifest.write(json.dumps(build_object_record(scene, out, False, common)) + "\n")
    rows = read_inputs([str(out / "manifest.jsonl")], 4 << 20)
    stage = DecodeMedia({"image_size": 64, "resize_mode": "squash", "audio": False})
    return run_stages(rows, [stage]).table


def decoded_segments(n: int, seed: int = 0) -> pa.Table:
    """``n`` segment rows of the sample world with their audio decoded for the demo CLAP."""
    import pyarrow.compute as pc

    from pipeline.run.local_runner import read_inputs, run_stages
    from pipeline.world import generate_world
    from stages.decode_media import DecodeMedia

    out = Path(tempfile.mkdtemp(prefix="xmodal-bench-")) / "world"
    generate_world(out, n=5 * n + 20, fault_rate=0.0, seed=seed)  # a fifth are segments
    rows = read_inputs([str(out / "manifest.jsonl")], 4 << 20)
    segments = rows.filter(pc.equal(rows["kind"], "segment"))
    decoded = run_stages(segments, [DecodeMedia(CLAP_DECODE)]).table
    decoded = decoded.filter(pc.greater(pc.list_value_length(decoded["decoded_audio"]), 0))
    if decoded.num_rows < n:
        raise RuntimeError(f"{decoded.num_rows} segments with audio, wanted {n}")
    return decoded.slice(0, n)


def clap_raw_forward_rows_per_s(table: pa.Table, batch: int, threads: int, device: str = "cpu",
                                forward: int = 256) -> tuple[float, float]:
    """(rows/s, feature-extractor share of the time) of the demo CLAP's audio and text
    embeddings alone, batch by batch as the stage sees them, in its chunks of ``forward`` inputs:
    clips (float32 at the model's rate, cut to its window) and each batch's distinct texts are
    built beforehand; featurisation, the forward passes and the projections are timed (on CUDA:
    inputs moved there in the loop as the stage does, fp16 autocast, synchronised)."""
    import torch

    from access.models import load_clap
    from stages.clap_score import clip_texts
    from stages.scoring import autocast

    torch.set_num_threads(threads)
    b = load_clap(DEMO_CLAP, device)
    fe, tok, model = b.processor.feature_extractor, b.processor.tokenizer, b.model
    rate, window = b.sampling_rate, b.max_samples
    prepared = []
    for start in range(0, table.num_rows, batch):
        rows = table.slice(start, batch).to_pylist()
        clips = [np.asarray(c, np.float32)[:window] for r in rows for c in r["decoded_audio"]]
        distinct = {t: None for r in rows for t in clip_texts(r, "subtitles")}
        prepared.append((clips, list(distinct)))

    def embed(clips: list[np.ndarray], texts: list[str]) -> float:
        fe_seconds = 0.0
        for s in range(0, len(clips), forward):
            t0 = time.perf_counter()
            inputs = fe(clips[s:s + forward], sampling_rate=rate, return_tensors="pt")
            fe_seconds += time.perf_counter() - t0
            kwargs = {"input_features": inputs["input_features"].to(device)}
            if "is_longer" in inputs:
                kwargs["is_longer"] = inputs["is_longer"].to(device)
            model.audio_projection(model.audio_model(**kwargs).pooler_output).float()
        for s in range(0, len(texts), forward):
            enc = tok(texts[s:s + forward], padding=True, truncation=True, return_tensors="pt")
            model.text_projection(model.text_model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device)).pooler_output).float()
        return fe_seconds

    with torch.inference_mode(), autocast(device, True):
        embed(prepared[0][0][:8], prepared[0][1][:8])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started, fe_seconds = time.perf_counter(), 0.0
        for clips, texts in prepared:
            fe_seconds += embed(clips, texts)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return table.num_rows / seconds, fe_seconds / seconds


def raw_forward_rows_per_s(table: pa.Table, batch: int, threads: int, device: str = "cpu",
                           forward: int = 256) -> float:
    """Rows/s of the model forward alone on the batches the stage will see, in the stage's
    chunks of ``forward`` inputs (on CUDA: inputs already on the GPU, fp16 autocast as the
    stage does, synchronised before the clock stops)."""
    import torch

    from access.models import load_open_clip
    from stages.clip_rules import row_texts
    from stages.scoring import autocast

    torch.set_num_threads(threads)
    b = load_open_clip(DEMO, device)
    prepared = []
    for start in range(0, table.num_rows, batch):
        rows = table.slice(start, batch).to_pylist()
        blobs = [x for r in rows for x in (r["decoded_images"] or []) + (r["decoded_crops"] or [])
                 if x]
        pix = np.stack([np.frombuffer(x, np.uint8).reshape(64, 64, 3) for x in blobs])
        images = b.model_input(torch.from_numpy(pix))
        texts = {t: None for r in rows for part in row_texts(r, "a photo of a {label}.")
                 for t in part}
        prepared.append((images.to(device), b.tokenizer(list(texts)).to(device)))
    with torch.inference_mode(), autocast(device, True):
        b.model.encode_image(prepared[0][0][:8])  # warm-up
        b.model.encode_text(prepared[0][1][:8])
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for images, tokens in prepared:
            for start in range(0, len(images), forward):
                b.model.encode_image(images[start:start + forward])
            for start in range(0, len(tokens), forward):
                b.model.encode_text(tokens[start:start + forward])
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return table.num_rows / seconds


class GpuBusy:
    """Samples ``nvidia-smi``'s utilisation.gpu every 100 ms while the block runs."""

    def __enter__(self) -> GpuBusy:
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.samples = [float(x) for x in out.split() if x.strip().replace(".", "", 1).isdigit()]

    @property
    def fraction(self) -> float:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else float("nan")


def stage_seconds(table: pa.Table, batch: int, threads: int, device: str = "cpu",
                  stage: str = "clip_score") -> float:
    """Wall seconds of one Ray Data execution of ``stage`` (``clip_score`` with the demo CLIP,
    ``clap_score`` with the demo CLAP) over ``table`` (actor start-up included), consumed to the
    last batch with ``iter_batches``; Ray must be initialised."""
    import ray.data

    from pipeline.run.config import ResourceOverride, StageSpec
    from pipeline.run.ray_runner import map_batches_kwargs, stage_callable

    resources: dict[str, Any] = {"num_cpus": 1, "actors": (1, 1), "batch_size": batch}
    if device == "cuda":
        resources |= {"num_cpus": 0.5, "num_gpus": 1}
    spec = StageSpec(name=stage,
                     params={"checkpoint": str(DEMO if stage == "clip_score" else DEMO_CLAP),
                             "num_threads": threads, "device": device, "fp16": True},
                     resources=ResourceOverride(**resources))
    kwargs = map_batches_kwargs(spec, spec.effective_resources())
    blocks = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    ds = ray.data.from_arrow(blocks).map_batches(stage_callable(spec), **kwargs)
    started, rows = time.perf_counter(), 0
    for out in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += cast(pa.Table, out).num_rows  # Ray types a batch as any batch format
    if rows != table.num_rows:
        raise RuntimeError(f"stage returned {rows} rows for {table.num_rows}")
    return time.perf_counter() - started


def start_ray(cpus: int, gpus: int) -> str:
    """A local Ray of this run's own, as ``xmodal run`` starts one: token auth said explicitly
    (a token made for this run unless the user has one; a ``RAY_AUTH_MODE`` set is left alone),
    its files in a new temp dir, which is returned."""
    from pipeline.run import local_ray

    if local_ray.prepare_auth(os.environ) and "ray" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")  # Ray read RAY_AUTH_MODE at import; re-read it, as the runner does
        AuthenticationTokenLoader.instance().reset_cache()
    import ray

    temp_dir = local_ray.run_temp_dir(None)
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir)
    return temp_dir


def _n_and_2n(unique: pa.Table, rows: int) -> tuple[pa.Table, pa.Table]:
    """The first ``rows`` and ``2 * rows`` rows of ``unique`` repeated: the two runs whose
    difference is the stage's steady rate."""
    table = pa.concat_tables([unique] * -(-2 * rows // unique.num_rows))
    return table.slice(0, rows), table.slice(0, 2 * rows)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorers", nargs="+", choices=("clip_score", "clap_score"),
                        default=["clip_score", "clap_score"], help="stages measured (default both)")
    parser.add_argument("--rows", type=int, default=3072, help="clip_score's N (default 3072)")
    parser.add_argument("--unique", type=int, default=256, help="distinct records decoded")
    parser.add_argument("--batch", type=int, default=256, help="clip_score rows per batch (default 256)")
    parser.add_argument("--clap-rows", type=int, default=2048, help="clap_score's N (default 2048)")
    parser.add_argument("--clap-unique", type=int, default=64, help="distinct segments decoded")
    parser.add_argument("--clap-batch", type=int, default=64,
                        help="clap_score rows per batch (default 64, the stage's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best of)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the rows, once")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray (default 2)")
    args = parser.parse_args(argv)
    dev = args.device
    # per scorer: (N rows, 2N rows, batch, raw forward (rows/s, extra), model description)
    plans: dict[str, tuple[pa.Table, pa.Table, int, Any, str]] = {}
    if "clip_score" in args.scorers:
        if not (DEMO / "open_clip_model.safetensors").is_file():
            raise SystemExit(f"the demo model is missing: {DEMO} (xmodal train-demo-model)")
        plans["clip_score"] = (
            *_n_and_2n(decoded_objects(args.unique), args.rows // 4 if args.quick else args.rows), args.batch,
            lambda t: (raw_forward_rows_per_s(t, args.batch, args.threads, dev), None), "demo CLIP")
    if "clap_score" in args.scorers:
        if not (DEMO_CLAP / "model.safetensors").is_file():
            raise SystemExit(f"the demo CLAP is missing: {DEMO_CLAP} (xmodal train-demo-clap)")
        plans["clap_score"] = (
            *_n_and_2n(decoded_segments(args.clap_unique), args.clap_rows // 4 if args.quick else args.clap_rows),
            args.clap_batch,
            lambda t: clap_raw_forward_rows_per_s(t, args.clap_batch, args.threads, dev),
            "demo CLAP, feature extractor included")
    import ray

    results: list[dict[str, Any]] = []
    temp_dir = start_ray(args.cpus, 1 if dev == "cuda" else 0)
    try:
        for stage, (half, full, batch, raw_fn, model) in plans.items():
            results += measure(stage, half, full, batch, raw_fn, model, args)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"{'benchmark':16s} {'metric':72s} {'value':>10s}  target")
    for r in results:
        print(f"{r['benchmark']:16s} {r['metric']:72s} {r['value']:>10}  {r['target']}")
    for r in results:
        report(r["benchmark"], r["metric"], r["value"], r["target"])
    return results


def measure(stage: str, half: pa.Table, full: pa.Table, batch: int, raw_fn: Any, model: str,
            args: argparse.Namespace) -> list[dict[str, Any]]:
    """Raw forward, N rows and 2N rows through the stage, interleaved, best of each."""
    # Interleaved repeats, best of each: on a shared machine the load drifts by 2x within a
    # minute, and the best time is the one least disturbed by other processes.
    raws, extras, halves, fulls, busy = [], [], [], [], []
    dev, rows = args.device, half.num_rows
    for repeat in range(1 if args.quick else args.repeats):
        raw, extra = raw_fn(half)
        raws.append(raw)
        extras.append(extra)
        halves.append(stage_seconds(half, batch, args.threads, dev, stage))
        with GpuBusy() if dev == "cuda" else contextlib.nullcontext() as gpu:
            fulls.append(stage_seconds(full, batch, args.threads, dev, stage))
        if gpu is not None:
            busy.append(gpu.fraction)
        print(f"{stage} repeat {repeat}: raw {raws[-1]:.1f} rows/s; stage {rows} rows in "
              f"{halves[-1]:.1f}s, {2 * rows} rows in {fulls[-1]:.1f}s", flush=True)
    raw = max(raws)
    # N rows and 2N rows: the difference is N rows of steady scoring, start-up cancels out
    steady, overall = rows / (min(fulls) - min(halves)), 2 * rows / min(fulls)
    if min(fulls) <= min(halves):  # too few rows (--quick) or too noisy a machine to tell
        print(f"{stage}: 2N rows took no longer than N rows; no steady rate", flush=True)
        steady = float("nan")
    name = stage if dev == "cpu" else f"{stage}_cuda"
    results = [
        {"benchmark": name,
         "metric": f"raw forward rows/s ({model}, {dev.upper()}, batch {batch})",
         "value": round(raw, 1), "target": ""},
    ]
    if extras[0] is not None:
        results.append({"benchmark": name, "metric": "feature extractor share of the raw forward",
                        "value": round(extras[raws.index(raw)], 3), "target": ""})
    results += [
        {"benchmark": name, "metric": "stage rows/s through Ray Data (2N - N rows)",
         "value": round(steady, 1), "target": ""},
        {"benchmark": name, "metric": "stage rows/s incl. actor start-up",
         "value": round(overall, 1), "target": ""},
        {"benchmark": name, "metric": "stage / raw forward throughput",
         "value": round(steady / raw, 3), "target": ">= 0.9" if dev == "cpu" else ""},
    ]
    if busy:
        results.append({"benchmark": name, "metric": "GPU busy fraction while the stage runs",
                        "value": round(busy[fulls.index(min(fulls))], 3), "target": ""})
    return results


if __name__ == "__main__":
    main()
