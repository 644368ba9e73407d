"""The analyzer's core imports, and its CLI help runs, with no ML framework importable."""

from tests.test_no_framework import _run


def test_analyze_core_without_frameworks():
    out = _run(
        "import numpy as np\n"
        "from nantrap.analyze import Graph, Node, analyze_graph\n"
        "g = Graph.build([Node('x', 'in', kind='input', dtype='float32', shape=(3,)),\n"
        "    Node('y', 'Log', neutral='log', inputs=('x',), dtype='float32', shape=(3,))],\n"
        "    outputs=('y',))\n"
        "print(analyze_graph(g, input_ranges={'x': '0:1'}).findings[0].code)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NT103"


def test_analyze_help_without_frameworks():
    out = _run("from nantrap.cli import main\nraise SystemExit(main(['analyze', '--help']))")
    assert out.returncode == 0, out.stderr
    assert "--input" in out.stdout
