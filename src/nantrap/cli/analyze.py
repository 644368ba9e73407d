"""``nantrap analyze TARGET``: every layer's value range and the ops that can leave their domain.

TARGET is a model file (.onnx, .pb, .pbtxt, .keras) or ``module:factory`` / ``file.py:factory``
where ``factory()`` returns a model, or ``(model, example_inputs)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

from nantrap.errors import ConfigError

NAME = "analyze"
HELP = "interval analysis of a model graph: per-layer ranges, NaN/Inf hazards, fixes"
ORDER = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="model file (.onnx .pb .pbtxt .keras) or module:factory")
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="range of a model input (repeatable); NAME '*' means every input",
    )
    parser.add_argument(
        "--weights", metavar="±B", help="analyze for any weights in [-B, B], not the actual ones"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--table", choices=("full", "flagged", "none"), default="full", help="per-layer table"
    )
    parser.add_argument(
        "--strict", action="store_true", help="ops without a transfer function are an error"
    )
    parser.add_argument(
        "--no-preconditions",
        action="store_true",
        help="skip the search for the input range that makes each op safe",
    )


def run(args: argparse.Namespace) -> int:
    from nantrap.analyze import analyze
    from nantrap.analyze.render import render_text

    ranges = {}
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--input {item!r}: write NAME=LO:HI, e.g. --input x=0:1")
        ranges[name.strip()] = value
    weights = _weights(args.weights) if args.weights else None
    model, example = _load_target(args.target)
    result = analyze(
        model,
        example,
        input_ranges=ranges,
        weights=weights,
        strict=args.strict,
        preconditions=not args.no_preconditions,
    )
    for warning in result.warnings:
        print(f"nantrap analyze: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(result.report().to_dict(), indent=2, sort_keys=True))
    else:
        print(render_text(result, table=args.table))
    return 1 if result.problems else 0


def _weights(text: str) -> float:
    try:
        body = text.strip()
        for prefix in ("±", "+/-", "+-"):
            body = body.removeprefix(prefix)
        value = float(body)
    except ValueError:
        raise ConfigError(
            f"--weights {text!r}: write a bound B (or ±B), e.g. --weights 0.5"
        ) from None
    if not value > 0:
        raise ConfigError(f"--weights {text!r}: the bound must be > 0")
    return value


def _load_target(target: str):
    path = Path(target)
    if path.suffix.lower() in (".onnx", ".pb", ".pbtxt", ".keras", ".h5"):
        if not path.exists():
            raise ConfigError(f"no such model file: {target}")
        return str(path), None
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"target {target!r}: give a model file or module:factory (e.g. mymodels:make_net)"
        )
    if module_name.endswith(".py"):
        file = Path(module_name)
        if not file.exists():
            raise ConfigError(f"no such file: {module_name}")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(file.resolve().parent))
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"{module_name} has no attribute {attr!r}")
    made = factory() if callable(factory) and not _is_model(factory) else factory
    if isinstance(made, tuple) and len(made) == 2:
        return made
    return made, None


def _is_model(obj) -> bool:
    return hasattr(obj, "forward") or hasattr(obj, "layers") or hasattr(obj, "graph")
