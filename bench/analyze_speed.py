"""Speed of ``nantrap analyze`` on a ResNet-18, a GPT-2-small-sized model and an
AWD-LSTM-sized language model (random weights).

Prints, per model: torch.export time, analysis time (interval pass + findings, with and
without the precondition search), and one eager forward pass of the same model measured in
the same process as the baseline (ratios are what to compare across machines).

    python bench/analyze_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import torch  # noqa: E402
from tests.analyze.models.torch_models import GPT, resnet18  # noqa: E402
from tests.analyze.models.torch_recurrent import LSTMLanguageModel  # noqa: E402

from nantrap.analyze import analyze_graph  # noqa: E402
from nantrap.analyze.frontends import torch_export  # noqa: E402


def _time(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(name, model, inputs, ranges):
    model.eval()
    with torch.no_grad():
        model(*inputs)  # warm up
        forward, _ = _time(lambda: model(*inputs), repeat=3)
    export, graph = _time(lambda: torch_export.to_graph(model, inputs))
    analysis, res = _time(lambda: analyze_graph(graph, input_ranges=ranges), repeat=2)
    fast, _ = _time(
        lambda: analyze_graph(graph, input_ranges=ranges, preconditions=False), repeat=2
    )
    total = export + analysis
    print(
        f"{name:<12} nodes={len(graph.nodes):<5} export={export:6.2f}s  analyze={analysis:6.2f}s "
        f"(no preconditions {fast:5.2f}s)  total={total:6.2f}s  "
        f"forward={forward * 1000:7.1f}ms  total/forward={total / forward:7.1f}x  "
        f"findings={len(res.problems)}  {'OK' if total < 5 else 'OVER 5 s'}"
    )
    return total


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench("resnet18", resnet18(), (torch.rand(1, 3, 224, 224),), {"x": "0:1"})
    gpt2 = GPT(vocab=50257, ctx=1024, d=768, layers=12, heads=12)
    bench("gpt2-small", gpt2, (torch.randint(0, 50257, (1, 64)),), {"idx": "0:50256"})
    lm = LSTMLanguageModel()  # 3 layers, 400 -> 1150, vocab 10000: AWD-LSTM on PTB
    bench("lstm-lm", lm, (torch.randint(0, 10000, (1, 70)),), {"idx": "0:9999"})


if __name__ == "__main__":
    main()
