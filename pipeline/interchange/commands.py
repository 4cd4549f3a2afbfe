"""``xmodal import`` and ``xmodal export``: the interchange formats on the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

IMPORT_FORMATS = ("coco", "odvg", "refcoco", "llava", "webdataset", "video", "mmc4", "obelics")
EXPORT_FORMATS = ("webdataset", "llava", "hf")
IMPORT_EXAMPLE = (
    "xmodal import coco instances_val2017.json captions_val2017.json --images val2017/ "
    "--out coco/manifest.jsonl --media link\n"
    "  xmodal import odvg grounding.jsonl --images images/ --license CC-BY-4.0 --out odvg/manifest.jsonl\n"
    "  xmodal import refcoco 'refs(unc).p' instances.json --images train2014/ --out refcoco/manifest.jsonl\n"
    "  xmodal import llava llava_instruct_150k.json --images train2017/ --out llava/manifest.jsonl\n"
    "  xmodal import webdataset shards/ --license CC-BY-4.0 --out wds/manifest.jsonl\n"
    "  xmodal import video talks/*.mp4 --license CC-BY-4.0 --out talks/manifest.jsonl\n"
    "  xmodal import mmc4 docs_shard_0.jsonl --images images/ --license ODC-BY-1.0 --out mmc4/manifest.jsonl\n"
    "  xmodal import obelics shard-0000.parquet --images images/ --license CC-BY-4.0 --out obelics/manifest.jsonl"
)
EXPORT_EXAMPLE = (
    "xmodal export webdataset out/releases/sample-world/demo --out out/wds   # open_clip --train-data\n"
    "  xmodal export llava out/releases/sample-world/demo --out out/llava\n"
    "  xmodal export hf out/releases/sample-world/demo --out out/hf/sample-world   # load_dataset(DIR, 'object')"
)


def run_import(fmt: str, sources: list[str], out: str, *, source: str | None = None, license: str | None = None,
               images: str | None = None, media: str = "refer", subtitles: str | None = None,
               segment_seconds: float = 30.0) -> str:
    """Import ``sources`` of ``fmt`` into the manifest ``out``; returns the summary printed."""
    from pipeline.interchange.manifest import ManifestWriter

    if fmt not in IMPORT_FORMATS:
        raise UserError(f"unknown import format {fmt!r} (one of {', '.join(IMPORT_FORMATS)})")
    files = [Path(s) for s in sources]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UserError(f"not found: {', '.join(missing)}")
    if not out.endswith(".jsonl"):
        raise UserError(f"--out {out}: the manifest is JSONL (name it *.jsonl)")
    if images is not None and not Path(images).is_dir():
        raise UserError(f"--images {images}: not a folder")
    writer = ManifestWriter(Path(out), fmt, source, license, media)  # type: ignore[arg-type]
    images_dir = Path(images) if images else None
    importer: Callable[..., None]
    if fmt == "coco":
        from pipeline.interchange.coco import import_coco as importer
    elif fmt == "odvg":
        from pipeline.interchange.grounding import import_odvg as importer
    elif fmt == "refcoco":
        from pipeline.interchange.grounding import import_refcoco as importer
    elif fmt == "llava":
        from pipeline.interchange.llava import import_llava as importer
    elif fmt == "webdataset":
        from pipeline.interchange.webdataset_tars import import_webdataset as importer
    elif fmt == "video":
        from pipeline.interchange.video import import_video

        import_video(files, writer, Path(subtitles) if subtitles else None, segment_seconds)
        return writer.save()
    else:
        from pipeline.interchange.interleaved import import_interleaved

        import_interleaved(fmt, files, writer, images_dir)
        return writer.save()
    importer(files, writer, images_dir)
    return writer.save()


def cmd_import(args: argparse.Namespace) -> int:
    print(run_import(args.format, args.src, args.out, source=args.source, license=args.license,
                     images=args.images, media=args.media, subtitles=args.subtitles,
                     segment_seconds=args.segment_seconds))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.interchange.exporters import run_export

    print(run_export(args.format, args.release, args.out, samples_per_shard=args.samples_per_shard))
    return 0


def register_cli(add: Callable[..., Any]) -> None:
    p = add("import", "turn COCO, ODVG, RefCOCO, LLaVA, WebDataset, video+subtitles, MMC4 or OBELICS data "
            "into a record-format-v1 manifest (bad samples become reject lines)", cmd_import, IMPORT_EXAMPLE)
    p.add_argument("format", choices=IMPORT_FORMATS, help="input format")
    p.add_argument("src", nargs="+", help="input files (a folder of *.tar for webdataset)")
    p.add_argument("--out", required=True, help="manifest to write (JSONL); relative media refs resolve beside it")
    p.add_argument("--source", help="source of records whose input names none (default: the input's own)")
    p.add_argument("--license", help="licence of records whose input names none (required if the input has none)")
    p.add_argument("--images", help="folder the image file names resolve in (default: the input file's folder)")
    p.add_argument("--media", choices=("refer", "copy", "link"), default="refer",
                   help="media outside the manifest's folder: refer to them where they are (default; the run "
                   "then needs their folder in media_roots), copy or hard-link them into media/ beside it")
    p.add_argument("--subtitles", help="video: folder of the .srt/.vtt files (default: beside each video)")
    p.add_argument("--segment-seconds", type=float, default=30.0,
                   help="video: longest segment, cut at cue boundaries (default 30)")
    p = add("export", "write a release as WebDataset tars, LLaVA conversation JSON, or a Hugging Face dataset card",
            cmd_export, EXPORT_EXAMPLE)
    p.add_argument("format", choices=EXPORT_FORMATS, help="output format")
    p.add_argument("release", help="a published release folder (the one holding manifest.json)")
    p.add_argument("--out", required=True, help="output folder (a new one)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="webdataset: samples per tar (default 1000)")
