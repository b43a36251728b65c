"""The report's outputs: replaced as one set or not at all, refused before any engine starts
when they cannot be written, and every failure one line with an exit status. No engine
runs here: the writes use the baseline results.json, and the command-line cases
are all refused before the first engine would start."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from compare import cli, faults, report
from compare.tests.locations import BASELINE, PACKAGE_PARENT, child_env, repository

NAMES = ("results.json", "REPORT.md", "report.html", "migration-guide.md")


@pytest.fixture(scope="module")
def results():
    with open(BASELINE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def texts(results, tmp_path_factory):
    """The committed results rendered once (rendering takes seconds), keyed as render_all keys them."""
    folder = str(tmp_path_factory.mktemp("render"))
    return report.render_all(results, os.path.join(folder, "migration-guide.md"), folder)


@pytest.fixture
def new_set(texts):
    """The files write_report makes: the four, the guide's HTML, and every page render_all
    adds (the scenario pages under scenarios/, the versions page where a matrix was run)."""
    keys = {"guide": "migration-guide.md", "guide.html": "migration-guide.html"}
    return {keys.get(name, name): text.encode("utf-8") for name, text in texts.items()}


@pytest.fixture
def out(tmp_path, texts, monkeypatch):
    """A folder holding an old set of the four files; write_report renders from the cache."""
    monkeypatch.setattr(report, "render_all", lambda results, guide, out_dir: texts)
    for name in NAMES:
        (tmp_path / name).write_bytes(f"old {name}\n".encode())
    return tmp_path


OLD_SET = {name: f"old {name}\n".encode() for name in NAMES}


def contents(folder) -> dict:
    """Every file under the folder, hidden ones too, by path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def fail_rename(monkeypatch, number: int, error: BaseException) -> None:
    """Make the ``number``-th rename of a new file into place raise ``error``."""
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(src).startswith(".tmp-"):
            seen.append(src)
            if len(seen) == number:
                raise error
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_write_report_replaces_the_whole_set(out, results, new_set):
    paths = report.write_report(str(out), results)
    assert sorted(os.path.relpath(p, out).replace(os.sep, "/") for p in paths) == sorted(new_set)
    assert contents(out) == new_set


def test_failed_third_rename_puts_the_old_set_back(out, results, monkeypatch):
    fail_rename(monkeypatch, 3, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError):
        report.write_report(str(out), results)
    assert contents(out) == OLD_SET


def test_interrupt_between_renames_puts_the_old_set_back(out, results, monkeypatch):
    fail_rename(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        report.write_report(str(out), results)
    assert contents(out) == OLD_SET


def test_rollback_removes_a_new_file_that_had_no_old_one(out, results, monkeypatch):
    (out / "REPORT.md").unlink()
    old = contents(out)
    fail_rename(monkeypatch, 3, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError):
        report.write_report(str(out), results)
    assert contents(out) == old


def test_signal_during_renames_waits_for_the_whole_set(out, results, monkeypatch, new_set):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not handled by KeyboardInterrupt here")
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        seen.append(src)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, half-way through the renames
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt) as info:
        report.write_report(str(out), results)
    assert info.type is report.ReplacedThenInterrupted
    assert contents(out) == new_set


