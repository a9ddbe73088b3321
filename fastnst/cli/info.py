"""``fastnst info``: what a model file holds, and which runtimes are installed."""

from __future__ import annotations

import argparse
import json

from fastnst.errors import ConfigError


def add_info(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("info", help="show what a model file holds, or which backends this machine has",
                       description="Print a model file's network spec, parameter count, styles and training "
                                   "config (fastnst .safetensors or pytorch/examples .pth); with --backends, "
                                   "the backends installed here and what --backend auto picks.")
    p.set_defaults(run=_run_info)
    if not options:
        return
    p.add_argument("model", nargs="?", help="model file")
    p.add_argument("--backends", action="store_true",
                   help="list the backends (torch, onnxruntime, openvino), whether each is installed, and what "
                        "--backend auto picks here for a model file and for a .onnx file")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of text (with the whole training config; a record that occurs more than "
                        'once in it is written once, under "records", and referred to as {"$record": ID})')


def _backends_summary() -> dict:
    """What ``fastnst info --backends`` reports: each backend's runtime version (None: missing) and auto's picks."""
    from fastnst.backends import BACKENDS, choose_backend, runtime_version
    from fastnst.device import resolve_device

    backends = {}
    for name in BACKENDS:
        version = runtime_version(name)
        entry = {"installed": version is not None, "version": version,
                 "dtypes": list(BACKENDS[name].dtypes)}
        if name == "openvino" and version is not None:
            from fastnst.backends.openvino import cpu_capabilities, cpu_name, default_dtype

            entry.update(cpu=cpu_name(), capabilities=sorted(cpu_capabilities()), default_dtype=default_dtype())
        elif name == "openvino":
            entry["install"] = "pip install fastnst[openvino]"
        backends[name] = entry
    picks = {}
    for kind, example in (("model file", "model.safetensors"), (".onnx file", "model.onnx")):
        backend, why = choose_backend(example)
        picks[kind] = {"backend": backend, "why": why}
    return {"device": str(resolve_device("auto")), "backends": backends, "auto": picks}


def _run_info(args: argparse.Namespace) -> int:
    from fastnst.checkpoint import load_model
    from fastnst.images import decode_thumbnail
    from fastnst.models.transformer import macs_per_pixel
    from fastnst.records import share_records

    if args.backends:
        summary = _backends_summary()
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        print(f"device {summary['device']}")
        print(f"  {'backend':12} {'installed':12} dtypes")
        for name, entry in summary["backends"].items():
            if not entry["installed"]:
                print(f"  {name:12} {'no':12} ({entry.get('install', 'not importable')})")
                continue
            details = ", ".join(entry["dtypes"]) or "the .onnx file's own"
            if "default_dtype" in entry:
                details += (f" (default here {entry['default_dtype']}; CPU {entry['cpu']}: "
                            f"{', '.join(entry['capabilities'])})")
            print(f"  {name:12} {entry['version']:12} {details}")
        for kind, pick in summary["auto"].items():
            print(f"--backend auto picks {pick['backend']} for a {kind}: {pick['why']}")
        if args.model is None:
            return 0
    if args.model is None:
        raise ConfigError("give a MODEL file to describe, or --backends")
    model, info = load_model(args.model)
    summary = {
        "file": args.model,
        "source": info.source,
        "format_version": info.format_version,
        "fastnst_version": info.fastnst_version,
        "spec": info.spec.to_dict(),
        "parameters": model.num_parameters(),
        "macs_per_pixel": macs_per_pixel(info.spec),
        "value_range": "0-1",
        "styles": list(info.styles),
        "thumbnails": [list(decode_thumbnail(t, f"{args.model}: thumbnail {i}").shape[:0:-1])
                       for i, t in enumerate(info.thumbnails)],
    }
    if args.json:
        config, records = share_records(info.config)  # as the file holds it: a whole joint history is huge
        print(json.dumps({**summary, "config": config, **({"records": records} if records else {})}, indent=2))
        return 0
    for key, value in summary.items():
        if key == "styles":
            value = f"{len(value)}: " + ", ".join(f"{i}={n}" for i, n in enumerate(value)) if value else "(unnamed)"
        if key == "thumbnails":
            value = ", ".join(f"{w}x{h}" for w, h in value) or "none"
        print(f"{key:16} {value:,}" if isinstance(value, int) else f"{key:16} {value}")
    if info.config:
        print("config")
        for key, value in info.config.items():
            print(f"  {key:22} {_brief(value)}")
    return 0


def _brief(value) -> str:
    """A config value for the text view; a nested training record is named, not printed (``--json`` has it)."""
    if isinstance(value, dict):
        return f"(a record of {len(value)} entries; --json shows it)"
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return f"({len(value)} records; --json shows them)"
    return str(value)
