from __future__ import annotations

import json
import subprocess
import sys

from conftest import TINY, run_cli


def test_help_works_both_ways():
    a = subprocess.run(["fyexport", "--help"], capture_output=True, text=True)
    b = run_cli("--help")
    assert a.returncode == 0 and b.returncode == 0
    for cmd in ("info", "export"):
        assert cmd in b.stdout


def test_import_is_light():
    code = "import fyexport, sys; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]


def test_info_json_on_fixture():
    proc = run_cli("info", TINY, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["nc"] == 5 and d["head"] == "IDetect" and d["form"] == "training" and d["source_dtype"] == "float16"
    assert d["stride"] == [8, 16, 32] and d["params"] == 6025812


def test_usage_errors_exit_2():
    proc = run_cli("info")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli("info", "/definitely/not/here.pt")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no such checkpoint" in proc.stderr
