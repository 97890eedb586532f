"""How many realistic mutations the test suite catches (`make mutation-check`).

Copies the repository (the files git tracks or would track, and the built extension) into a
scratch folder, never touching the working tree; checks that the tests pass there unmutated;
then applies each mutation of tests/mutation/mutations.py in turn, runs its tests (pytest -x)
and restores the file. A mutation of csrc/ is compiled into the scratch copy's extension first
(`setup.py build_ext --inplace`, CPU only), and the working tree's extension is copied back
afterwards; the compiled mutations run last. A mutation is caught when its tests fail (pytest's
exit status 1); any other outcome than passing or failing (a build that fails, pytest unable to
collect, a timeout) is reported as an error, not as caught.

    python tests/mutation/run.py [--only NAME ...] [--without TEST_FILE ...] [--keep] [--report FILE]

--without runs each mutation against its tests less those files: what the suite catches without
them (a mutation left with no test file is reported as not run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mutations import MUTATIONS, Mutation  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1800


@dataclass
class Outcome:
    mutation: Mutation
    result: str  # caught, SURVIVED, error
    detail: str
    seconds: float


def check_patterns(mutations: list[Mutation]) -> list[str]:
    """Every replacement's text must occur exactly once in the working tree's file."""
    problems = []
    for m in mutations:
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} not found")
            continue
        text = path.read_text()
        for old, _ in m.replacements:
            count = text.count(old)
            if count != 1:
                what = "pattern not found" if count == 0 else f"pattern found {count} times"
                problems.append(f"{m.name}: {what} in {m.file}: {old!r}")
    return problems


def copy_repository(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for ext in ROOT.glob("poster_fast/_C*.so"):
        shutil.copy2(ext, dest / "poster_fast" / ext.name)


def environment(scratch: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(scratch), PYTHONDONTWRITEBYTECODE="1", POSTER_FAST_CUDA="0")
    env.setdefault("TRITON_INTERPRET", "1")
    return env


def pytest(scratch: Path, args: list[str], log: Path) -> tuple[int, str]:
    """pytest's exit status and its last summary line (the first failure, with -x)."""
    with log.open("w") as out:
        try:
            code = subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"],
                                  cwd=scratch, env=environment(scratch), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            return -1, f"timed out after {TIMEOUT_S} s"
    lines = log.read_text().splitlines()
    failed = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED", "ERROR"))]
    return code, (failed[0] if failed else lines[-1] if lines else "")


def build(scratch: Path, log: Path) -> bool:
    with log.open("w") as out:
        return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=scratch,
                              env=environment(scratch), stdout=out, stderr=subprocess.STDOUT).returncode == 0


def run_one(m: Mutation, scratch: Path, logs: Path) -> Outcome:
    start = time.monotonic()
    path = scratch / m.file
    original = path.read_text()
    mutated = original
    for old, new in m.replacements:
        mutated = mutated.replace(old, new)
    path.write_text(mutated)
    try:
        if m.compiled and not build(scratch, logs / f"{m.name}.build.log"):
            return Outcome(m, "error", f"the build failed: {logs / (m.name + '.build.log')}", time.monotonic() - start)
        code, detail = pytest(scratch, list(m.tests) + ["-x"], logs / f"{m.name}.log")
    finally:
        path.write_text(original)
        if m.compiled:
            for ext in ROOT.glob("poster_fast/_C*.so"):
                shutil.copy2(ext, scratch / "poster_fast" / ext.name)
    result = {0: "SURVIVED", 1: "caught"}.get(code, "error")
    if result == "error":
        detail = f"pytest exit status {code}: {detail}"
    return Outcome(m, result, detail, time.monotonic() - start)


def report(outcomes: list[Outcome]) -> str:
    caught = sum(o.result == "caught" for o in outcomes)
    rows = ["| mutation | file | models | result | first failure | s |", "|---|---|---|---|---|---:|"]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        rows.append(f"| {o.mutation.name} | {o.mutation.file} | {o.mutation.why} | {o.result} | {detail} | "
                    f"{o.seconds:.0f} |")
    return "\n".join(rows) + f"\n\ncaught {caught}/{len(outcomes)}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and its logs")
    parser.add_argument("--report", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--without", nargs="+", default=[], metavar="TEST_FILE",
                        help="leave these test files out of every mutation's tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    args = parser.parse_args()
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.only or [] if n not in known]
    if unknown:
        parser.error(f"--only: unknown mutations {unknown}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.only] if args.only else list(MUTATIONS)
    chosen = [replace(m, tests=tuple(t for t in m.tests if t not in args.without)) for m in chosen]
    problems = check_patterns(chosen)
    if problems:
        print("mutation-check: the mutations no longer fit the source (update tests/mutation/mutations.py):",
              *problems, sep="\n  ", file=sys.stderr)
        return 2
    chosen.sort(key=lambda m: m.compiled)  # the rebuilds last
    scratch = Path(tempfile.mkdtemp(prefix="poster_fast_mutation_"))
    logs = scratch / "mutation-logs"
    logs.mkdir()
    print(f"scratch copy: {scratch}", flush=True)
    try:
        copy_repository(scratch)
        probe = subprocess.run([sys.executable, "-c", "import poster_fast; print(poster_fast.__file__)"],
                               cwd=scratch, env=environment(scratch), capture_output=True, text=True)
        if not probe.stdout.startswith(str(scratch)):
            print(f"mutation-check: the scratch copy's poster_fast is not the one imported ({probe.stdout.strip()}"
                  f"{probe.stderr.strip()})", file=sys.stderr)
            return 2
        if not args.no_baseline:
            selections = sorted({t for m in chosen for t in m.tests if t.startswith("tests/")})
            code, detail = pytest(scratch, selections, logs / "baseline.log")
            print(f"baseline (unmutated, {len(selections)} test files): pytest exit status {code} {detail}",
                  flush=True)
            if code != 0:
                print("mutation-check: the tests fail without any mutation; fix that first", file=sys.stderr)
                return 2
        outcomes = []
        for m in chosen:
            if any(t.startswith("tests/") for t in m.tests):
                outcomes.append(run_one(m, scratch, logs))
            else:
                outcomes.append(Outcome(m, "not run", "no test file left", 0.0))
            o = outcomes[-1]
            print(f"{o.result:8s} {m.name} ({o.seconds:.0f} s): {o.detail}", flush=True)
        text = report(outcomes)
        print("\n" + text)
        if args.report:
            args.report.write_text(text)
        return 0 if all(o.result in ("caught", "SURVIVED", "not run") for o in outcomes) else 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
