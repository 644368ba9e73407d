"""The interpreter and findings on hand-built IR graphs (no framework needed)."""

import numpy as np
import pytest

from nantrap.analyze import Graph, Node, analyze_graph
from nantrap.errors import ConfigError, UnsupportedOpError


def _graph(*ops, values=None, shape=(2, 4)):
    nodes = [Node("x", "placeholder", kind="input", dtype="float32", shape=shape)]
    for name, neutral, inputs, attrs in ops:
        nodes.append(
            Node(
                name,
                f"aten.{neutral}.default" if neutral else f"aten.{name}.default",
                neutral=neutral,
                inputs=inputs,
                attrs=attrs,
                dtype="float32",
                shape=shape,
            )
        )
    for name in values or {}:
        nodes.insert(
            1, Node(name, "param", kind="param", dtype="float32", shape=np.shape(values[name]))
        )
    return Graph.build(nodes, outputs=(nodes[-1].name,), values=values or {})


def test_log_of_softmax_flagged_log_softmax_not():
    bad = _graph(("sm", "softmax", ("x",), {"dim": -1}), ("lg", "log", ("sm",), {}))
    good = _graph(("ls", "log_softmax", ("x",), {"dim": -1}))
    res = analyze_graph(bad, input_ranges={"x": "-100:100"})
    (f,) = res.by_code("NT101")
    assert f.severity.value == "error"
    assert f.location.node == "lg" and f.evidence["path"] == ["log", "softmax", "input x"]
    assert res.layer("sm").lo == 0.0  # spread 200 > 103.3: softmax reaches exactly 0
    assert "log_softmax" in f.fix
    assert analyze_graph(good, input_ranges={"x": "-100:100"}).problems == []


def test_div_by_norm_plus_eps_is_safe_and_by_norm_is_not():
    ok = _graph(
        ("n", "norm", ("x",), {}),
        ("d", "add", ("n", "eps"), {}),
        ("y", "div", ("x", "d"), {}),
        values={"eps": np.array(1e-6)},
    )
    bad = _graph(("n", "norm", ("x",), {}), ("y", "div", ("x", "n"), {}))
    assert analyze_graph(ok, input_ranges={"x": "-1:1"}).problems == []
    (f,) = analyze_graph(bad, input_ranges={"x": "-1:1"}).by_code("NT110")
    assert f.evidence["input_range"][0] == 0.0
    assert f.severity.value == "warning"  # a norm of [-1, 1] values is 0 only if all are 0


def test_sqrt_negative_and_gradient_at_zero():
    g = _graph(
        ("s", "sqrt", ("x",), {}),
        ("r", "relu", ("x",), {}),
        ("t", "sqrt", ("r",), {}),
        ("w", "mul", ("t", "p"), {}),
        values={"p": np.ones(4)},
    )
    res = analyze_graph(g, input_ranges={"x": "-1:1"})
    assert [f.location.node for f in res.by_code("NT112")] == ["s"]
    assert res.by_code("NT111") == []  # no parameter upstream of the sqrt: nothing to report
    g2 = _graph(
        ("l", "mul", ("x", "p"), {}),
        ("r", "relu", ("l",), {}),
        ("t", "sqrt", ("r",), {}),
        values={"p": np.ones(4)},
    )
    (f,) = analyze_graph(g2, input_ranges={"x": "-1:1"}).by_code("NT111")
    assert f.location.phase.value == "backward" and f.evidence["parameters"] == ["p"]


def test_precondition_names_the_safe_input_box():
    g = _graph(("e", "exp", ("x",), {}))
    (f,) = analyze_graph(g, input_ranges={"x": "0:200"}).by_code("NT113")
    lo, hi = f.evidence["safe_inputs"]["x"]
    assert lo == 0.0 and 88.0 < hi < 88.8  # float32 exp overflows above 88.72
    assert "Safe (for these weights) while x in" in f.fix


def test_unsupported_ops_listed_together_and_strict_raises():
    g = _graph(("a", None, ("x",), {}), ("b", None, ("a",), {}), ("c", "exp", ("b",), {}))
    res = analyze_graph(g, input_ranges={"x": "0:1"})
    (f,) = res.by_code("NT902")
    assert f.evidence["nodes"] == ["a", "b"]
    assert "aten.a.default" in f.message and "aten.b.default" in f.message
    with pytest.raises(UnsupportedOpError, match=r"2 node\(s\)"):
        analyze_graph(g, input_ranges={"x": "0:1"}, strict=True)


def test_graph_is_not_mutated_and_bad_ranges_are_clear():
    g = _graph(("sm", "softmax", ("x",), {"dim": -1}), ("lg", "log", ("sm",), {}))
    before = (repr(g.nodes), g.outputs, {k: np.array(v) for k, v in g.values.items()})
    analyze_graph(g, input_ranges={"x": "0:1"})
    assert (repr(g.nodes), g.outputs) == before[:2]
    with pytest.raises(ConfigError, match="no input 'y'"):
        analyze_graph(g, input_ranges={"y": "0:1"})
    with pytest.raises(ConfigError, match="bad range"):
        analyze_graph(g, input_ranges={"x": "1-2"})


def test_default_input_range_warns():
    g = _graph(("e", "exp", ("x",), {}))
    res = analyze_graph(g)
    assert "no range given for input(s) x" in res.warnings[0]
    assert res.report().to_dict()["meta"]["layers"][0]["op"] == "exp"


def test_hazards_behind_an_unsupported_op_are_unproven_warnings():
    g = _graph(("a", None, ("x",), {}), ("d", "div", ("x", "a"), {}))
    (f,) = analyze_graph(g, input_ranges={"x": "1:2"}).by_code("NT110")
    assert f.severity.value == "warning" and f.evidence["depends_on_unsupported"] == ["a"]
    assert "unproven" in f.message


def test_report_round_trips_through_json():
    import json

    from nantrap.findings import Report

    g = _graph(("sm", "softmax", ("x",), {"dim": -1}), ("lg", "log", ("sm",), {}))
    report = analyze_graph(g, input_ranges={"x": "-200:200"}).report()
    data = json.loads(json.dumps(report.to_dict()))
    back = Report.from_dict(data)
    assert [f.code for f in back.findings] == [f.code for f in report.findings]
    assert data["meta"]["layers"][-1]["range"] == ["-inf", 0.0]
    assert back.findings[-1].evidence["output_range"] == ["-inf", 0.0]