def test_full_disk_while_writing_leaves_the_old_set(out, results, monkeypatch):
    real_open, real_write, opened = os.open, os.write, []

    def open_(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        opened.append(fd)
        return fd

    def write(fd, data):
        if len(opened) == 2 and fd == opened[-1]:  # the second file fills the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError) as info:
        report.write_report(str(out), results)
    assert info.value.errno == errno.ENOSPC
    assert contents(out) == OLD_SET


def test_files_are_utf8_in_a_non_utf8_locale(tmp_path, new_set):
    env = child_env(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    env.pop("PYTHONIOENCODING", None)
    code = ("import json, sys; from compare import report; "
            "report.write_report(sys.argv[2], json.load(open(sys.argv[1], encoding='utf-8')))")
    out = subprocess.run([sys.executable, "-c", code, BASELINE, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert contents(tmp_path) == new_set


def test_write_report_refuses_a_guide_that_is_another_output(out, results):
    with pytest.raises(ValueError):
        report.write_report(str(out), results, str(out / "sub" / ".." / "REPORT.md"))
    assert contents(out) == OLD_SET


# --- the command line --------------------------------------------------------------------------

def run_cli(*args, env=None, **kwargs):
    full_env = child_env(**(env or {}))
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "compare", *args], stderr=subprocess.PIPE, text=True,
                          env=full_env, cwd=PACKAGE_PARENT, timeout=60, **kwargs)


def assert_usage_error(out) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.endswith("\n"), out.stderr
    assert "Traceback" not in out.stderr


def bench_file(tmp_path, **changes) -> str:
    with open(os.path.join(repository(), "reports", "bench.json"), encoding="utf-8") as f:
        data = json.load(f)
    data.update(changes)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


ENGINE_OPTIONS = ("--engines", "torch", "--dtype", "float32")


@pytest.mark.parametrize("command", ["report", "run"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_timeout_must_be_finite_and_positive(tmp_path, command, value):
    where = ("report", "--out", str(tmp_path / "out"), "--dtype", "float32") if command == "report" else (
        "run", "scope.g_step")
    out = run_cli(*where, "--engines", "torch", "--timeout", value)
    assert_usage_error(out)
    assert "--timeout" in out.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["report", "run"])
@pytest.mark.parametrize("engines", ["", " , "])
def test_blank_engines_is_no_engine_given(tmp_path, command, engines):
    where = ("report", "--out", str(tmp_path / "out"), "--dtype", "float32") if command == "report" else (
        "run", "scope.g_step")
    out = run_cli(*where, "--engines", engines)
    assert_usage_error(out)
    assert "no engine given" in out.stderr and not (tmp_path / "out").exists()


def test_jobs_must_be_at_least_one(tmp_path):
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS, "--jobs", "0")
    assert_usage_error(out)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["report", "run"])
@pytest.mark.parametrize("spec", ["torch", "torch=", "nosuch=hang", "torch=explode", "torch=scenario:nosuch"])
def test_malformed_fault_spec_is_refused(tmp_path, command, spec):
    where = ("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS) if command == "report" else (
        "run", "scope.g_step", "--engines", "torch")
    out = run_cli(*where, env={faults.ENV: spec})
    assert_usage_error(out)
    assert faults.ENV in out.stderr and not (tmp_path / "out").exists()


def test_fault_parse_names_the_bad_item_and_what_is_valid(monkeypatch):
    with pytest.raises(ValueError, match="'torch=explode'.*segfault, exit, hang"):
        faults.parse("torch=explode")
    with pytest.raises(ValueError, match="'nosuch=hang'.*keras-jax"):
        faults.parse("nosuch=hang")
    assert faults.parse(" torch=hang , keras-jax=scenario:scope.g_step ") == {
        "torch": "hang", "keras-jax": "scenario:scope.g_step"}
    monkeypatch.setenv(faults.ENV, "keras-torch=garbage")
    assert faults.kind_for("keras-torch") == "garbage" and faults.kind_for("torch") is None


@pytest.mark.parametrize("guide", ["out/results.json", "out/REPORT.md", "out/report.html", "out/sub/../REPORT.md",
                                   "link/results.json"])
def test_guide_that_is_another_output_is_refused(tmp_path, guide):
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS, "--guide", str(tmp_path / guide))
    assert_usage_error(out)
    assert "same file" in out.stderr and not os.listdir(tmp_path / "out")


def test_guide_that_is_a_folder_is_refused(tmp_path):
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS, "--guide", str(tmp_path))
    assert_usage_error(out)
    assert "is a folder" in out.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", NAMES)
def test_output_that_is_a_folder_is_refused(tmp_path, name):
    (tmp_path / "out" / name).mkdir(parents=True)
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS)
    assert_usage_error(out)
    assert "is a folder" in out.stderr and os.listdir(tmp_path / "out") == [name]


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    out = run_cli("report", "--out", str(tmp_path / "file"), *ENGINE_OPTIONS)
    assert_usage_error(out)
    assert "is a file" in out.stderr and (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("bench,guide", [("out/REPORT.md", None), ("link/results.json", None),
                                         (None, "out/bench.json")])
def test_bench_that_is_an_output_is_refused(tmp_path, bench, guide):
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    bench_file(tmp_path / "out")  # a valid bench file at OUT/bench.json, the default --bench
    before = contents(tmp_path / "out")
    options = (["--bench", str(tmp_path / bench)] if bench else []) + (["--guide", str(tmp_path / guide)] if guide else [])
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS, *options)
    assert_usage_error(out)
    assert "same file" in out.stderr and contents(tmp_path / "out") == before


@pytest.mark.parametrize("changes", [{"rows": {}}, {"rows": [3]}, {"settings": 3}, {"settings": {"tolerance": "x"}},
                                     {"memory_note": 3}, {"report_floor": {"report_s": "slow"}}])
