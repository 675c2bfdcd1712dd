"""The locks: hashed, URL-free, covering pyproject.toml, and the runtime lock within the dev lock.

``make setup`` installs locks/dev.txt and the image locks/runtime.txt, both with
``uv pip sync --require-hashes`` from whatever index the machine is configured with; no file of
the install may name an index, a host or a file URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RUNTIME, DEV = ROOT / "locks" / "runtime.txt", ROOT / "locks" / "dev.txt"
INSTALL_FILES = [RUNTIME, DEV, ROOT / "Makefile", ROOT / "infra" / "docker" / "Dockerfile",
                 ROOT / "infra" / "docker" / "Dockerfile.dockerignore", ROOT / "pyproject.toml"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# A scheme (https://, file://, git+ssh://) or a well-known package host.
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://|pypi\.org|pythonhosted|download\.pytorch", re.I)


@dataclass
class Pin:
    version: str
    marker: str
    hashes: list[str]
    via: list[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """``name -> Pin`` of a uv requirements lock (one pin per name: the universal resolution
    has a single version of each package here)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not raw.startswith((" ", "#")) and line:
            spec, _, marker = line.rstrip("\\").partition(";")
            name, _, version = spec.strip().partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            current = pins[canonicalize_name(name)] = Pin(version.strip(), marker.strip(), [], [])
        elif current is not None and line.startswith("--hash="):
            current.hashes.append(line.rstrip("\\").strip())
        elif current is not None and line.startswith("#"):
            via = line.lstrip("#").strip().removeprefix("via").strip()
            if via and not via.startswith(("-r", "-c")):
                current.via.append(via)
    return pins


@pytest.mark.parametrize("path", INSTALL_FILES, ids=lambda p: p.name)
def test_no_install_file_names_a_url_or_host(path: Path) -> None:
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if URL.search(line)]
    assert not hits, f"{path.relative_to(ROOT)} names URLs or hosts: {hits[:3]}"


def test_no_uv_project_lock() -> None:
    assert not (ROOT / "uv.lock").exists(), "uv.lock records index URLs: use locks/*.txt"


def test_url_check_can_fail() -> None:
    for line in ("torch==2.13.0 @ https://x/y.whl", "--index-url file:///opt/simple",
                 "--extra-index-url pypi.org/simple"):
        assert URL.search(line), line
    assert not URL.search("aiohttp==3.14.5 \\")


@pytest.mark.parametrize("path", [RUNTIME, DEV], ids=lambda p: p.name)
def test_every_pin_is_hashed(path: Path) -> None:
    pins = read_lock(path)
    assert len(pins) > 100
    unhashed = [name for name, pin in pins.items() if not pin.hashes]
    assert not unhashed, f"{path.name}: pins without --hash: {unhashed}"
    assert all(h.startswith("--hash=sha256:") for pin in pins.values() for h in pin.hashes)


def _satisfied(requirements: list[str], pins: dict[str, Pin], where: str) -> None:
    for text in requirements:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{where}: {req.name} is not locked"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{where}: {req.name}=={pin.version} does not satisfy {req.specifier}")


def test_locks_cover_pyproject() -> None:
    runtime, dev = read_lock(RUNTIME), read_lock(DEV)
    groups = PYPROJECT["dependency-groups"]
    _satisfied(PYPROJECT["project"]["dependencies"] + groups["build"], runtime, "runtime lock")
    _satisfied(PYPROJECT["project"]["dependencies"] + groups["build"] + groups["dev"], dev,
               "dev lock")
    # What the tests run against is what the image runs: same version of every runtime package.
    differ = {n: (p.version, dev[n].version) for n, p in runtime.items()
              if n not in dev or dev[n].version != p.version}
    assert not differ, f"runtime and dev locks disagree: {differ}"
    assert "pytest" not in runtime and "moto" not in runtime


def test_locked_torch_is_a_cuda_build_on_linux() -> None:
    """The image's GPU story: the runtime lock's Linux torch pulls the CUDA 13 runtime wheels."""
    lock = read_lock(RUNTIME)
    assert lock["torch"].version == "2.13.0"
    for name in ("nvidia-cudnn-cu13", "nvidia-nccl-cu13"):
        assert "linux" in lock[name].marker and "torch" in lock[name].via, name


def test_the_makefile_installs_the_lock_with_hashes() -> None:
    text = (ROOT / "Makefile").read_text()
    assert "LOCK := locks/dev.txt" in text
    assert "pip sync --python $(PY) --require-hashes --compile-bytecode $(LOCK)" in text
    assert "--no-deps" in text and "uv sync" not in text
