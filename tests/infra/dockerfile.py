"""The Dockerfile and its .dockerignore, read the way Docker reads them (for what camflow's uses)."""

from __future__ import annotations

import json
import re
import shlex

from tests.infra.common import ROOT, RUNTIME_LOCK


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    ins = dockerfile_instructions(text)
    froms = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    if len(froms) < 2:
        problems.append("expected a multi-stage build (build + runtime)")
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in ins
            if word == "ARG" and "=" in rest}
    base = args.get("PYTHON_IMAGE", "")
    if not base.startswith("python:3.11-slim"):
        problems.append("base image must be python:3.11-slim")
    makefile_uv = re.search(r"UV_VERSION := (\S+)", (ROOT / "Makefile").read_text()).group(1)
    if args.get("UV_VERSION") != makefile_uv or "uv==${UV_VERSION}" not in text:
        problems.append(f"uv must be installed from PyPI at the Makefile's version {makefile_uv}")
    runs = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "RUN"]
    syncs = [(i, rest) for i, rest in runs if "uv pip sync" in rest]
    if not syncs:
        problems.append("no `uv pip sync`")
    for _, rest in syncs:
        if "--require-hashes" not in rest or RUNTIME_LOCK not in rest:
            problems.append(f"`uv pip sync` must install {RUNTIME_LOCK} with --require-hashes: {rest}")
    installs = [rest for _, rest in runs if "uv pip install" in rest]
    if any("--no-deps" not in rest for rest in installs):
        problems.append("the project must be installed with --no-deps (the lock has its dependencies)")
    copies = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "COPY"]
    lock_copy = [i for i, rest in copies if RUNTIME_LOCK in rest]
    if not lock_copy or not syncs or lock_copy[0] > syncs[0][0]:
        problems.append(f"{RUNTIME_LOCK} must be copied before the first `uv pip sync`")
    source_copy = [i for i, rest in copies if re.search(r"\bcamflow\b", rest) and "--from" not in rest]
    if not source_copy or not syncs or source_copy[0] < syncs[0][0]:
        problems.append("the source must be copied after the dependencies are installed")
    final = ins[froms[-1]:] if froms else ins
    if any(word == "RUN" and "g++" in rest for word, rest in final):
        problems.append("g++ must stay in the build stage")
    if not any(word == "RUN" and "g++" in rest for word, rest in ins):
        problems.append("g++ is needed to build pydensecrf2")
    users = [rest for word, rest in final if word == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the runtime stage must run as a non-root user")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    if not entry:
        problems.append("no ENTRYPOINT")
    else:
        try:
            argv = json.loads(entry[-1])
        except ValueError:
            argv = None
        if not isinstance(argv, list) or argv[-1] != "camflow":
            problems.append("ENTRYPOINT must be exec form ending in the camflow console script")
    return problems


def copied_sources(text: str) -> list[str]:
    """Paths the Dockerfile copies from the build context."""
    out = []
    for word, rest in dockerfile_instructions(text):
        if word != "COPY" or "--from" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        out.extend(parts[:-1])
    return out


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Last matching pattern wins (Docker's rule), for the simple patterns used here."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").rstrip("/")
        if p == "**" or path == p or path.startswith(p + "/"):
            allowed = negate
    return allowed

