"""Build (or reuse) the virtual environment holding the published lomas-client 0.4.1.

The compatibility test runs the client exactly as a researcher would install it from PyPI, in its
own virtual environment, against our server. The environment is built with:

    python -m venv V
    V/bin/python -m pip install torch==2.13.0
    V/bin/python -m pip install -c tests/compat/lomas-client-0.4.1-constraints.txt lomas-client==0.4.1

then one f-string of lomas_client/http_client.py that only Python >= 3.12 parses (nested double
quotes) is rewritten with single inner quotes, and `import lomas_client.client` is checked.

Location: $LOMAS_COMPAT_VENV, or `<repo>/.venv-compat`. A complete environment is reused: a marker
file written last records the build key (constraints-file hash, pins, patch, interpreter version);
anything else found at the location (no marker, other key, failing import) is deleted and rebuilt.

Standalone: `python tests/compat/build_venv.py [--force]`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
CONSTRAINTS = HERE / "lomas-client-0.4.1-constraints.txt"
CLIENT_REQUIREMENT = "lomas-client==0.4.1"
TORCH_REQUIREMENT = "torch==2.13.0"
MARKER_NAME = "lomas-compat-venv.json"
# Bump when the way the environment is built or patched changes, so old environments are rebuilt.
RECIPE_VERSION = 1

# The one line of lomas_client 0.4.1 that Python 3.11 cannot parse, and its rewrite.
PATCH_FILE = Path("lomas_client") / "http_client.py"
PATCH_OLD = """f"User '{self.headers["user-name"]}' is making a request \""""
PATCH_NEW = """f"User '{self.headers['user-name']}' is making a request \""""


class CompatVenvError(RuntimeError):
    """The compat environment could not be built; the message carries the failing command's output."""


def venv_location() -> Path:
    configured = os.environ.get("LOMAS_COMPAT_VENV")
    return Path(configured).expanduser().resolve() if configured else REPO_ROOT / ".venv-compat"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_key() -> dict[str, object]:
    return {
        "recipe_version": RECIPE_VERSION,
        "constraints_sha256": hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest(),
        "client": CLIENT_REQUIREMENT,
        "torch": TORCH_REQUIREMENT,
        "patch": hashlib.sha256((PATCH_OLD + "\0" + PATCH_NEW).encode()).hexdigest(),
        "base_python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def _log(message: str) -> None:
    print(f"[compat-venv] {message}", flush=True)


def _run(command: Sequence[str | Path], *, echo: bool) -> str:
    """Run a command, echo its output live if asked, return it; raise with the full output on failure."""
    text_command = [str(part) for part in command]
    _log("$ " + " ".join(text_command))
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        text_command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if echo:
                print("    " + line, end="", flush=True)
        returncode = process.wait()
    output = "".join(lines)
    if returncode != 0:
        raise CompatVenvError(
            f"command failed with exit code {returncode}: {' '.join(text_command)}\n--- output ---\n{output}"
        )
    _log(f"  done in {time.monotonic() - started:.1f}s")
    return output


def _read_marker(venv: Path) -> dict[str, object] | None:
    try:
        return json.loads((venv / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _client_imports(venv: Path) -> tuple[bool, str]:
    python = venv_python(venv)
    if not python.exists():
        return False, f"{python} does not exist"
    check = (
        "import importlib.metadata as m, lomas_client.client, lomas_core.error_handler; "
        "print(m.version('lomas-client'), m.version('lomas-core'))"
    )
    result = subprocess.run(
        [str(python), "-c", check],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return False, output
    if result.stdout.split() != ["0.4.1", "0.4.1"]:
        return False, f"unexpected versions installed (lomas-client, lomas-core): {result.stdout.strip()}"
    return True, output


def _patch_http_client(venv: Path) -> Path:
    candidates = sorted(venv.glob(f"lib/python*/site-packages/{PATCH_FILE.as_posix()}"))
    if len(candidates) != 1:
        raise CompatVenvError(f"expected exactly one {PATCH_FILE} in {venv}, found {candidates}")
    path = candidates[0]
    source = path.read_text(encoding="utf-8")
    count = source.count(PATCH_OLD)
    if count != 1:
        raise CompatVenvError(
            f"{path}: expected the text {PATCH_OLD!r} exactly once, found it {count} times; "
            "the installed lomas-client is not the expected 0.4.1"
        )
    path.write_text(source.replace(PATCH_OLD, PATCH_NEW), encoding="utf-8")
    # Any byte code compiled at install time is stale now (under 3.11 there is none: it did not parse).
    for cached in (path.parent / "__pycache__").glob("http_client.*.pyc"):
        cached.unlink()
    _log(f"patched the f-string in {path}")
    return path


def _build(venv: Path, *, echo: bool) -> None:
    if venv.exists():
        _log(f"removing incomplete or outdated environment {venv}")
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", venv], echo=echo)
    python = venv_python(venv)
    _run([python, "-m", "pip", "install", TORCH_REQUIREMENT], echo=echo)
    _run([python, "-m", "pip", "install", "-c", CONSTRAINTS, CLIENT_REQUIREMENT], echo=echo)
    _patch_http_client(venv)
    ok, output = _client_imports(venv)
    if not ok:
        raise CompatVenvError(f"`import lomas_client.client` fails in the new environment {venv}:\n{output}")
    freeze = _run([python, "-m", "pip", "freeze"], echo=False)
    (venv / "pip-freeze.txt").write_text(freeze)
    # Written last: its presence means the environment is complete.
    (venv / MARKER_NAME).write_text(json.dumps(build_key(), indent=2) + "\n")


def ensure_compat_venv(venv: Path | None = None, *, force: bool = False, echo: bool = True) -> Path:
    """Return the python executable of a complete lomas-client 0.4.1 environment, building it if needed.

    Raises CompatVenvError (with the pip output) if the environment cannot be built.
    """
    venv = (venv or venv_location()).resolve()
    started = time.monotonic()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives outside the repository (a file beside the venv would show up in `git status`).
    lock_path = (
        Path(tempfile.gettempdir()) / f"lomas-compat-venv-{hashlib.sha256(bytes(venv)).hexdigest()[:16]}.lock"
    )
    with lock_path.open("w") as lock:
        # Several test sessions may ask at once: one builds, the others wait and reuse.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _read_marker(venv) == build_key():
            ok, output = _client_imports(venv)
            if ok:
                _log(f"reusing {venv} (marker matches, lomas_client imports)")
                return venv_python(venv)
            _log(f"{venv} has a marker but the client does not import, rebuilding:\n{output}")
        _log(f"building {venv} with {CLIENT_REQUIREMENT} (constraints {CONSTRAINTS})")
        _build(venv, echo=echo)
    _log(f"environment ready in {time.monotonic() - started:.1f}s: {venv_python(venv)}")
    return venv_python(venv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--venv", type=Path, help="location (default: $LOMAS_COMPAT_VENV or <repo>/.venv-compat)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete environment exists")
    parser.add_argument("--quiet", action="store_true", help="do not echo pip's output")
    args = parser.parse_args(argv)
    try:
        python = ensure_compat_venv(args.venv, force=args.force, echo=not args.quiet)
    except CompatVenvError as error:
        print(error, file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
