"""The core imports, and the CLI starts, with no ML framework importable."""

import subprocess
import sys

from tests.conftest import SRC

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime',
                                  'jax', 'lightning', 'pytorch_lightning', 'transformers'}:
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_import_nantrap_without_frameworks():
    out = _run(
        "import nantrap, nantrap.ops, nantrap.traps, nantrap.findings, nantrap.floats\n"
        "print(len(list(nantrap.all_traps())))"
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 20


def test_cli_help_without_frameworks():
    for command in (["--help"], ["traps"], ["explain", "NT101"], ["lint", "--help"]):
        out = _run(f"from nantrap.cli import main\nraise SystemExit(main({command!r}))")
        assert out.returncode == 0, (command, out.stderr)


def test_lint_a_file_without_frameworks(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("import torch\ny = torch.log(torch.softmax(z, dim=1))\n")
    code = (
        "import sys\nfrom nantrap.cli import main\n"
        f"status = main(['lint', {str(path)!r}, '--format', 'sarif'])\n"
        "assert not {'torch', 'tensorflow', 'jax', 'keras'} & set(sys.modules)\n"
        "raise SystemExit(status)"
    )
    out = _run(code)
    assert out.returncode == 1, out.stderr
    assert '"ruleId": "NT101"' in out.stdout
