"""``nantrap run`` keeps a script's argv, __main__, stdout/stderr and exit code."""

from __future__ import annotations

import json
import textwrap

from tests.conftest import run_nantrap

SCRIPT = textwrap.dedent(
    """
    import sys
    print("argv", sys.argv[1:])
    print("name", __name__)
    print("to stderr", file=sys.stderr)
    if "--fail" in sys.argv:
        raise ValueError("the script's own error")
    if "--interrupt" in sys.argv:
        raise KeyboardInterrupt
    sys.exit(int(sys.argv[sys.argv.index("--code") + 1]) if "--code" in sys.argv else 0)
    """
)


def _script(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(SCRIPT)
    return path


def test_argv_main_stdout_and_exit_code(tmp_path):
    script = _script(tmp_path)
    out = run_nantrap(
        "run",
        "--log-dir",
        str(tmp_path / "run"),
        str(script),
        "--code",
        "3",
        "--lr",
        "0.1",
        cwd=tmp_path,
    )
    assert out.returncode == 3
    assert "argv ['--code', '3', '--lr', '0.1']" in out.stdout  # the script's own options
    assert "name __main__" in out.stdout
    assert "to stderr" in out.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["exit_code"] == 3 and meta["status"] == "exit"
    assert meta["command"] == [str(script), "--code", "3", "--lr", "0.1"]
    assert (tmp_path / "run" / "report.html").is_file()
    assert f"report: {tmp_path / 'run' / 'report.html'}" in out.stderr


def test_exception_prints_the_scripts_traceback_and_exits_1(tmp_path):
    script = _script(tmp_path)
    out = run_nantrap(
        "run", "--log-dir", str(tmp_path / "run"), str(script), "--fail", cwd=tmp_path
    )
    assert out.returncode == 1
    assert "ValueError: the script's own error" in out.stderr
    assert 'File "' + str(script) in out.stderr
    assert "runpy" not in out.stderr and "nantrap/run" not in out.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["error"] == "ValueError: the script's own error"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "ValueError: the script&#x27;s own error" in page


def test_ctrl_c_still_writes_the_run_folder(tmp_path):
    out = run_nantrap(
        "run",
        "--log-dir",
        str(tmp_path / "run"),
        str(_script(tmp_path)),
        "--interrupt",
        cwd=tmp_path,
    )
    assert out.returncode == 130
    assert "interrupted" in out.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "run" / "report.html").is_file()


def test_default_log_dir_and_module_mode(tmp_path):
    (tmp_path / "mymod.py").write_text(SCRIPT)
    out = run_nantrap("run", "-m", "mymod", "--code", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name __main__" in out.stdout
    [run_dir] = (tmp_path / "nantrap-runs").iterdir()
    assert (run_dir / "run.json").is_file()


def test_missing_script_is_a_usage_error(tmp_path):
    out = run_nantrap("run", str(tmp_path / "nope.py"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"nantrap run: error: {tmp_path / 'nope.py'}: no such script"


def test_bad_guard_option(tmp_path):
    out = run_nantrap("run", "--guard-option", "oops", str(_script(tmp_path)), cwd=tmp_path)
    assert out.returncode == 2
    assert "expected KEY=VALUE" in out.stderr


def test_an_attacher_that_fails_leaves_the_run_alone(tmp_path):
    # a module named keras that is not Keras: attaching fails, the script still runs
    (tmp_path / "keras.py").write_text("")
    script = tmp_path / "uses_keras.py"
    script.write_text("import keras\nprint('trained')\n")
    out = run_nantrap("run", "--log-dir", str(tmp_path / "run"), str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "trained" in out.stdout
    assert "nantrap run: keras: not guarded (AttributeError" in out.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["guarded"] == [] and meta["status"] == "ok"