def test_bench_file_the_report_cannot_render_is_refused(tmp_path, changes):
    path = bench_file(tmp_path, **changes)
    out = run_cli("report", "--out", str(tmp_path / "out"), *ENGINE_OPTIONS, "--bench", path)
    assert_usage_error(out)
    assert "not a usable" in out.stderr and not (tmp_path / "out").exists()


def test_committed_bench_file_is_accepted():
    bench = report.load_bench(os.path.join(repository(), "reports", "bench.json"))
    assert "## Performance" in report.performance_section(bench)


def test_guide_usage_error_leaves_no_out_folder(tmp_path):
    out = run_cli("report", "--out", str(tmp_path / "a" / "out"), *ENGINE_OPTIONS,
                  "--guide", str(tmp_path / "missing" / "guide.md"))
    assert_usage_error(out)
    assert not (tmp_path / "a").exists()


def test_full_stdout_is_one_line_and_status_2():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        out = run_cli("list", stdout=full)
    assert_usage_error(out)
    assert "No space left on device" in out.stderr


def test_interrupt_while_starting_up_is_one_line():
    code = ("import builtins, runpy\n"
            "real = builtins.__import__\n"
            "def interrupted(name, *args, **kwargs):\n"
            "    if name == 'compare.engines':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = interrupted\n"
            "runpy.run_module('compare', run_name='__main__', alter_sys=True)\n")
    out = subprocess.run([sys.executable, "-c", code, "list"], capture_output=True, text=True,
                         env=child_env(), timeout=60)
    assert out.returncode == 130 and out.stderr == "compare: interrupted\n", out.stderr


@pytest.fixture
def keep_sigterm():
    """main() installs its SIGTERM handler; put the test process's back."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupt_while_parsing_is_one_line(monkeypatch, capsys, keep_sigterm):
    monkeypatch.setattr(cli, "build_parser", interrupt)
    assert cli.main(["list"]) == 130
    assert capsys.readouterr().err == "compare: interrupted\n"


@pytest.mark.parametrize("command,argv", [("cmd_list", ["list"]), ("cmd_run", ["run", "scope.g_step"]),
                                          ("cmd_diff", ["diff", "a.json", "b.json"])])
def test_interrupted_command_that_writes_no_report_says_so(monkeypatch, capsys, keep_sigterm, command, argv):
    monkeypatch.setattr(cli, command, interrupt)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "compare: interrupted\n"


@pytest.fixture
def fake_run(monkeypatch, results):
    """cmd_report without engines: the run yields the committed results."""
    from compare import observations, parity, runner

    monkeypatch.setattr(runner, "run_engines", lambda *args, **kwargs: {})
    monkeypatch.setattr(parity, "compare_runs", lambda runs: [])
    monkeypatch.setattr(observations, "collect", lambda engines, runs: [])
    monkeypatch.setattr(report, "build_results", lambda *args: results)


def report_argv(out) -> list:
    return ["report", "--out", str(out), "--engines", "torch", "--dtype", "float32", "--quiet"]


@pytest.mark.parametrize("where,note", [("run", "earlier report files are untouched"),
                                        ("write", "the new report files are complete")])
def test_interrupted_report_says_what_became_of_its_files(tmp_path, monkeypatch, capsys, keep_sigterm, fake_run,
                                                          where, note):
    from compare import runner

    if where == "run":
        monkeypatch.setattr(runner, "run_engines", interrupt)
    else:
        def written_then_interrupted(*args):
            raise report.ReplacedThenInterrupted

        monkeypatch.setattr(report, "write_report", written_then_interrupted)
    assert cli.main(report_argv(tmp_path)) == 130
    assert capsys.readouterr().err == f"compare: interrupted; {note}\n"


def test_report_that_cannot_be_written_keeps_the_results(tmp_path, monkeypatch, capsys, keep_sigterm, fake_run,
                                                         results):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "write_report", full)
    monkeypatch.setattr(report.tempfile, "gettempdir", lambda: str(tmp_path))
    assert cli.main(report_argv(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"compare: error: cannot write the report to {tmp_path / 'out'}: "
                                                   "No space left on device; the run's results.json is kept at ")
    kept = err.rstrip("\n").rsplit(" ", 1)[1]
    assert os.path.dirname(kept) == str(tmp_path)
    with open(kept, encoding="utf-8") as f:
        assert json.load(f) == results
