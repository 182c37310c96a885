"""The environments `make` builds: the locked one and the newest releases.

``python .ci/releases.py lock``
    Install the newest releases that pyproject.toml allows into a fresh
    ``.venv-lock`` and write their versions to ``constraints.txt``, the
    file ``make test`` and CI install from. Run it on purpose (``make
    lock``), then ``make test``, and commit the new ``constraints.txt``
    with whatever the new releases needed.

``python .ci/releases.py test-latest PYTEST_ARGS...``
    Install the newest releases into ``.venv-latest`` (upgrading what is
    there), print where they differ from ``constraints.txt`` and run pytest
    with ``PYTEST_ARGS``. If the tests fail, the message names the releases
    that are new since the lock: one of them broke the tests.
"""

import platform
import re
import shutil
import subprocess
import sys
import venv
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
EXTRAS = ".[test,docs,examples]"


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def newest(env: Path, fresh: bool) -> dict[str, str]:
    """Install the newest allowed releases into ``env``; their versions."""
    if fresh and env.exists():
        shutil.rmtree(env)
    if not _python(env).exists():
        venv.create(env, with_pip=True)
    pip = [str(_python(env)), "-m", "pip", "install", "--quiet", "--upgrade"]
    subprocess.run([*pip, "pip"], check=True, cwd=ROOT)
    subprocess.run(
        [*pip, "--upgrade-strategy", "eager", "-e", EXTRAS], check=True, cwd=ROOT
    )
    return installed(env)


def installed(env: Path) -> dict[str, str]:
    text = subprocess.run(
        [str(_python(env)), "-m", "pip", "freeze", "--all", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return read_pins(text)


def read_pins(text: str) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def differences(locked: dict[str, str], latest: dict[str, str]) -> list[str]:
    """One line per release that differs between the lock and ``latest``."""
    lines = []
    for name in sorted(set(locked) | set(latest)):
        old, new = locked.get(name), latest.get(name)
        if old != new:
            lines.append(f"  {name}: {old or '(not locked)'} -> {new or '(gone)'}")
    return lines


def lock() -> int:
    pins = newest(ROOT / ".venv-lock", fresh=True)
    header = [
        "# The environment that `make demo`, `make test` and CI install",
        "# (pip install -c constraints.txt). pyproject.toml keeps the ranges a",
        "# user installs with. Refreshed on purpose by `make lock` (the newest",
        "# releases those ranges allow), then checked by `make test`.",
        f"# Written {date.today().isoformat()} with Python "
        f"{platform.python_version()} on {platform.system()} {platform.machine()}.",
    ]
    body = [f"{name}=={version}" for name, version in sorted(pins.items())]
    CONSTRAINTS.write_text("\n".join(header + body) + "\n")
    shutil.rmtree(ROOT / ".venv-lock")
    print(f"wrote {len(body)} pins to {CONSTRAINTS.name}; now run `make test`")
    return 0


def test_latest(pytest_args: list[str]) -> int:
    env = ROOT / ".venv-latest"
    latest = newest(env, fresh=False)
    changed = differences(read_pins(CONSTRAINTS.read_text()), latest)
    if changed:
        print("The newest releases differ from constraints.txt in:")
        print("\n".join(changed), flush=True)
    else:
        print("The newest releases are the ones in constraints.txt.", flush=True)
    code = subprocess.run(
        [str(_python(env)), "-m", "pytest", *pytest_args], cwd=ROOT
    ).returncode
    if code and changed:
        print(
            "\nmake test-latest FAILED with the newest releases, which differ "
            "from constraints.txt (where `make test` passes) in:\n"
            + "\n".join(changed)
            + "\nOne of these releases breaks the tests above: install the "
            "lock's version of each in turn in .venv-latest to find which, fix "
            "the package (or exclude that release in pyproject.toml with a "
            "note of why), then `make lock`.",
            file=sys.stderr,
        )
    elif code:
        print(
            "\nmake test-latest FAILED with the releases of constraints.txt: "
            "`make test` fails too.",
            file=sys.stderr,
        )
    return code


def main(argv: list[str]) -> int:
    if argv[:1] == ["lock"]:
        return lock()
    if argv[:1] == ["test-latest"]:
        return test_latest(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
