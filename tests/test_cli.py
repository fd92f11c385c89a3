from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TINY, run_cli


def test_help_works_both_ways():
    a = subprocess.run(["fyexport", "--help"], capture_output=True, text=True)
    b = run_cli("--help")
    assert a.returncode == 0 and b.returncode == 0
    for cmd in ("info", "export"):
        assert cmd in b.stdout


@pytest.mark.parametrize("what", ["fyexport", "fyexport.cli"])
def test_import_is_light(what):
    """``import fyexport`` and the command line's --help load neither torch nor onnxruntime."""
    code = f"import {what}, sys; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
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


# -- options made from the configurations (issue 26) ------------------------------------------

def _fields_and_commands():
    """(Fields, click command) pairs of every command whose options are bound to a configuration."""
    import fyexport.cli as cli_pkg
    from fyexport.cli.app import cli
    from fyexport.cli.options import Fields

    mods = [getattr(cli_pkg, m) for m in ("model_commands", "int8_commands", "deploy_commands", "pipeline_commands")]
    out = []
    for mod in mods:
        for fields in [v for v in vars(mod).values() if isinstance(v, Fields)]:
            cmds = [c for c in cli.commands.values() if set(fields.bound) <= {p.name for p in c.params}]
            assert cmds, fields.root
            out.append((fields, cmds[0]))
    return out


def test_the_cli_writes_no_default_of_its_own():
    """Every default a command shows is read from the configuration that holds it: no option in
    fyexport/cli is given a default literally."""
    import ast

    from conftest import REPO

    literal = []
    for p in sorted((REPO / "fyexport" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "option":
                literal += [f"{p.name}:{node.lineno}" for k in node.keywords if k.arg == "default"]
    assert literal == []


def test_every_bound_option_defaults_to_its_configuration():
    from fyexport.cli.options import _show
    from fyexport.core.config import default_at

    checked = 0
    for fields, cmd in _fields_and_commands():
        params = {p.name: p for p in cmd.params}
        for name, (path, flag) in fields.bound.items():
            if params[name].required:
                continue
            want = default_at(fields.root, path)
            want = _show(want) if isinstance(want, tuple) else want
            assert params[name].default == want, (cmd.name, flag)
            checked += 1
    assert checked > 80


def test_library_messages_name_fields_not_flags():
    """No error or log message below the CLI names a command-line flag (a suggested command in
    quotes, 'fyexport export --nms', is not a flag of the command run)."""
    import ast
    import re

    from conftest import REPO

    flag, quoted = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+"), re.compile(r"'(fyexport|torchrun|trtexec)[^']*'")
    found = []
    for p in sorted((REPO / "fyexport").rglob("*.py")):
        if "cli" in p.relative_to(REPO).parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            is_log = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and getattr(node.func.value, "id", "") == "G_LOGGER")
            parts = [node.exc] if isinstance(node, ast.Raise) and node.exc else node.args if is_log else []
            text = "".join(s.value for m in parts for s in ast.walk(m)
                           if isinstance(s, ast.Constant) and isinstance(s.value, str))
            bare = [f for f in flag.findall(quoted.sub("", text)) if f != "--verbose"]
            if bare:
                found.append(f"{p.relative_to(REPO)}:{node.lineno} {bare}")
    assert found == []


@pytest.mark.parametrize("args,says", [
    (["recover", TINY, "--teacher", TINY, "--images", ".", "--batch", "0", "-o", "r.pt"], "--batch must be >= 1"),
    (["calibrate", "m.onnx", "--images", ".", "-o", "o", "--percentile", "0"], "--percentile must be in (0, 100]"),
    (["export", TINY, "-o", "m.onnx", "--topk", "0", "--nms"], "--topk must be >= 1"),
])
def test_a_field_error_names_the_flag_of_the_command_run(args, says, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and says in proc.stderr and "`" not in proc.stderr, proc.stderr


def test_build_names_its_own_flags(tmp_path):
    """Under build, --batch is the export batch: recovery's batch is --recover-batch."""
    (tmp_path / "calib").mkdir()
    proc = run_cli("build", "--weights", TINY, "--calib", tmp_path / "calib", "-o", tmp_path / "b",
                   "--recover-batch", "0")
    assert proc.returncode == 2 and "--recover-batch must be >= 1" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()


def test_the_demo_names_its_own_flags_or_the_builds():
    """A build message run by `demo` (the gate's advice) names the demo's flag where it has one,
    else `fyexport build`'s flag; warnings are renamed the same way."""
    from fyexport.cli.pipeline_commands import DEMO
    from fyexport.core.errors import name_fields
    from fyexport.pipeline.accuracy import GateResult, gate_failure_line

    names = DEMO.flag_names()
    assert names["recover.minutes"] == "--recover-minutes" and names["prune.ratio"] == "--prune"
    assert names["calibrate.exclude"] == "`fyexport build --exclude`"
    g = GateResult("mAP@.5:.95", 0.45, "int8 (CPU Q/DQ)", 0.35, 0.34, 10.0, 10.6, -0.6, 3.26, "5% + 1", False)
    line = name_fields(gate_failure_line(g, "out"), names)
    assert "(--recover-minutes)" in line and "(--prune)" in line and "`fyexport build --auto-exclude`" in line
    assert "recover.minutes" not in line and "prune.ratio" not in line
